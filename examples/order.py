"""The order machine of ``machines/order.yaml``, declared as a Python class.

Both forms compile to equal ``MachineSpec``s (tests/test_definition_parity.py checks it);
this class also carries the behaviour: the callbacks the definition names.

Callbacks receive one positional ``event`` (``event.kwargs`` / ``event.payload`` hold the
trigger's payload). Pre-commit callbacks (conditions, on_enter, ...) may read and change
``self.data`` but must not touch the outside world; post-commit hooks (``on_enter_committed``,
``after_commit``) run after the transition is durable and are where side effects belong.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

import tai_fsm.definition as fsm

log = logging.getLogger(__name__)


class Order(fsm.Machine):
    name = "order"
    version = 1
    snapshot_every = 100
    snapshot_retention = 5
    description = "A customer order, from checkout to delivery or cancellation."

    class Data(BaseModel):
        items: int = Field(0, description="number of items in the order")
        paid_at: str | None = Field(None, description="ISO-8601 time the payment was recorded")

    pending = fsm.State(initial=True)
    paid = fsm.State(
        timeout=fsm.Timeout("30m", "expire"),
        on_enter=["stamp_paid_at"],
        on_enter_committed=["send_receipt"],
    )
    shipped = fsm.State(final=True)
    cancelled = fsm.State(final=True)

    pay = pending.to(paid, conditions=["has_items"])
    ship = paid.to(shipped, after_commit=["notify_courier"])
    cancel = fsm.Transition(source=[pending, paid], dest=cancelled)
    expire = paid.to(cancelled)

    # ------------------------------------------------------------------ behaviour
    def has_items(self, event: Any) -> bool:
        """Condition of ``pay``: an empty order cannot be paid."""
        return bool(self.data.items > 0)

    def stamp_paid_at(self, event: Any) -> None:
        """On entering ``paid`` (pre-commit): record when, as part of the same event."""
        self.data.paid_at = datetime.now(UTC).isoformat()

    def send_receipt(self, event: Any) -> None:
        """Post-commit: the payment is durable, tell the customer."""
        log.info("receipt sent for order %s", self.id)

    def notify_courier(self, event: Any) -> None:
        """Post-commit hook of ``ship``."""
        log.info("courier notified for order %s", self.id)
