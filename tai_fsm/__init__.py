"""tai-fsm: durable, declarative state machines.

The public API is re-exported here; everything else may move between releases.
"""

from tai_fsm.definition import (
    Machine,
    MachineSpec,
    State,
    Timeout,
    Transition,
    after,
    after_commit,
    before,
    load_machine,
    load_machines,
    on_enter,
    on_enter_committed,
    on_exit,
)
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
from tai_fsm.runtime.history import VerifyReport
from tai_fsm.runtime.persister import (
    ConsistencyReport,
    PersistenceConfig,
    StateMachinePersister,
)
from tai_fsm.runtime.runtime import InstanceExists, RecoveryReport, Runtime
from tai_fsm.stores.base import Store
from tai_fsm.stores.url import open_store

__version__ = "0.1.0"

__all__ = [
    "AppendResult",
    "ChangeMetadata",
    "CleanupResult",
    "ConflictResolutionFailed",
    "ConsistencyReport",
    "DeadlockDetected",
    "DefinitionError",
    "DistributedLock",
    "Event",
    "InstanceExists",
    "IntegrityError",
    "InvalidInput",
    "LockNotHeld",
    "Machine",
    "MachineSpec",
    "OperationTimeout",
    "PersistenceConfig",
    "PostCommitHookFailed",
    "RecoveryReport",
    "Runtime",
    "SerializationError",
    "StaleRead",
    "State",
    "StateMachinePersister",
    "StateNotFound",
    "StateSnapshot",
    "Store",
    "StoreStats",
    "StoreUnavailable",
    "StoredState",
    "TaiFsmError",
    "Timeout",
    "TransactionFailed",
    "Transition",
    "TransitionNotAllowed",
    "VectorClock",
    "VerifyReport",
    "VersionConflict",
    "__version__",
    "after",
    "after_commit",
    "before",
    "load_machine",
    "load_machines",
    "on_enter",
    "on_enter_committed",
    "on_exit",
    "open_store",
]
