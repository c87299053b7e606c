"""Stores: the ``Store`` contract and its backends (memory, sqlite, firestore).

``open_store(url)`` picks the backend from a URL (``memory://``, ``sqlite:///path.db``,
``firestore://PROJECT[/DATABASE][?prefix=P]``); backends are imported only when used.
"""

from tai_fsm.stores.base import Store
from tai_fsm.stores.url import open_store, parse_store_url

__all__ = ["Store", "open_store", "parse_store_url"]
