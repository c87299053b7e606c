"""Helpers shared by the worker tests."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tai_fsm.stores.base import Store
from tai_fsm.worker import Worker

TESTS = Path(__file__).parent

#: Fast settings for tests: short leases, frequent polls.
FAST: dict[str, Any] = {
    "shards": 4,
    "lease_ttl": 2.0,
    "poll_interval": 0.02,
    "timer_scan_interval": 0.5,
    "effect_grace": 0.3,
    "stop_timeout": 5.0,
}


def worker(store: Store, machines: list[Any], **options: Any) -> Worker:
    return Worker(store, machines, own_store=False, **{**FAST, **options})


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 20.0,
                what: str = "condition") -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds}s waiting for {what}")
        await asyncio.sleep(0.02)


def env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    base = {k: v for k, v in os.environ.items() if not k.startswith("TAI_FSM_")}
    return {**base, "PYTHONPATH": path, **extra}


def start_worker_process(
    store_url: str, governor: str, worker_id: str, log: Path, *args: str, **extra_env: str
) -> subprocess.Popen[bytes]:
    """``tai-fsm worker`` in a child process, logging to ``log``."""
    cmd = [sys.executable, "-m", "tai_fsm.cli", "worker", "--store", store_url,
           "--governor", governor, "--machines", "worker_machines", "--id", worker_id,
           "--shards", "4", "--lease-ttl", "1.5", "--poll-interval", "0.02",
           "--timer-scan-interval", "0.5", "--effect-grace", "0.3", "--stop-timeout", "3",
           *args]
    with log.open("ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=out, env=env(**extra_env),
                                cwd=str(TESTS))
