"""Registering Python functions as activities, and what an attempt sees (its context)."""
import threading
from dataclasses import dataclass
from typing import Callable

# The failure type of a cancelled attempt, as the Rust SDK reports it.
CANCELLED_TYPE = "Cancelled"
DEFAULT_ERROR_TYPE = "Error"
EFFECT_NAMES = ("read", "idempotent", "write")


class ActivityError(Exception):
    """A typed failure: `type` is matched against the retry policy's non-retryable types;
    `non_retryable=True` fails the activity at once, whatever the policy."""

    def __init__(self, message, type=DEFAULT_ERROR_TYPE, non_retryable=False):
        super().__init__(message)
        self.message = str(message)
        self.type = type or DEFAULT_ERROR_TYPE
        self.non_retryable = bool(non_retryable)


class NonRetryableError(ActivityError):
    def __init__(self, message, type=DEFAULT_ERROR_TYPE):
        super().__init__(message, type=type, non_retryable=True)


class Cancelled(Exception):
    """Raise it when ctx.is_cancelled() says the attempt should stop."""


@dataclass
class Registered:
    name: str
    effect: str
    fn: Callable


_REGISTRY = {}


def activity(name, effect="write"):
    """Registers `fn(ctx, input)` as activity `name`. `effect` is how it affects the world:
    "read" and "idempotent" attempts lost with their worker are retried (same idempotency
    key); a lost "write" waits for reconciliation. Unsaid, it is "write" (the safe default)."""
    if effect not in EFFECT_NAMES:
        raise ValueError(f"effect must be one of {', '.join(EFFECT_NAMES)}, not {str(effect)[:32]!r}")
    if not isinstance(name, str) or not name:
        raise ValueError("an activity needs a non-empty name")

    def register(fn):
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(f"activity {name[:64]!r} is registered twice")
        _REGISTRY[name] = Registered(name, effect, fn)
        fn.steadfast_activity = name
        return fn

    return register


def registered():
    return dict(_REGISTRY)


class ActivityContext:
    """What one attempt knows: who it is (`run_id`, `activity_id`, `attempt`, ...), its
    `idempotency_key` (stable across attempts: pass it to the system you write to), the
    details the previous attempt last recorded (`last_heartbeat_details`), the W3C
    `traceparent` of the activity's span (None unless the server exports traces with
    --otlp-endpoint: start the code's own spans as its children), and whether it should stop
    (`is_cancelled()`)."""

    def __init__(self, task, last_heartbeat_details=None):
        self.namespace = task.namespace
        self.run_id = task.run_id
        self.workflow_id = task.workflow_id
        self.workflow_type = task.workflow_type
        self.activity_id = task.activity_id
        self.activity_type = task.activity_type
        self.attempt = task.attempt
        self.idempotency_key = task.idempotency_key
        self.deadline_ms = task.deadline_ms
        self.traceparent = task.traceparent or None
        self.last_heartbeat_details = last_heartbeat_details
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._details = None
        # Set by the worker: sends one heartbeat with record=true, synchronously.
        self._record = None

    def heartbeat(self, details=None):
        """Sends `details` (JSON-serialisable) with the next heartbeat; returns whether the
        attempt is cancelled. Heartbeats go out every interval whether or not this is called."""
        if details is not None:
            with self._lock:
                self._details = (details,)
        return self._cancelled.is_set()

    def record_heartbeat(self, details):
        """Sends `details` now and returns once the server has recorded them durably: a retry
        of this activity (after this worker dies, say) finds them in its
        `last_heartbeat_details`. For what a retry must pick up, e.g. the id of a job started
        elsewhere; the server honours a few such records per attempt, then samples them.
        Raises ActivityError when the server did not record them."""
        if self._record is None:
            raise ActivityError("record_heartbeat needs a running worker", type="steadfast.NoWorker")
        return self._record(details)

    def is_cancelled(self):
        return self._cancelled.is_set()

    def wait_cancelled(self, timeout=None):
        """Blocks until the attempt is cancelled or `timeout` seconds pass; True if cancelled."""
        return self._cancelled.wait(timeout)

    def _take_details(self):
        with self._lock:
            d, self._details = self._details, None
            return d
