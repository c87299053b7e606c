"""The deployment of ``machines/deployment.yaml`` as a Python class, with nested states:
``deploying`` holds ``canary`` then ``full``; a health check decides promotion and any
failure rolls back. Compiles to the same ``MachineSpec`` as the YAML file.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, Field

import tai_fsm.definition as fsm

log = logging.getLogger(__name__)

#: Promotion and completion require an error rate below this fraction.
ERROR_BUDGET = 0.01


class Deployment(fsm.Machine):
    name = "deployment"
    version = 1
    description = "Rolling a release out to production, canary first."

    class Data(BaseModel):
        release: str = Field(description="the release being deployed")
        canary_percent: int = 5
        error_rate: float = 0.0
        rollbacks: int = 0

    pending = fsm.State(initial=True)
    building = fsm.State(timeout=fsm.Timeout("20m", "build_failed"))
    deploying = fsm.State(
        on_exit=["record_phase_end"],
        children={
            "canary": fsm.State(
                initial=True,
                timeout=fsm.Timeout("15m", "promote"),
                on_enter=["route_canary_traffic"],
            ),
            "full": fsm.State(on_enter=["route_all_traffic"]),
        },
    )
    live = fsm.State(tags=["customer-visible"], on_enter_committed=["announce_release"])
    rolling_back = fsm.State(
        on_enter=["count_rollback"], on_enter_committed=["restore_previous_release"]
    )
    rolled_back = fsm.State(final=True)
    failed = fsm.State(final=True)
    superseded = fsm.State(final=True)

    build = pending.to(building)
    build_ok = building.to(deploying)
    build_failed = building.to(failed)
    promote = deploying["canary"].to(deploying["full"], conditions=["canary_healthy"]) | deploying[
        "canary"
    ].to(rolling_back)
    report_errors = deploying.to(None, before=["record_error_rate"])
    complete = deploying["full"].to(live, unless=["error_budget_exceeded"])
    abort = deploying.to(rolling_back)
    rollback = live.to(rolling_back)
    rollback_done = rolling_back.to(rolled_back)
    supersede = live.to(superseded)

    # ------------------------------------------------------------------ behaviour
    def canary_healthy(self, event: Any) -> bool:
        """Condition of ``promote``: the canary stayed within the error budget."""
        return bool(self.data.error_rate < ERROR_BUDGET)

    def error_budget_exceeded(self, event: Any) -> bool:
        """``unless`` of ``complete``: too many errors during the full roll-out."""
        return bool(self.data.error_rate >= ERROR_BUDGET)

    def record_error_rate(self, event: Any) -> None:
        """Internal ``report_errors``: store the observed error rate."""
        payload = getattr(event, "kwargs", None) or getattr(event, "payload", None) or {}
        self.data.error_rate = float(payload.get("error_rate", 0.0))

    def route_canary_traffic(self, event: Any) -> None:
        """Entering ``deploying.canary``: record the canary share (routing is post-commit
        infrastructure work in a real system; here the share is data)."""
        self.data.canary_percent = max(1, min(100, self.data.canary_percent))

    def route_all_traffic(self, event: Any) -> None:
        """Entering ``deploying.full``: all traffic goes to the new release."""
        self.data.canary_percent = 100

    def record_phase_end(self, event: Any) -> None:
        """Leaving ``deploying`` (either way): reset the observed error rate."""
        self.data.error_rate = 0.0

    def count_rollback(self, event: Any) -> None:
        """Entering ``rolling_back``."""
        self.data.rollbacks += 1

    def restore_previous_release(self, event: Any) -> None:
        """Post-commit: start restoring the previous release."""
        log.warning("deployment %s of %s: rolling back", self.id, self.data.release)

    def announce_release(self, event: Any) -> None:
        """Post-commit: the release is durably live."""
        log.info("release %s is live", self.data.release)
