"""Peak memory of sampling 10^6 clustered points (local files, the 1024-block collection).

    python benchmarks/bench_memory.py [--points 1000000] [--dir /tmp/aefsql-bench]
                                      [--as-vector] [--sql | --copy]

Run bench_local.py first (it writes the collection). `--sql` runs the SQL table function
(`FROM aef_sample_points(...)` to Arrow) instead of `aefsql.sample_points`; `--copy` runs
`COPY (FROM aef_sample_points(...)) TO '<dir>/points.parquet'` (issue 24). Prints the peak
resident set size of this process before (imports, points table) and after the sampling, and
the rate.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from bench_local import EPSG, points
from pyproj import Transformer

import aefsql


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--tiles", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/aefsql-bench"))
    parser.add_argument("--as-vector", action="store_true", help="one FLOAT[64] embedding column")
    parser.add_argument("--sql", action="store_true", help="FROM aef_sample_points(...) instead")
    parser.add_argument("--copy", action="store_true", help="COPY (FROM aef_sample_points(...))")
    args = parser.parse_args()
    x, y = points("clustered", args.points, args.size, args.tiles, seed=1)
    lon, lat = (
        np.asarray(v) for v in Transformer.from_crs(EPSG, 4326, always_xy=True).transform(x, y)
    )
    table = pa.table({"id": np.arange(args.points), "lon": lon, "lat": lat})
    catalog = str(args.dir / "index1024.parquet")
    sql = args.sql or args.copy
    con = aefsql.connect(catalog=catalog, progress=False) if sql else None
    before = peak_rss_mib()
    start = time.perf_counter()
    if con is not None:
        con.register("points", table)
        vector = str(args.as_vector).lower()
        query = f"FROM aef_sample_points('points', years := 2024, as_vector := {vector})"
        if args.copy:
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "points.parquet"
                con.execute(f"COPY ({query}) TO '{path}' (FORMAT parquet)")
                seconds = time.perf_counter() - start
                peak = peak_rss_mib()
                result = pq.read_table(path, columns=["id"])
        else:
            result = con.sql(query).to_arrow_table()
    else:
        result = aefsql.sample_points(
            table, years=2024, as_vector=args.as_vector, catalog=catalog, progress=False
        )
    if not args.copy:
        seconds, peak = time.perf_counter() - start, peak_rss_mib()
    assert result.num_rows == args.points
    assert result["id"].to_numpy().tolist() == list(range(args.points))
    result_mib = 0 if args.copy else result.nbytes / 2**20  # (COPY: read back to check)
    print(
        f"{args.points} clustered points: {seconds:.1f} s ({args.points / seconds:,.0f} points/s)"
    )
    print(
        f"peak RSS before sampling {before:,.0f} MiB, after {peak:,.0f} MiB "
        + (
            "(written to Parquet)"
            if args.copy
            else f"(the result table itself: {result_mib:,.0f} MiB)"
        )
    )


if __name__ == "__main__":
    main()
