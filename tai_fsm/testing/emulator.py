"""Google's Cloud Firestore emulator, started and stopped by us (DESIGN.md §9).

* :class:`FirestoreEmulator` — a context manager that runs the emulator jar with ``java``
  directly on a free ``127.0.0.1`` port (so the process id is ours), waits until the port
  answers, and stops that exact process (terminate, then kill) on exit.
* :func:`firestore_emulator` — a pytest session fixture: reuses ``FIRESTORE_EMULATOR_HOST``
  when it is already set, else starts an emulator, exports ``FIRESTORE_EMULATOR_HOST`` for the
  session and stops it at the end. A missing jar FAILS the session loudly; it never skips.
* ``python -m tai_fsm.testing.emulator`` runs one in the foreground and prints
  ``FIRESTORE_EMULATOR_HOST=host:port`` (Ctrl-C stops it).

The jar comes from ``$TAI_FSM_FIRESTORE_JAR`` or from the Debian package
``google-cloud-cli-firestore-emulator``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import pytest

from tai_fsm.errors import EmulatorError

__all__ = [
    "EMULATOR_PACKAGE",
    "EmulatorError",
    "FirestoreEmulator",
    "find_emulator_jar",
    "firestore_emulator",
    "free_port",
]

EMULATOR_PACKAGE = "google-cloud-cli-firestore-emulator"
JAR_ENV = "TAI_FSM_FIRESTORE_JAR"
HOST_ENV = "FIRESTORE_EMULATOR_HOST"
_MAIN_CLASS = "com.google.cloud.datastore.emulator.firestore.CloudFirestore"
_JAR_NAME = "cloud-firestore-emulator.jar"


def find_emulator_jar() -> Path:
    """The emulator jar: ``$TAI_FSM_FIRESTORE_JAR`` if set, else the file installed by the
    Debian package. Raises :class:`EmulatorError` naming the package when it is missing."""
    configured = os.environ.get(JAR_ENV)
    if configured:
        path = Path(configured)
        if not path.is_file():
            raise EmulatorError(f"{JAR_ENV}={configured} does not name an existing file")
        return path
    listing = ""
    if shutil.which("dpkg"):
        done = subprocess.run(
            ["dpkg", "-L", EMULATOR_PACKAGE], capture_output=True, text=True, check=False
        )
        listing = done.stdout if done.returncode == 0 else ""
    for line in listing.splitlines():
        if line.endswith(_JAR_NAME) and Path(line).is_file():
            return Path(line)
    raise EmulatorError(
        f"Google's Firestore emulator jar ({_JAR_NAME}) is missing: install the Debian package "
        f"{EMULATOR_PACKAGE} (apt-get install {EMULATOR_PACKAGE}) or set {JAR_ENV}. "
        "Firestore tests never skip silently."
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class FirestoreEmulator:
    """One emulator process on ``127.0.0.1:port`` (a free port when ``port`` is None).

    ``start()`` returns once the port accepts connections (or raises :class:`EmulatorError`
    with the tail of the emulator's log after ``timeout`` seconds); ``stop()`` ends exactly
    the process it started and is idempotent. ``host`` is the ``FIRESTORE_EMULATOR_HOST``
    value; with ``export=True`` the emulator sets that variable while it runs and restores
    the previous value when stopped. The emulator keeps data in memory only: a new process
    starts empty.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        jar: Path | str | None = None,
        timeout: float = 60.0,
        log_path: Path | str | None = None,
        export: bool = False,
    ) -> None:
        self.bind = "127.0.0.1"
        self.port = port or free_port(self.bind)
        self.jar = Path(jar) if jar is not None else None
        self.timeout = timeout
        self.log_path = Path(log_path) if log_path is not None else None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.export = export
        self._saved_env: str | None = None

    @property
    def host(self) -> str:
        """``host:port``, the value for ``FIRESTORE_EMULATOR_HOST``."""
        return f"{self.bind}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The emulator's process id while it runs."""
        return self._process.pid if self._process is not None else None

    def start(self) -> str:
        """Start the emulator and wait until it answers; returns :attr:`host`."""
        if self._process is not None:
            return self.host
        jar = self.jar or find_emulator_jar()
        java = shutil.which("java")
        if java is None:
            raise EmulatorError("java is not on PATH: the Firestore emulator needs a JRE")
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix="firestore-emulator-", suffix=".log")
            os.close(handle)
            self.log_path = Path(name)
        log = self.log_path.open("wb")
        self._log = log
        command = [
            java,
            "-cp",
            str(jar),
            _MAIN_CLASS,
            "start",
            f"--host={self.bind}",
            f"--port={self.port}",
        ]
        self._process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self.stop()
                raise EmulatorError(
                    f"the Firestore emulator exited with code {code} before answering on "
                    f"{self.host}; log {self.log_path}:\n{self.log_tail()}"
                )
            if _port_answers(self.bind, self.port):
                if self.export:
                    self._saved_env = os.environ.get(HOST_ENV)
                    os.environ[HOST_ENV] = self.host
                return self.host
            time.sleep(0.1)
        self.stop()
        raise EmulatorError(
            f"the Firestore emulator did not answer on {self.host} within {self.timeout:.0f}s; "
            f"log {self.log_path}:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the emulator's log."""
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 10.0) -> None:
        """Stop the process we started: SIGTERM, then SIGKILL after ``grace`` seconds."""
        process, self._process = self._process, None
        if process is not None and self.export and os.environ.get(HOST_ENV) == self.host:
            if self._saved_env is None:
                del os.environ[HOST_ENV]
            else:
                os.environ[HOST_ENV] = self._saved_env
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=grace)
        log, self._log = self._log, None
        if log is not None:
            with contextlib.suppress(OSError):
                log.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@pytest.fixture(scope="session")
def firestore_emulator() -> Iterator[str]:
    """The ``FIRESTORE_EMULATOR_HOST`` of a running emulator for the whole session.

    Uses the one named by ``FIRESTORE_EMULATOR_HOST`` when set; otherwise starts one, exports
    the variable, and stops the process (by pid) at session end. Fails — never skips — when
    the jar is missing or the emulator does not come up."""
    existing = os.environ.get(HOST_ENV)
    if existing:
        yield existing
        return
    emulator = FirestoreEmulator()
    try:
        host = emulator.start()
    except EmulatorError as exc:
        pytest.fail(str(exc), pytrace=False)
    os.environ[HOST_ENV] = host
    try:
        yield host
    finally:
        if os.environ.get(HOST_ENV) == host:
            del os.environ[HOST_ENV]
        emulator.stop()


def main(argv: list[str] | None = None) -> int:
    """Run an emulator in the foreground until Ctrl-C / SIGTERM."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m tai_fsm.testing.emulator",
        description="Run Google's Firestore emulator on 127.0.0.1 in the foreground.",
    )
    parser.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    args = parser.parse_args(argv)
    emulator = FirestoreEmulator(port=args.port)
    try:
        emulator.start()
    except EmulatorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    def _stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    print(f"{HOST_ENV}={emulator.host}", flush=True)
    print(f"# pid {emulator.pid}, log {emulator.log_path}; Ctrl-C to stop", flush=True)
    try:
        while emulator._process is not None and emulator._process.poll() is None:
            time.sleep(0.5)
        print(f"error: the emulator exited; log tail:\n{emulator.log_tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        emulator.stop()


if __name__ == "__main__":
    sys.exit(main())
