"""Several ``tai-fsm worker`` processes on one store: commands sent while workers are
killed (SIGKILL) and restarted are each applied exactly once, in order per instance; event
logs stay dense; every instance is written by one lease holder at a time (fencing tokens
along each instance's versions never go back, and each token belongs to one worker).

SQLite: 3 workers, 300 commands over 30 instances (the issue asks 1,000 over 100; scaled
down to keep the suite fast — benchmarks/worker_bench.py runs larger). The Firestore
emulator: 3 workers, 60 commands over 6 instances."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from worker_machines import MACHINES, Ticket
from worker_support import start_worker_process, until

from tai_fsm.records import utc_now
from tai_fsm.runtime import inbox
from tai_fsm.runtime.runtime import Runtime
from tai_fsm.stores.url import open_store
from tai_fsm.worker import shard_of
from tai_fsm.worker.membership import read_workers

GOV = "fleet"


def _stop(proc: subprocess.Popen[bytes], seconds: float = 15.0) -> int:
    proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    code = proc.wait(timeout=seconds)
    assert time.monotonic() - started < seconds
    return code


async def _run_fleet(store_url: str, tmp_path: Path, workers: int, instances: int,
                     per_instance: int) -> None:
    logs = {f"w{i}": tmp_path / f"w{i}.log" for i in range(1, workers + 1)}
    async with Runtime(open_store(store_url), MACHINES, node_id="sender",
                       governor=GOV) as rt:
        ids = [f"t-{n:03d}" for n in range(instances)]
        for instance_id in ids:
            await rt.create(Ticket, instance_id)
        procs = {name: start_worker_process(store_url, GOV, name, log)
                 for name, log in logs.items()}
        sent: list[str] = []
        try:
            async def all_live() -> bool:
                records = await read_workers(rt.store, GOV)
                return len([r for r in records if r.live(utc_now())]) == workers

            await until(all_live, seconds=60, what="the workers to start")
            async def send_round(i: int) -> None:
                for instance_id in ids:
                    receipt = await rt.send(instance_id, "note", {"n": i})
                    sent.append(receipt.command_id)
                await asyncio.sleep(0.15)  # workers keep up with the senders

            rounds = iter(range(per_instance))
            third = max(1, per_instance // 3)
            for i in [next(rounds) for _ in range(third)]:
                await send_round(i)
            await asyncio.sleep(0.3)
            procs["w1"].kill()  # mid-run: it holds leases and has work in flight
            assert procs["w1"].wait(timeout=10) == -signal.SIGKILL
            for i in [next(rounds) for _ in range(third)]:
                await send_round(i)
            assert _stop(procs["w2"]) == 0  # a graceful restart of another worker
            procs["w2"] = start_worker_process(store_url, GOV, "w2", logs["w2"])
            for i in rounds:
                await send_round(i)
            procs["w1"] = start_worker_process(store_url, GOV, "w1", logs["w1"])

            async def w1_back() -> bool:
                records = await read_workers(rt.store, GOV)
                return any(r.worker_id == "w1" and r.pid == procs["w1"].pid for r in records)

            await until(w1_back, seconds=60, what="w1 to restart")

            async def rebalanced() -> bool:  # the restarted workers got shards again
                records = [r for r in await read_workers(rt.store, GOV) if r.live(utc_now())]
                return len(records) == workers and all(r.owned for r in records)

            await until(rebalanced, seconds=60, what="the shards to be spread again")

            async def drained() -> bool:
                return not [c async for c in rt.store.list_records(GOV, kind=inbox.INBOX)]

            await until(drained, seconds=90, what="every command to be applied")
        finally:
            codes = {name: _stop(p) for name, p in procs.items() if p.poll() is None}
        assert all(code == 0 for code in codes.values()), codes

        assert len(sent) == len(set(sent)) == instances * per_instance
        applied: list[str] = []
        owner_of_token: dict[tuple[int, int], str] = {}
        for instance_id in ids:
            instance = await rt.get(instance_id)
            assert instance.data["log"] == list(range(per_instance)), instance_id
            events = [e async for e in rt.history(instance_id)]
            assert [e.version for e in events] == list(range(1, per_instance + 2))
            assert (await rt.verify(instance_id)).ok
            tokens = [e.metadata.context["fencing_token"] for e in events[1:]]
            assert tokens == sorted(tokens), (instance_id, tokens)
            shard = shard_of(instance_id, 4)
            for event in events[1:]:
                applied.append(event.metadata.context["command_id"])
                node = event.metadata.context["node"]
                token = event.metadata.context["fencing_token"]
                assert owner_of_token.setdefault((shard, token), node) == node
        assert sorted(applied) == sorted(sent)  # every command once, none twice
        for command_id in sent[:: max(1, len(sent) // 20)]:
            assert (await rt.command(command_id)).status == "applied"
    text = {name: log.read_text() for name, log in logs.items()}
    assert "event=stopped" in text["w2"] and "event=shards_taken" in text["w3"]
    assert sum(t.count("event=applied") for t in text.values()) == len(sent)


def test_three_sqlite_workers_killed_and_restarted(tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path / 'fleet.db'}"
    asyncio.run(_run_fleet(store_url, tmp_path, workers=3, instances=30, per_instance=10))


@pytest.mark.firestore
def test_three_firestore_workers_killed_and_restarted(
    tmp_path: Path, firestore_emulator: str
) -> None:
    assert os.environ.get("FIRESTORE_EMULATOR_HOST") == firestore_emulator
    store_url = f"firestore://tai-fsm-test?prefix=w{uuid.uuid4().hex[:10]}"
    asyncio.run(_run_fleet(store_url, tmp_path, workers=3, instances=6, per_instance=10))
