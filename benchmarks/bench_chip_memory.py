"""Peak memory (VmHWM) of aef_chips at a few chip counts, each run in a fresh child process.

    python benchmarks/bench_chip_memory.py [--counts 250 500 1000] [--size 64]
                                           [--dir /tmp/aefsql-chips-memory]

Writes the demo collection (512-pixel tiles) once, then for each count and each query —
`SELECT count(*) FROM aef_chips(…)` and `COPY (FROM aef_chips(…)) TO 'x.parquet'` — starts a
child process that connects, runs the query and reports its peak resident set (VmHWM from
/proc/self/status). The baseline is the same child running the query on 0 points (imports,
DuckDB, the session). Prints, per run, the chips' int8 bytes, the peak, the peak above the
baseline, and that excess as a multiple of the int8: the factor budgets.WINDOW_BYTES is
chosen from.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys, time
import numpy as np, pyarrow as pa
import aefsql
from aefsql.demo import DEMO_TILES
catalog, count, size, mode, out = sys.argv[1:6]
count, size = int(count), int(size)
rng = np.random.default_rng(count)
# Points spread over the Nairobi tile (one tile: the chips' cost, not the reads', dominates).
_, lon, lat = DEMO_TILES[2]
table = pa.table({"id": np.arange(count),
                  "lon": lon + rng.uniform(-0.015, 0.015, count),
                  "lat": lat + rng.uniform(-0.015, 0.015, count)})
con = aefsql.connect(catalog=catalog, progress=False)
con.register("points", table)
query = f"FROM aef_chips('points', size := {size}, years := 2024, max_bytes := 10**12)"
start = time.perf_counter()
if mode == "count":
    rows = con.sql(f"SELECT count(*) FROM ({query})").fetchall()[0][0]
else:
    con.execute(f"COPY ({query}) TO '{out}' (FORMAT parquet)")
    rows = con.sql(f"SELECT count(*) FROM '{out}'").fetchall()[0][0]
seconds = time.perf_counter() - start
con.close()
status = open("/proc/self/status").read()
hwm = int(next(l for l in status.splitlines() if l.startswith("VmHWM")).split()[1])
print(json.dumps({"rows": rows, "seconds": seconds, "vmhwm_kib": hwm}))
"""


def run(catalog: Path, count: int, size: int, mode: str, folder: Path) -> dict:
    out = folder / f"chips-{count}-{mode}.parquet"
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(catalog), str(count), str(size), mode, str(out)],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise SystemExit(done.stderr)
    out.unlink(missing_ok=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[250, 500, 1000])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--queries", nargs="+", default=["count", "copy"])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/aefsql-chips-memory"))
    args = parser.parse_args()
    from aefsql.demo import write_demo_collection

    args.dir.mkdir(parents=True, exist_ok=True)
    catalog = write_demo_collection(args.dir / "demo", years=(2024,), tile_px=512)
    print(
        f"{'query':>6} {'chips':>6} {'int8 MiB':>9} {'peak MiB':>9} {'excess MiB':>10} "
        f"{'x int8':>7} {'seconds':>8}"
    )
    for mode in args.queries:
        base = run(catalog, 0, args.size, mode, args.dir)["vmhwm_kib"] / 1024
        print(f"{mode:>6} {0:>6} {0:>9.0f} {base:>9.0f} {'(baseline)':>10}")
        for count in args.counts:
            found = run(catalog, count, args.size, mode, args.dir)
            assert found["rows"] == count, found
            int8 = count * args.size**2 * 64 / 2**20
            peak = found["vmhwm_kib"] / 1024
            print(
                f"{mode:>6} {count:>6} {int8:>9.0f} {peak:>9.0f} {peak - base:>10.0f} "
                f"{(peak - base) / int8:>7.1f} {found['seconds']:>8.1f}"
            )


if __name__ == "__main__":
    main()
