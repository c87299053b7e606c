"""Behaviour for the machines shipped in ``tai_fsm/demo_machines/`` — the "YAML gives the
structure, a subclass gives the behaviour" pattern (DESIGN.md §2). ``tai-fsm demo`` uses these,
and ``--machines tai_fsm.demo_classes`` lets the CLI drive them.

Pre-commit callbacks only read and change ``self.data``; post-commit hooks (the only place
for side effects) just log here.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tai_fsm.definition.loader import load_machine
from tai_fsm.definition.machine import Machine

__all__ = ["DEMO_DATA", "DEMO_MACHINES", "BatchJob", "Deployment", "Order"]

log = logging.getLogger("tai_fsm.demo")
MACHINES_DIR = Path(__file__).parent / "demo_machines"


def _pseudo_random(instance: Machine, salt: int) -> float:
    """A repeatable number in [0, 1) from the instance id and version (conditions must be
    deterministic so a re-evaluation after a conflict sees the same world)."""
    return (hash((instance.id, instance.version, salt)) % 10_000) / 10_000


class Order(load_machine(MACHINES_DIR / "order.yaml")):  # type: ignore[misc]
    def has_items(self, event: Any) -> bool:
        return int(self.data.get("items", 0)) > 0

    def stamp_paid_at(self, event: Any) -> None:
        self.data["paid_at"] = datetime.now(UTC).isoformat()

    def send_receipt(self, event: Any) -> None:
        log.info("receipt sent for order %s", self.id)

    def notify_courier(self, event: Any) -> None:
        log.info("courier notified for order %s", self.id)


class BatchJob(load_machine(MACHINES_DIR / "batch_job.yaml")):  # type: ignore[misc]
    def count_attempt(self, event: Any) -> None:
        self.data["attempts"] = int(self.data.get("attempts", 0)) + 1

    def record_progress(self, event: Any) -> None:
        done = float(event.payload.get("progress", self.data.get("progress", 0.0) + 0.25))
        self.data["progress"] = min(1.0, done)

    def can_retry(self, event: Any) -> bool:
        return int(self.data.get("attempts", 0)) < int(self.data.get("max_attempts", 3))

    def record_error(self, event: Any) -> None:
        self.data["last_error"] = str(event.payload.get("error", "worker reported failure"))

    def reset_attempts(self, event: Any) -> None:
        self.data["attempts"] = 0

    def page_operator(self, event: Any) -> None:
        log.info("job %s dead-lettered: %s", self.id, self.data.get("last_error"))

    def publish_result(self, event: Any) -> None:
        log.info("job %s succeeded after %s attempt(s)", self.id, self.data.get("attempts"))


class Deployment(load_machine(MACHINES_DIR / "deployment.yaml")):  # type: ignore[misc]
    # Only declared fields (deployment.yaml's data:): an undeclared one fails the trigger.
    def record_phase_end(self, event: Any) -> None:
        self.data["error_rate"] = 0.0

    def route_canary_traffic(self, event: Any) -> None:
        self.data["canary_percent"] = max(1, min(100, int(self.data.get("canary_percent", 5))))

    def route_all_traffic(self, event: Any) -> None:
        self.data["canary_percent"] = 100

    def count_rollback(self, event: Any) -> None:
        self.data["rollbacks"] = int(self.data.get("rollbacks", 0)) + 1

    def canary_healthy(self, event: Any) -> bool:
        return float(self.data.get("error_rate", 0.0)) < 0.05

    def record_error_rate(self, event: Any) -> None:
        rate = event.payload.get("rate", round(_pseudo_random(self, 1) * 0.08, 4))
        self.data["error_rate"] = float(rate)

    def error_budget_exceeded(self, event: Any) -> bool:
        return float(self.data.get("error_rate", 0.0)) >= 0.05

    def announce_release(self, event: Any) -> None:
        log.info("release %s is live (%s)", self.data.get("release"), self.id)

    def restore_previous_release(self, event: Any) -> None:
        log.info("rolling back %s (%s)", self.data.get("release"), self.id)


DEMO_MACHINES: list[type[Machine]] = [Order, BatchJob, Deployment]

#: Initial data the demo gives new instances of each machine.
DEMO_DATA: dict[str, dict[str, Any]] = {
    "order": {"items": 2},
    "batch_job": {"max_attempts": 3},
    "deployment": {"release": "v2.7.0"},
}
