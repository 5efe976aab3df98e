"""The worker: polls activity tasks of the declared types, runs each attempt in a thread with
heartbeats and cancellation, reports its outcome, and keeps a worker session open so that the
server gives back a dead worker's tasks quickly (as the Rust SDK's worker does).
"""
import json
import logging
import os
import random
import threading
import time
import uuid

import grpc

from . import _stubs
from .activity import (
    CANCELLED_TYPE,
    ActivityContext,
    ActivityError,
    Cancelled,
    registered,
)

log = logging.getLogger("steadfast_worker")

common_pb2, service_pb2, service_pb2_grpc = _stubs.load()

EFFECTS = {
    "read": common_pb2.EFFECT_READ,
    "idempotent": common_pb2.EFFECT_IDEMPOTENT,
    "write": common_pb2.EFFECT_WRITE,
}

# Codes that mean "the server is restarting or unreachable": try again.
TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.UNKNOWN,
}
# Codes that no retry fixes: the worker's configuration is wrong.
FATAL = {
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.INVALID_ARGUMENT,
}

JSON = "json/plain"
POLL_SLACK_S = 5.0
BACKOFF_MAX_S = 5.0


class WorkerError(Exception):
    """The worker cannot go on (bad configuration, refused credentials)."""


class _Backoff:
    def __init__(self):
        self.delay = 0.1

    def next(self):
        d = self.delay * (0.5 + random.random() / 2)
        self.delay = min(self.delay * 2, BACKOFF_MAX_S)
        return d

    def reset(self):
        self.delay = 0.1


def _channel(addr, tls_ca=None, tls_cert=None, tls_key=None, tls_domain=None):
    """An insecure channel for http://, a TLS one for https:// (TLS files imply https)."""
    wants_tls = bool(tls_ca or tls_cert or tls_key or tls_domain)
    if addr.startswith("https://"):
        target, secure = addr[len("https://"):], True
    elif addr.startswith("http://"):
        if wants_tls:
            raise WorkerError("TLS files are configured: use an https:// address")
        target, secure = addr[len("http://"):], False
    else:
        target, secure = addr, wants_tls
    target = target.rstrip("/")
    options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
    if not secure:
        return grpc.insecure_channel(target, options=options)
    if bool(tls_cert) != bool(tls_key):
        raise WorkerError("mutual TLS needs both --tls-cert and --tls-key")

    def read(p):
        with open(p, "rb") as f:
            return f.read()

    creds = grpc.ssl_channel_credentials(
        root_certificates=read(tls_ca) if tls_ca else None,
        private_key=read(tls_key) if tls_key else None,
        certificate_chain=read(tls_cert) if tls_cert else None,
    )
    if tls_domain:
        options.append(("grpc.ssl_target_name_override", tls_domain))
    return grpc.secure_channel(target, creds, options=options)


def encode(value):
    return common_pb2.Payload(encoding=JSON, data=json.dumps(value).encode())


def decode(payload):
    """JSON payloads as Python values; anything else as its bytes; none as None."""
    if payload is None or not payload.data:
        return None
    if payload.encoding in ("", JSON):
        return json.loads(payload.data)
    return bytes(payload.data)


class Worker:
    """Runs the registered activities (or `activities`, names → registrations) from one task
    queue. `token` and the TLS files default to STEADFAST_TOKEN and STEADFAST_TLS_*."""

    def __init__(
        self,
        addr=None,
        task_queue="default",
        namespace=None,
        activities=None,
        token=None,
        tls_ca=None,
        tls_cert=None,
        tls_key=None,
        tls_domain=None,
        worker_id=None,
        max_concurrent=8,
        heartbeat_interval=0.5,
        cancel_grace=5.0,
        poll_timeout=20.0,
        report_timeout=60.0,
    ):
        env = os.environ.get
        self.addr = addr or env("STEADFAST_ADDR", "http://127.0.0.1:7233")
        self.namespace = namespace or env("STEADFAST_NAMESPACE", "default")
        self.task_queue = task_queue
        self.activities = dict(activities if activities is not None else registered())
        if not self.activities:
            raise WorkerError("no activities registered: decorate functions with @activity(name, effect=...)")
        token = token if token is not None else env("STEADFAST_TOKEN")
        self._metadata = [("authorization", f"Bearer {token}")] if token else []
        self._channel = _channel(
            self.addr,
            tls_ca or env("STEADFAST_TLS_CA"),
            tls_cert or env("STEADFAST_TLS_CERT"),
            tls_key or env("STEADFAST_TLS_KEY"),
            tls_domain or env("STEADFAST_TLS_DOMAIN"),
        )
        self._stub = service_pb2_grpc.WorkerServiceStub(self._channel)
        # Unique per process: the server gives back this worker's tasks when no session of
        # this id remains.
        self.worker_id = worker_id or f"py-{uuid.uuid4()}"
        self.max_concurrent = max_concurrent
        self.heartbeat_interval = heartbeat_interval
        self.cancel_grace = cancel_grace
        self.poll_timeout = poll_timeout
        self.report_timeout = report_timeout
        self._slots = threading.Semaphore(max_concurrent)
        self._stop = threading.Event()
        self._session_call = None

    # ------------------------------------------------------------------ lifecycle

    def run(self):
        """Polls until stop() (or a fatal error, raised as WorkerError)."""
        session = threading.Thread(target=self._keep_session, name="steadfast-session", daemon=True)
        session.start()
        log.info(
            "python worker %s polling %r for %d activity types",
            self.worker_id, self.task_queue, len(self.activities),
        )
        try:
            self._poll_loop()
        finally:
            self._stop.set()
            call = self._session_call
            if call is not None:
                call.cancel()

    def stop(self):
        self._stop.set()

    # ------------------------------------------------------------------ session

    def _keep_session(self):
        backoff = _Backoff()
        req = service_pb2.WorkerSessionRequest(
            namespace=self.namespace, worker_id=self.worker_id, task_queues=[self.task_queue]
        )
        while not self._stop.is_set():
            try:
                call = self._stub.WorkerSession(req, metadata=self._metadata)
                self._session_call = call
                for _ev in call:
                    backoff.reset()
                log.debug("worker session ended; opening it again")
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.UNIMPLEMENTED:
                    log.warning("the server has no worker sessions; a dead worker's tasks wait for their timeouts")
                    return
                if e.code() == grpc.StatusCode.CANCELLED and self._stop.is_set():
                    return
                log.debug("worker session not opened (%s); trying again", e.code())
            self._stop.wait(backoff.next())

    # ------------------------------------------------------------------ polling

    def _declarations(self):
        return [
            service_pb2.ActivityDeclaration(activity_type=name, effect=EFFECTS[reg.effect])
            for name, reg in sorted(self.activities.items())
        ]

    def _poll_loop(self):
        backoff = _Backoff()
        decls = self._declarations()
        while not self._stop.is_set():
            if not self._slots.acquire(timeout=0.5):
                continue
            req = service_pb2.PollActivityTaskRequest(
                namespace=self.namespace,
                task_queue=self.task_queue,
                worker_id=self.worker_id,
                activity_types=sorted(self.activities),
                poll_timeout_ms=int(self.poll_timeout * 1000),
                activities=decls,
            )
            try:
                task = self._stub.PollActivityTask(
                    req, timeout=self.poll_timeout + POLL_SLACK_S, metadata=self._metadata
                )
            except grpc.RpcError as e:
                self._slots.release()
                if e.code() in FATAL:
                    raise WorkerError(f"PollActivityTask refused ({e.code().name}): {e.details()}") from e
                log.debug("poll failed (%s); trying again", e.code())
                self._stop.wait(backoff.next())
                continue
            backoff.reset()
            if not task.task_token:
                self._slots.release()
                continue
            t = threading.Thread(target=self._attempt, args=(task,), name=f"steadfast-{task.activity_type}", daemon=True)
            t.start()

    # ------------------------------------------------------------------ one attempt

    def _attempt(self, task):
        try:
            ctx = ActivityContext(task, decode(task.last_heartbeat_details) if task.HasField("last_heartbeat_details") else None)
            log.debug(
                "activity attempt starts: run %s id %d type %s attempt %d input %d B",
                task.run_id, task.activity_id, task.activity_type, task.attempt, len(task.input.data),
            )
            ctx._record = lambda details: self._record_heartbeat(ctx, task.task_token, details)
            reg = self.activities.get(task.activity_type)
            if reg is None:
                outcome = ActivityError(
                    f"activity type {task.activity_type!r} is not registered on worker {self.worker_id}",
                    type="steadfast.UnknownActivityType",
                )
            else:
                outcome = self._supervise(reg, ctx, task)
            self._report(task.task_token, outcome)
        finally:
            self._slots.release()

    def _supervise(self, reg, ctx, task):
        box = {}

        def call():
            try:
                box["ok"] = reg.fn(ctx, decode(task.input))
            except BaseException as e:  # noqa: BLE001 - every failure is reported
                box["err"] = e

        runner = threading.Thread(target=call, name=f"steadfast-run-{task.activity_type}", daemon=True)
        runner.start()
        give_up_at = None
        while True:
            runner.join(self.heartbeat_interval)
            if not runner.is_alive():
                break
            if self._heartbeat(ctx, task.task_token) and give_up_at is None:
                log.debug("activity cancellation requested")
                ctx._cancelled.set()
                give_up_at = time.monotonic() + self.cancel_grace
            if give_up_at is not None and time.monotonic() >= give_up_at:
                log.warning("cancelled activity did not stop within %.1fs; abandoned", self.cancel_grace)
                return Cancelled()
        if "err" in box:
            return box["err"]
        return box.get("ok")

    def _heartbeat(self, ctx, token):
        """Sends one heartbeat (with the details set since the last one); True = stop."""
        details = ctx._take_details()
        req = service_pb2.HeartbeatActivityTaskRequest(namespace=self.namespace, task_token=token)
        if details is not None:
            req.details.CopyFrom(encode(details[0]))
        try:
            resp = self._stub.HeartbeatActivityTask(
                req, timeout=self.heartbeat_interval * 4, metadata=self._metadata
            )
            return resp.cancel_requested
        except grpc.RpcError as e:
            if e.code() in TRANSIENT:
                return False
            if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                log.warning("heartbeat refused; its details are dropped: %s", e.details())
                return False
            log.debug("heartbeat refused (%s); stopping the attempt", e.code())
            return True

    def _record_heartbeat(self, ctx, token, details):
        req = service_pb2.HeartbeatActivityTaskRequest(
            namespace=self.namespace, task_token=token, details=encode(details), record=True
        )
        try:
            resp = self._stub.HeartbeatActivityTask(req, timeout=30, metadata=self._metadata)
        except grpc.RpcError as e:
            raise ActivityError(
                f"heartbeat details not recorded ({e.code().name}): {e.details()}", type="steadfast.NotRecorded"
            ) from e
        if resp.cancel_requested:
            ctx._cancelled.set()
        return resp.cancel_requested

    def _failure(self, err):
        if isinstance(err, Cancelled):
            return common_pb2.Failure(message="activity cancelled", type=CANCELLED_TYPE, non_retryable=True)
        if isinstance(err, ActivityError):
            return common_pb2.Failure(message=err.message, type=err.type, non_retryable=err.non_retryable)
        return common_pb2.Failure(message=f"{type(err).__name__}: {err}", type=type(err).__name__)

    def _report(self, token, outcome):
        give_up_at = time.monotonic() + self.report_timeout
        backoff = _Backoff()
        failed = isinstance(outcome, BaseException)
        if not failed:
            try:
                result = encode(outcome)
            except (TypeError, ValueError) as e:
                outcome, failed = ActivityError(
                    f"the activity's result is not JSON-serialisable: {e}", type="steadfast.BadResult", non_retryable=True
                ), True
        while True:
            try:
                if failed:
                    self._stub.FailActivityTask(
                        service_pb2.FailActivityTaskRequest(
                            namespace=self.namespace, task_token=token,
                            failure=self._failure(outcome), worker_id=self.worker_id,
                        ),
                        timeout=30, metadata=self._metadata,
                    )
                    log.debug("activity failed: %s", self._failure(outcome).type)
                else:
                    self._stub.CompleteActivityTask(
                        service_pb2.CompleteActivityTaskRequest(
                            namespace=self.namespace, task_token=token, result=result, worker_id=self.worker_id,
                        ),
                        timeout=30, metadata=self._metadata,
                    )
                    log.debug("activity completed: %d B", len(result.data))
                return
            except grpc.RpcError as e:
                if e.code() in TRANSIENT and time.monotonic() < give_up_at:
                    time.sleep(backoff.next())
                    continue
                log.warning("activity outcome not recorded (%s): %s", e.code(), e.details())
                return
