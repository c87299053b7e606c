"""The store contract suite (tai_fsm.testing.contract) against every built-in backend."""

from tai_fsm.testing.contract import *  # noqa: F403
