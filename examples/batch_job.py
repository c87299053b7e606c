"""The batch job of ``machines/batch_job.yaml`` as a Python class: bounded retries with
back-off, an internal ``progress`` transition, and a dead-letter state an operator can
``requeue`` or ``discard``. Compiles to the same ``MachineSpec`` as the YAML file.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, Field

import tai_fsm.definition as fsm

log = logging.getLogger(__name__)


class BatchJob(fsm.Machine):
    name = "batch_job"
    version = 1
    snapshot_every = 50
    snapshot_retention = 3
    description = (
        "One unit of background work, retried with back-off until it succeeds or dead-letters."
    )

    class Data(BaseModel):
        attempts: int = Field(0, description="runs started so far")
        max_attempts: int = 3
        last_error: str = ""
        progress: float = Field(0.0, description="fraction done, 0.0 to 1.0")

    queued = fsm.State(initial=True)
    running = fsm.State(timeout=fsm.Timeout("1h", "fail"), on_enter=["count_attempt"])
    retrying = fsm.State(timeout=fsm.Timeout("30s", "retry"))
    dead_letter = fsm.State(tags=["needs-operator"], on_enter_committed=["page_operator"])
    succeeded = fsm.State(final=True, on_enter_committed=["publish_result"])
    discarded = fsm.State(final=True)
    cancelled = fsm.State(final=True)

    start = queued.to(running)
    progress = running.to(None, before=["record_progress"])  # internal: state unchanged
    succeed = running.to(succeeded)
    fail = running.to(
        retrying,
        conditions=["can_retry"],
        before=["record_error"],
        description="the first matching transition wins; this one while attempts remain",
    ) | running.to(dead_letter, before=["record_error"])
    retry = retrying.to(running)
    requeue = dead_letter.to(queued, after=["reset_attempts"])
    discard = dead_letter.to(discarded)
    cancel = fsm.Transition(source=[queued, retrying], dest=cancelled)

    # ------------------------------------------------------------------ behaviour
    def count_attempt(self, event: Any) -> None:
        """On entering ``running``: one more attempt."""
        self.data.attempts += 1

    def can_retry(self, event: Any) -> bool:
        """Condition of the first ``fail``: attempts remain."""
        return bool(self.data.attempts < self.data.max_attempts)

    def record_error(self, event: Any) -> None:
        """Before ``fail``: keep the reason (``send ID fail --data '{"error": "..."}'``);
        a durable timeout fires ``fail`` without one."""
        payload = getattr(event, "kwargs", None) or getattr(event, "payload", None) or {}
        self.data.last_error = str(payload.get("error", "timed out"))

    def record_progress(self, event: Any) -> None:
        """Internal ``progress``: store the reported fraction, clamped to [0, 1]."""
        payload = getattr(event, "kwargs", None) or getattr(event, "payload", None) or {}
        self.data.progress = min(1.0, max(0.0, float(payload.get("progress", 0.0))))

    def reset_attempts(self, event: Any) -> None:
        """After ``requeue``: the operator grants a fresh set of attempts."""
        self.data.attempts = 0
        self.data.last_error = ""

    def page_operator(self, event: Any) -> None:
        """Post-commit: the job is durably dead-lettered; alert a human."""
        log.warning("job %s dead-lettered: %s", self.id, self.data.last_error)

    def publish_result(self, event: Any) -> None:
        """Post-commit: announce success to downstream consumers."""
        log.info("job %s succeeded after %d attempt(s)", self.id, self.data.attempts)
