"""Google API errors -> the tai-fsm error tree, for :mod:`tai_fsm.stores.firestore`.

* ABORTED, UNAVAILABLE, RESOURCE_EXHAUSTED, INTERNAL, UNKNOWN, CANCELLED, transport and
  token-refresh failures -> ``StoreUnavailable`` (transient: back off and retry);
* DEADLINE_EXCEEDED and an exhausted client retry -> ``OperationTimeout`` (transient);
* INVALID_ARGUMENT / OUT_OF_RANGE -> ``InvalidInput`` (nothing was written);
* PERMISSION_DENIED, UNAUTHENTICATED, a missing index, missing credentials and other
  requests retrying cannot fix -> :class:`FirestoreRequestFailed` (permanent).

ALREADY_EXISTS / FAILED_PRECONDITION / NOT_FOUND on a preconditioned write mean a concurrency
conflict or a missing record; the store handles those where it knows which record they are
about (``VersionConflict``, ``StateNotFound``) before falling back to this mapping.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc

from tai_fsm.errors import (
    FirestoreRequestFailed,
    InvalidInput,
    OperationTimeout,
    StoreUnavailable,
    TaiFsmError,
)

__all__ = ["CONFLICT_ERRORS", "FirestoreRequestFailed", "call", "translate"]

T = TypeVar("T")

#: What a failed write precondition raises: the document exists (create), its update time
#: differs (update/delete with ``last_update_time``), or it is missing (update / exists=True).
CONFLICT_ERRORS: tuple[type[Exception], ...] = (
    gexc.AlreadyExists,
    gexc.FailedPrecondition,
    gexc.NotFound,
)

_TRANSIENT: tuple[type[Exception], ...] = (
    gexc.Aborted,
    gexc.ServiceUnavailable,
    gexc.ResourceExhausted,
    gexc.InternalServerError,
    gexc.Unknown,
    gexc.Cancelled,
    gexc.BadGateway,
)


def _code(exc: BaseException) -> str:
    grpc_status = getattr(exc, "grpc_status_code", None)
    name = getattr(grpc_status, "name", None)
    return str(name) if name else type(exc).__name__


def translate(exc: BaseException, what: str) -> BaseException:
    """The tai-fsm error for a Google client error raised while doing ``what``; any other
    exception is returned unchanged."""
    if isinstance(exc, TaiFsmError):
        return exc
    if isinstance(exc, gexc.DeadlineExceeded | gexc.GatewayTimeout):
        return OperationTimeout(f"Firestore {what}: deadline exceeded ({exc.message})")
    if isinstance(exc, gexc.RetryError):
        return OperationTimeout(f"Firestore {what}: gave up retrying ({exc.message})")
    if isinstance(exc, _TRANSIENT):
        assert isinstance(exc, gexc.GoogleAPICallError)
        return StoreUnavailable(f"Firestore {what}: {_code(exc)} ({exc.message}); retry later")
    if isinstance(exc, gexc.InvalidArgument | gexc.OutOfRange):
        return InvalidInput(f"Firestore rejected {what} as invalid: {exc.message}")
    if isinstance(exc, gexc.PermissionDenied | gexc.Unauthenticated):
        return FirestoreRequestFailed(
            f"Firestore {what}: {_code(exc)} ({exc.message}); the caller needs the IAM role "
            "roles/datastore.user on the project and valid application default credentials",
            code=_code(exc),
        )
    if isinstance(exc, gexc.GoogleAPICallError):
        return FirestoreRequestFailed(
            f"Firestore {what} failed: {_code(exc)} ({exc.message})", code=_code(exc)
        )
    if isinstance(exc, auth_exc.DefaultCredentialsError):
        return FirestoreRequestFailed(
            f"no Google credentials for Firestore ({exc}); run `gcloud auth "
            "application-default login`, use a service account, or set "
            "FIRESTORE_EMULATOR_HOST for the emulator"
        )
    if isinstance(exc, auth_exc.TransportError | auth_exc.RefreshError):
        return StoreUnavailable(f"Firestore {what}: credentials could not be refreshed ({exc})")
    if isinstance(exc, gexc.GoogleAPIError):
        return StoreUnavailable(f"Firestore {what}: {exc}")
    return exc


async def call(awaitable: Awaitable[T], what: str) -> T:
    """Await ``awaitable``, re-raising Google client errors as tai-fsm errors."""
    try:
        return await awaitable
    except (gexc.GoogleAPIError, auth_exc.GoogleAuthError) as exc:
        raise translate(exc, what) from exc
