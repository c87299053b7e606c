"""tai-fsm: durable, declarative state machines.

The public API is re-exported here; everything else may move between releases.
"""

from tai_fsm.errors import (
    ConflictResolutionFailed,
    DeadlockDetected,
    DefinitionError,
    IntegrityError,
    InvalidInput,
    LockNotHeld,
    OperationTimeout,
    PostCommitHookFailed,
    SerializationError,
    StaleRead,
    StateNotFound,
    StoreUnavailable,
    TaiFsmError,
    TransactionFailed,
    TransitionNotAllowed,
    VersionConflict,
)
from tai_fsm.records import (
    AppendResult,
    ChangeMetadata,
    CleanupResult,
    DistributedLock,
    Event,
    StateSnapshot,
    StoredState,
    StoreStats,
    VectorClock,
)

__version__ = "0.1.0"

__all__ = [
    "AppendResult",
    "ChangeMetadata",
    "CleanupResult",
    "ConflictResolutionFailed",
    "DeadlockDetected",
    "DefinitionError",
    "DistributedLock",
    "Event",
    "IntegrityError",
    "InvalidInput",
    "LockNotHeld",
    "OperationTimeout",
    "PostCommitHookFailed",
    "SerializationError",
    "StaleRead",
    "StateNotFound",
    "StateSnapshot",
    "StoreStats",
    "StoreUnavailable",
    "StoredState",
    "TaiFsmError",
    "TransactionFailed",
    "TransitionNotAllowed",
    "VectorClock",
    "VersionConflict",
    "__version__",
]
