"""The Python tools tests/tests/python_worker.rs runs (python -m steadfast_worker --module
tests/python/tools.py). Every attempt first appends one JSON line to the file named by
STEADFAST_TEST_KEYS (flushed and synced, so it survives a SIGKILL of the worker):
{"type", "run", "id", "attempt", "key", "traceparent", "pid"}.
"""
import json
import os
import time

from steadfast_worker import Cancelled, NonRetryableError, activity

GATE_POLL_S = 0.02


def record(ctx, **extra):
    line = {
        "type": ctx.activity_type, "run": ctx.run_id, "id": ctx.activity_id,
        "attempt": ctx.attempt, "key": ctx.idempotency_key, "traceparent": ctx.traceparent,
        "pid": os.getpid(), **extra,
    }
    fd = os.open(os.environ["STEADFAST_TEST_KEYS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def wait_gate(ctx, gate, details=None):
    """Blocks (heartbeating `details`) until the file `gate` exists; raises Cancelled if
    cancelled."""
    while not os.path.exists(gate):
        ctx.heartbeat(details or {"waiting": True})
        if ctx.wait_cancelled(GATE_POLL_S):
            record(ctx, cancelled=True)
            raise Cancelled()


@activity("lookup_order", effect="read")
def lookup_order(ctx, args):
    record(ctx)
    return {"order": args["order"], "status": "shipped", "by": "python"}


@activity("charge_card", effect="write")
def charge_card(ctx, args):
    record(ctx)
    if args.get("gate"):
        wait_gate(ctx, args["gate"])
    return {"charged": args.get("amount", 0)}


@activity("sync_crm", effect="idempotent")
def sync_crm(ctx, args):
    record(ctx)
    if ctx.attempt == 1 and args.get("gate"):
        wait_gate(ctx, args["gate"])
    return {"synced": ctx.idempotency_key, "attempt": ctx.attempt}


@activity("find_customer", effect="read")
def find_customer(ctx, args):
    record(ctx)
    raise NonRetryableError(f"no customer {args.get('email', '')[:32]}", type="CustomerNotFound")


@activity("generate", effect="idempotent")
def generate(ctx, args):
    """Stands in for a generation run as a job elsewhere: attempt 1 starts a job, records its
    id durably and waits (killed there); a retry re-attaches to the recorded job."""
    prior = ctx.last_heartbeat_details
    if prior and prior.get("job"):
        record(ctx, reattached=prior["job"])
        return {"job": prior["job"], "reattached": True}
    job = f"job-{ctx.run_id[-8:]}-{ctx.attempt}"
    ctx.record_heartbeat({"job": job})
    record(ctx, created=job)
    if args.get("gate"):
        # Later details replace the recorded ones as "last": keep the job id in them.
        wait_gate(ctx, args["gate"], {"job": job})
    return {"job": job, "reattached": False}
