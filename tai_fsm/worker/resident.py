"""The instances a worker keeps in memory: at most ``max_resident``, least recently used
evicted first. An evicted instance is simply loaded again (``Runtime.get``: the state
record, one read) the next time it is needed; an instance that is busy is never evicted."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Container

from tai_fsm.definition.machine import Machine
from tai_fsm.runtime.runtime import Runtime

__all__ = ["Resident"]


class Resident:
    """An LRU of live instances of one governor."""

    def __init__(self, runtime: Runtime, governor: str, max_resident: int) -> None:
        self.runtime = runtime
        self.governor = governor
        self.max_resident = max_resident
        self._lru: OrderedDict[str, Machine] = OrderedDict()
        self.loads = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._lru)

    async def get(self, instance_id: str, busy: Container[str] = ()) -> Machine:
        """The live instance ``instance_id`` (loaded when not resident)."""
        instance = self._lru.get(instance_id)
        if instance is not None:
            self._lru.move_to_end(instance_id)
            return instance
        instance = await self.runtime.get(instance_id, governor=self.governor)
        self.loads += 1
        self._lru[instance_id] = instance
        self.trim(busy)
        return instance

    def trim(self, busy: Container[str] = ()) -> None:
        """Evict least recently used instances, none of ``busy``, down to the bound (a busy
        one counts as just used)."""
        skipped = 0
        while len(self._lru) > self.max_resident and skipped < len(self._lru):
            oldest = next(iter(self._lru))
            if oldest in busy:
                self._lru.move_to_end(oldest)
                skipped += 1
                continue
            del self._lru[oldest]
            self.evictions += 1

    def drop(self, instance_id: str) -> None:
        """Forget ``instance_id`` (it is reloaded next time)."""
        self._lru.pop(instance_id, None)

    def drop_where(self, predicate: Callable[[str], bool]) -> int:
        """Forget every instance whose id ``predicate`` accepts; returns how many."""
        doomed = [i for i in self._lru if predicate(i)]
        for instance_id in doomed:
            del self._lru[instance_id]
        return len(doomed)
