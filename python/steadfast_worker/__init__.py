"""Steadfast tool workers in Python: `@activity("lookup_order", effect="read")` registers a
function as an activity; `Worker(addr, task_queue).run()` (or `python -m steadfast_worker`)
runs them with heartbeats, cancellation and the idempotency key."""
from .activity import ActivityContext, ActivityError, Cancelled, NonRetryableError, activity, registered
from .worker import Worker, WorkerError

__all__ = [
    "ActivityContext",
    "ActivityError",
    "Cancelled",
    "NonRetryableError",
    "Worker",
    "WorkerError",
    "activity",
    "registered",
]
