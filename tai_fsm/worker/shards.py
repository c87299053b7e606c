"""Instances to shards, shards to workers.

* **Instance -> shard**: ``crc32(instance id, UTF-8) mod N`` (:func:`shard_of`) — stable
  across processes, Python versions and restarts. ``N`` (``--shards``, default 16) must be
  the same for every worker of a governor: a worker refuses to start while live workers use
  another ``N`` (:mod:`tai_fsm.worker.membership`).
* **Shard -> worker**: every worker computes the same assignment from the same sorted list
  of live workers (:func:`assign`): each worker gets ``N // W`` or ``N // W + 1`` shards
  (fair), and each shard prefers the workers in rendezvous-hash order (so a worker joining
  or leaving moves few shards). The assignment is only a wish: a shard is worked on by the
  holder of its lease (:func:`lease_resource`), which the wished-for worker takes once the
  previous holder released it or its lease expired.
"""

from __future__ import annotations

import hashlib
import zlib

__all__ = ["DEFAULT_SHARDS", "MAX_SHARDS", "assign", "lease_resource", "shard_of"]

DEFAULT_SHARDS = 16
MAX_SHARDS = 4096


def shard_of(instance_id: str, shards: int) -> int:
    """The shard of ``instance_id`` among ``shards``."""
    return zlib.crc32(instance_id.encode("utf-8", "surrogatepass")) % shards


def lease_resource(shard: int) -> str:
    """The lock resource (kind ``locks``) whose lease owns ``shard``."""
    return f"worker-shard-{shard}"


def _score(worker: str, shard: int) -> int:
    digest = hashlib.blake2b(f"{worker}\x00{shard}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def assign(workers: list[str], shards: int) -> dict[str, set[int]]:
    """Worker -> the shards it should hold (see the module docstring). Deterministic: the
    same live workers give the same assignment in every process."""
    ordered = sorted(set(workers))
    if not ordered:
        return {}
    base, extra = divmod(shards, len(ordered))
    capacity = {w: base + (1 if i < extra else 0) for i, w in enumerate(ordered)}
    result: dict[str, set[int]] = {w: set() for w in ordered}
    for shard in range(shards):
        for worker in sorted(ordered, key=lambda w: _score(w, shard), reverse=True):
            if len(result[worker]) < capacity[worker]:
                result[worker].add(shard)
                break
    return result
