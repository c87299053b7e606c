"""Bringing the copies of one record to agreement across several stores (read-repair and
``sync`` of records of any kind; streams: :mod:`tai_fsm.consistency.reconcile`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tai_fsm.consistency.divergence import merged_clock
from tai_fsm.consistency.eventual import EventualConsistency
from tai_fsm.consistency.reconcile import Member
from tai_fsm.errors import InvalidInput, TaiFsmError
from tai_fsm.records import StateSnapshot, StoredState
from tai_fsm.stores.base import Store
from tai_fsm.stores.ops import Put

__all__ = ["MAX_RECORD_STEPS", "RecordRepair", "reconcile_records"]

#: A record is brought to the agreed version one write at a time (a record's version grows
#: by exactly 1 per write); a copy further behind than this is reported, not repaired.
MAX_RECORD_STEPS = 256


@dataclass(frozen=True, slots=True)
class RecordRepair:
    """A record of ``kind`` rewritten on ``store`` from ``from_version`` (0: absent) to the
    agreed ``to_version``."""

    kind: str
    record_id: str
    store: str
    from_version: int
    to_version: int


def _same(a: StateSnapshot, b: StateSnapshot) -> bool:
    """Equal but for the version number (a record's version is its key, not its content)."""
    return a.model_copy(update={"version": 0}) == b.model_copy(update={"version": 0})


async def reconcile_records(
    members: Sequence[Member],
    copies: Sequence[dict[str, StoredState]],
    governor: str,
    kind: str,
    record_ids: Sequence[str],
    consistency: EventualConsistency,
) -> tuple[dict[str, StoredState], list[RecordRepair], list[tuple[str, TaiFsmError]]]:
    """Agree on each record of ``record_ids`` given what every member holds (``copies[i]``
    is member ``i``'s batch read). Returns the agreed records (absent ids left out), the
    repairs made and the records that could not be repaired.

    The agreed content is the resolver's pick among the copies (``resolve_all``: the same
    whatever the order) that no other copy's clock has seen past, its clock merged with
    every copy's so it descends all of them.
    The agreed version is the highest present if every copy at that version already holds
    that content, else one more; each member is brought to it by writes of the agreed
    content. A record present on some members and absent on others is copied: without
    tombstones an absence cannot be told from a missed write, and a write is never dropped."""
    agreed: dict[str, StoredState] = {}
    repairs: list[RecordRepair] = []
    failures: list[tuple[str, TaiFsmError]] = []
    for record_id in record_ids:
        held = [c.get(record_id) for c in copies]
        present = [h for h in held if h is not None]
        if not present:
            continue
        first = present[0]
        if len(present) == len(held) and all(
            h.version == first.version and h.snapshot == first.snapshot for h in present
        ):
            agreed[record_id] = first
            continue
        candidates = _undominated([h.snapshot for h in present])
        winner = consistency.resolve_all(candidates)
        clock = merged_clock([h.snapshot for h in present])
        target = winner if clock == winner.causality else winner.model_copy(
            update={"causality": clock}
        )
        top = max(h.version for h in present)
        at_top = [h for h in present if h.version == top]
        version = top if all(_same(h.snapshot, target) for h in at_top) else top + 1
        target = target.model_copy(update={"version": version})
        agreed[record_id] = StoredState(snapshot=target, version=version)
        for member, copy in zip(members, held, strict=True):
            current = 0 if copy is None else copy.version
            if current == version and copy is not None and _same(copy.snapshot, target):
                continue
            try:
                await _bring_record(member.store, governor, kind, record_id, current, target)
            except TaiFsmError as exc:
                failures.append((record_id, exc))
                continue
            repairs.append(RecordRepair(kind, record_id, member.name, current, version))
    return agreed, repairs, failures


def _undominated(snapshots: list[StateSnapshot]) -> list[StateSnapshot]:
    """The copies no other copy's vector clock has seen past: a copy whose clock happened
    before another's is merely stale, not in conflict, so the resolver never sees it (with
    last-write-wins, a skewed wall clock could otherwise make it win). Copies without a
    clock are all kept: their order is unknown."""
    return [
        s for s in snapshots
        if not s.causality.clocks or not any(
            o.causality.clocks and s.causality.happened_before(o.causality) for o in snapshots
        )
    ]


async def _bring_record(
    store: Store, governor: str, kind: str, record_id: str, current: int, target: StateSnapshot
) -> None:
    steps = target.version - current
    if steps > MAX_RECORD_STEPS or steps < 1:
        raise InvalidInput(
            f"{kind} record {record_id!r} is at version {current} on this store and should be "
            f"at {target.version}: that takes {steps} writes (at most {MAX_RECORD_STEPS} are "
            "made); rewrite it by hand",
            field="record_id",
        )
    for version in range(current, target.version):
        await store.commit(governor, [Put(record_id, target, version, None, kind)])
