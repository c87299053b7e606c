"""Summaries of event runs, shared by the Store contract and the seed API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime

from tai_fsm.errors import InvalidInput
from tai_fsm.records import Event, StateSnapshot, ensure_utc

__all__ = ["EventSpan", "replay_events", "span_of"]


@dataclass(frozen=True, slots=True)
class EventSpan:
    """A run of one stream's events, summarised for replay: how many there are, their first
    and last version, and the newest one decoded (``None`` when the run is empty)."""

    count: int
    first_version: int
    last_version: int
    last: Event | None

    @property
    def dense(self) -> bool:
        """True when no version is missing between the first and the last."""
        return self.count == 0 or self.last_version - self.first_version + 1 == self.count


def replay_events(events: Iterable[Event], until: datetime | None = None) -> StateSnapshot:
    """The state after ``events`` (ordered by version within a stream), ignoring events
    later than ``until``. Raises ``InvalidInput`` when no event qualifies."""
    cutoff = ensure_utc(until, "until") if until is not None else None
    last: Event | None = None
    for event in sorted(events, key=lambda e: (e.stream_id, e.version, e.timestamp)):
        if cutoff is not None and event.timestamp > cutoff:
            continue
        if last is None or (event.version, event.timestamp) >= (last.version, last.timestamp):
            last = event
    if last is None:
        raise InvalidInput("replay_events needs at least one event at or before 'until'")
    return last.to_state.model_copy(update={"version": last.version or last.to_state.version})


async def span_of(
    events: AsyncIterator[Event], *, stop_after: datetime | None = None
) -> EventSpan:
    """Summarise ``events`` (one stream, version order) as an ``EventSpan``; with
    ``stop_after``, stop at the first event later than that time."""
    count = first = last_version = 0
    last: Event | None = None
    async for event in events:
        if stop_after is not None and event.timestamp > stop_after:
            break
        count += 1
        first = first or event.version
        last_version = event.version
        last = event
    return EventSpan(count, first, last_version, last)
