"""Peak memory of `COPY (FROM aef_pixels(area)) TO 'x.parquet'`, each size in a fresh process.

On the benchmark collection of bench_local.py (two 4096² tiles, 64 bands, 1024-px blocks),
extended to more years by symbolic links (the same pixels under other years' paths, so that
10^8 pixel-years need no more disk), runs for each size a child process that connects,
writes every pixel of the area to Parquet, and reports its peak RSS (getrusage's ru_maxrss,
which is /proc's VmHWM), its RSS before the query and the rows written.

    python benchmarks/bench_area_memory.py [--sides 1024,2048,4096] [--years 1] [--whole]

`--whole` adds a run over both tiles' full extent in `--years` years (3 years: 1.0 x 10^8
pixel-years, ~33.5 million pixels a year), the size the issue names.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from bench_areas import area_box
from bench_local import EPSG, PIXEL, X0, Y0, write_collection

from aefsql.writer import TileEntry, write_index

CHILD = r"""
import json, resource, sys, time
import pyarrow.parquet as pq
import aefsql

def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024

catalog, box, years, epsg, output = json.loads(sys.argv[1])
con = aefsql.connect(catalog=catalog)
con.sql("SELECT 1").fetchall()
before = rss()
start = time.perf_counter()
con.execute(
    f"COPY (FROM aef_pixels({box}, years := {years}, crs := {epsg})) "
    f"TO '{output}' (FORMAT parquet)"
)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
con.close()
print(json.dumps({"seconds": seconds, "before": before, "peak": peak,
                  "rows": pq.ParquetFile(output).metadata.num_rows}))
"""


def years_index(folder: Path, size: int, years: list[int]) -> Path:
    """An index of both tiles in each of `years`, other years' files linking to 2024's."""
    entries = []
    for year in years:
        for k in range(2):
            rel = f"{year}/33N/bench1024-{k}.tiff"
            path = folder / rel
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.symlink_to(folder / f"2024/33N/bench1024-{k}.tiff")
            west = X0 + k * size * PIXEL
            entries.append(
                TileEntry(year, rel, EPSG, west, Y0, west + size * PIXEL, Y0 + size * PIXEL)
            )
    return write_index(folder / f"index1024-{len(years)}y.parquet", entries)


def measure(catalog: Path, box: list[float], years: list[int], output: Path) -> dict:
    argument = json.dumps([str(catalog), box, years, EPSG, str(output)])
    try:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, argument], capture_output=True, text=True, check=True
        )
    finally:
        output.unlink(missing_ok=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="tile side, pixels")
    parser.add_argument("--sides", default="1024,2048,4096", help="square areas in tile 0")
    parser.add_argument("--years", type=int, default=1)
    parser.add_argument("--whole", action="store_true", help="both tiles, all the years")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/aefsql-bench"))
    args = parser.parse_args()
    write_collection(args.dir, args.size, 2, 1024)
    years = list(range(2024 - args.years + 1, 2025))
    index = years_index(args.dir, args.size, years)
    output = args.dir / "area-memory.parquet"
    runs = []
    for side in (int(s) for s in args.sides.split(",") if s):
        offset = 0 if side >= args.size else (args.size - side) // 2
        runs.append((f"{side}x{side} px", area_box(offset, offset, min(side, args.size))))
    if args.whole:
        inset = PIXEL / 4
        width = 2 * args.size * PIXEL
        box = [X0 + inset, Y0 + inset, X0 + width - inset, Y0 + args.size * PIXEL - inset]
        runs.append((f"2 tiles, {2 * args.size}x{args.size} px", box))
    print(
        f"# COPY (FROM aef_pixels(...)) TO parquet, {len(years)} year(s), one process each, "
        f"{os.cpu_count()} cores"
    )
    print(
        f"{'area':<24} {'pixel-years':>12} {'seconds':>8} {'px/s':>9} {'RSS before MiB':>14} "
        f"{'peak RSS MiB':>12} {'peak - before':>13}"
    )
    for label, box in runs:
        result = measure(index, box, years, output)
        mib = 2**20
        print(
            f"{label:<24} {result['rows']:>12,} {result['seconds']:>8.1f} "
            f"{result['rows'] / result['seconds']:>9,.0f} {result['before'] / mib:>14.0f} "
            f"{result['peak'] / mib:>12.0f} {(result['peak'] - result['before']) / mib:>13.0f}"
        )


if __name__ == "__main__":
    main()
