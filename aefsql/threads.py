"""The process's worker thread pools, created on first use."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

_pools: dict[str, ThreadPoolExecutor] = {}
_lock = threading.Lock()


def _forget_pools() -> None:
    """In a forked child (a DataLoader worker, say) the parent's threads do not exist: work
    handed to its pools would never run. The child makes pools of its own."""
    global _lock
    _pools.clear()
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_pools)


def pool(name: str) -> ThreadPoolExecutor:
    """The pool called `name`, one thread per core, shared by every connection."""
    with _lock:
        if name not in _pools:
            _pools[name] = ThreadPoolExecutor(
                max_workers=os.cpu_count() or 2, thread_name_prefix=f"aefsql-{name}"
            )
        return _pools[name]
