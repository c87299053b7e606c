"""``open_store(url)``: one string names a store.

Supported forms::

    memory://                                  a fresh in-process MemoryStore
    sqlite:///relative/path.db                 a file relative to the current directory
    sqlite:////absolute/path.db                an absolute path (note the fourth slash)
    sqlite:///tai_fsm.db?synchronous=NORMAL    options: synchronous=NORMAL|FULL|EXTRA,
                                               busy_timeout=SECONDS
    firestore://PROJECT[/DATABASE][?prefix=P]  Google Cloud Firestore (DATABASE defaults to
                                               "(default)"; prefix isolates collections)

Anything else raises ``InvalidInput`` listing these forms. Backends are imported lazily, so
using SQLite never imports the Firestore client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from tai_fsm.errors import InvalidInput
from tai_fsm.stores.base import Store

__all__ = ["SUPPORTED_FORMS", "StoreURL", "open_store", "parse_store_url"]

SUPPORTED_FORMS = (
    "memory://",
    "sqlite:///relative/path.db",
    "sqlite:////absolute/path.db",
    "sqlite:///path.db?synchronous=NORMAL|FULL|EXTRA&busy_timeout=SECONDS",
    "firestore://PROJECT[/DATABASE][?prefix=P]",
)

_SQLITE_OPTIONS = ("synchronous", "busy_timeout")
_SYNCHRONOUS = ("NORMAL", "FULL", "EXTRA")
_FIRESTORE_OPTIONS = ("prefix",)


@dataclass(frozen=True)
class StoreURL:
    """A parsed store URL: the backend name and the keyword arguments of its constructor
    (``path`` for sqlite; ``project``, ``database``, ``prefix`` for firestore)."""

    backend: str
    options: dict[str, Any] = field(default_factory=dict)


def _invalid(url: object, why: str) -> InvalidInput:
    forms = "\n  ".join(SUPPORTED_FORMS)
    return InvalidInput(
        f"cannot open store {url!r}: {why}. Supported forms:\n  {forms}", field="url", value=url
    )


def _query(url: str, query: str, allowed: tuple[str, ...]) -> dict[str, str]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise _invalid(url, f"malformed query string {query!r}") from None
    options: dict[str, str] = {}
    for name, value in pairs:
        if name not in allowed:
            raise _invalid(url, f"unknown option {name!r} (allowed: {', '.join(allowed)})")
        if name in options:
            raise _invalid(url, f"option {name!r} given twice")
        options[name] = value
    return options


def parse_store_url(url: str) -> StoreURL:
    """Parse ``url`` without opening anything; ``InvalidInput`` for anything unsupported."""
    if not isinstance(url, str) or not url.strip():
        raise _invalid(url, "the URL is empty or not a string")
    if any(ch.isspace() for ch in url):
        raise _invalid(url, "the URL contains whitespace")
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise _invalid(url, "missing '://' after the scheme")
    scheme = scheme.lower()
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise _invalid(url, str(exc)) from None
    if parts.fragment:
        raise _invalid(url, "a '#fragment' is not allowed")
    if scheme == "memory":
        if parts.netloc or parts.path or parts.query:
            raise _invalid(url, "memory:// takes no path or options")
        return StoreURL("memory")
    if scheme == "sqlite":
        if parts.netloc:
            raise _invalid(
                url,
                f"sqlite URLs have no host (got {parts.netloc!r}); use three slashes for a "
                "relative path, four for an absolute one",
            )
        path = unquote(parts.path[1:]) if parts.path.startswith("/") else ""
        if not path or path.endswith("/"):
            raise _invalid(url, "the sqlite URL names no database file")
        options: dict[str, Any] = {"path": path}
        for name, value in _query(url, parts.query, _SQLITE_OPTIONS).items():
            if name == "busy_timeout":
                try:
                    seconds = float(value)
                except ValueError:
                    seconds = -1.0
                if not seconds >= 0:  # also refuses nan
                    raise _invalid(url, f"busy_timeout must be seconds >= 0, got {value!r}")
                options[name] = seconds
            elif value.upper() in _SYNCHRONOUS:
                options[name] = value.upper()
            else:
                raise _invalid(
                    url, f"synchronous must be one of {', '.join(_SYNCHRONOUS)}, got {value!r}"
                )
        return StoreURL("sqlite", options)
    if scheme == "firestore":
        project = unquote(parts.netloc)
        if not project or "@" in project or ":" in project:
            raise _invalid(url, "firestore URLs need a project id after '//'")
        database = unquote(parts.path.strip("/")) or "(default)"
        if "/" in database:
            raise _invalid(url, f"database {database!r} must be a single path segment")
        prefix = _query(url, parts.query, _FIRESTORE_OPTIONS).get("prefix", "")
        return StoreURL("firestore", {"project": project, "database": database, "prefix": prefix})
    raise _invalid(url, f"unknown scheme {scheme!r}")


def open_store(url: str, *, create: bool = True, read_only: bool = False) -> Store:
    """Open the store ``url`` names (see the module docstring for the forms). SQLite files
    are opened (and their schema created) at once; Firestore connects lazily.

    ``create=False`` (what read-only commands use): a SQLite file that does not exist or is
    empty raises ``StoreFailure`` ("no store at PATH") and nothing is created.
    ``read_only=True``: open for reading only (a SQLite file on a read-only medium works)."""
    parsed = parse_store_url(url)
    if parsed.backend == "memory":
        from tai_fsm.stores.memory import MemoryStore

        return MemoryStore()
    if parsed.backend == "sqlite":
        from tai_fsm.stores.sqlite import SQLiteStore

        return SQLiteStore(**parsed.options, create=create, read_only=read_only)
    # Firestore: imported only when asked for (google-cloud-firestore is heavy).
    from tai_fsm.stores.firestore import FirestoreStore

    options = parsed.options
    return FirestoreStore(
        project=options["project"], database=options["database"], prefix=options["prefix"]
    )
