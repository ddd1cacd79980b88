"""Which DuckDB sources let a Python UDF run on several threads (issue 24's last lever).

aef_pixels, aef_similarity and aef_change run their UDFs in one DuckDB pipeline whose source
is a list of units or chunks unnested from a UDF's result. This probe counts the threads a
scalar Arrow UDF is called from (`SET threads = 2`), over 10^6 rows from each kind of source
a table macro could use, the UDF sleeping 2 ms a call (so that calls could overlap):

    python benchmarks/probe_duckdb_threads.py

Measured 2026-12-07 (DuckDB 2.0.1): range(), unnest of a list, a MATERIALIZED CTE and
generate_series: one thread; only a stored table of several row groups: two. A macro cannot
create a table, so the macros' pipelines stay on one thread: what the DuckDB side costs
(unnest, Arrow conversion, the result) is serial beside aefsql's own decode threads.
"""

from __future__ import annotations

import threading
import time

import duckdb

ROWS = 1_000_000


def main() -> None:
    con = duckdb.connect()
    con.execute("SET threads = 2")
    calls: dict[int, int] = {}

    def slow(values):
        ident = threading.get_ident()
        calls[ident] = calls.get(ident, 0) + 1
        time.sleep(0.002)
        return values

    con.create_function("slow", slow, ["BIGINT"], "BIGINT", type="arrow")
    con.execute(f"CREATE TEMP TABLE stored AS SELECT range AS i FROM range({ROWS})")
    sources = {
        "range()": f"SELECT sum(slow(range)) FROM range({ROWS})",
        "unnest of a list": f"SELECT sum(slow(i)) FROM (SELECT unnest(range(0, {ROWS})) AS i)",
        "MATERIALIZED CTE": (
            f"WITH c AS MATERIALIZED (SELECT unnest(range(0, {ROWS})) AS i) "
            "SELECT sum(slow(i)) FROM c"
        ),
        "generate_series": (
            f"SELECT sum(slow(i)) FROM (SELECT unnest(generate_series(0, {ROWS - 1})) AS i)"
        ),
        "stored table": "SELECT sum(slow(i)) FROM stored",
    }
    for name, query in sources.items():
        calls.clear()
        start = time.perf_counter()
        con.sql(query).fetchall()
        print(
            f"{name:18s} {time.perf_counter() - start:5.2f} s  threads {len(calls)}  "
            f"calls {sum(calls.values())}"
        )


if __name__ == "__main__":
    main()
