"""The demo collection `aefsql demo` writes (written here if absent), and a process's peak
resident memory: what the memory benchmarks over the demo collection share."""

from __future__ import annotations

import resource
import time
from pathlib import Path

from aefsql.cli import default_demo_dir
from aefsql.demo import write_demo_collection


def demo_index() -> Path:
    """The demo collection's index.parquet, written first if absent."""
    index = default_demo_dir() / "index.parquet"
    if not index.exists():
        write_demo_collection(default_demo_dir())
    return index


def peak_mib() -> float:
    """This process's peak resident set size so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measured(con, sql: str) -> tuple[tuple, float, float, float]:
    """The one row of `sql`, its seconds, and the peak RSS (MiB) before and after it."""
    before = peak_mib()
    start = time.perf_counter()
    (row,) = con.sql(sql).fetchall()
    return row, time.perf_counter() - start, before, peak_mib()
