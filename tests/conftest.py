"""Shared fixtures. The store fixtures and the Firestore emulator live in the package
(``tai_fsm.testing``) so third-party stores can reuse them."""

pytest_plugins = ["tai_fsm.testing.pytest_plugin"]
