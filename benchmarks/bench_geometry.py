"""geometry := 'point' | 'pixel' (issue 25): what a `geom` column costs when asked for, and
that a query without it costs what it did before the parameter existed.

One 1024² × 64-band area of bench_areas.py's collection (tile 0 at row 700, column 900),
`COPY … TO` Parquet, and `count(x), sum(A63)` (the read alone), each in a fresh process with
the tree given (`--trees before,after`: PYTHONPATH of each), the trees taking turns run by
run; the geometry queries run only where the tree has the parameter. Best of `--runs`.

    python benchmarks/bench_geometry.py --trees /work/main,/work/wt/geom [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_areas import EPSG, YEAR, area_box, write_collection

BLOCK = 1024
QUERIES = {
    "count(x), sum(A63)": "SELECT count(x), sum(A63) FROM {area}",
    "COPY (FROM …) TO Parquet": "COPY (FROM {area}) TO '{out}' (FORMAT parquet)",
    "COPY, geometry := 'point'": (
        "COPY (FROM {area_geometry}) TO '{out}' (FORMAT parquet, GEOPARQUET_VERSION 'V2')"
    ),
    "COPY, geometry := 'pixel'": (
        "COPY (FROM {area_pixel}) TO '{out}' (FORMAT parquet, GEOPARQUET_VERSION 'V2')"
    ),
}
WORKER = """
import sys, time, aefsql, duckdb
catalog, sql = sys.argv[1], sys.argv[2]
con = aefsql.connect(catalog=catalog)
start = time.perf_counter()
try:
    con.sql(sql) if sql.startswith("COPY") else con.sql(sql).fetchall()
except duckdb.Error as exc:  # a tree without the parameter
    if "does not support the supplied arguments" not in str(exc):
        raise
    print("unsupported")
else:
    print(time.perf_counter() - start)
con.close()
"""


def timed(tree: str, catalog: str, sql: str) -> float | None:
    env = {**os.environ, "PYTHONPATH": tree}
    done = subprocess.run(
        [sys.executable, "-c", WORKER, catalog, sql], env=env, capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(done.stderr)
    out = done.stdout.strip().splitlines()[-1]
    return None if out == "unsupported" else float(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/aefsql-bench"))
    args = parser.parse_args()
    trees = args.trees.split(",")
    index = write_collection(args.dir, 4096, 2, BLOCK)
    box = area_box(700, 900, args.size)
    area = f"aef_pixels({box}, years := {YEAR}, crs := {EPSG}"
    out = str(Path(tempfile.mkdtemp()) / "pixels.parquet")
    filled = {
        label: sql.format(
            area=area + ")",
            area_geometry=area + ", geometry := 'point')",
            area_pixel=area + ", geometry := 'pixel')",
            out=out,
        )
        for label, sql in QUERIES.items()
    }
    best: dict = {}
    load = os.getloadavg()[0]
    for _ in range(args.runs):
        for label, sql in filled.items():
            for tree in trees:  # the trees take turns, query by query
                seconds = timed(tree, str(index), sql)
                if seconds is not None:
                    best[label, tree] = min(best.get((label, tree), float("inf")), seconds)
    print(
        f"# {args.size}² pixels, best of {args.runs}; load {load:.1f} -> {os.getloadavg()[0]:.1f}"
    )
    baseline = best["COPY (FROM …) TO Parquet", trees[0]]
    for (label, tree), seconds in best.items():
        print(f"{label:<28} {tree:<18} {seconds:>7.2f} s  {seconds / baseline:>5.2f}x")


if __name__ == "__main__":
    main()
