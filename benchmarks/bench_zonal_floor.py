"""aef_zonal against its decode floor: trees taking turns, and where the CPU goes.

The 1,000 parcels of bench_areas.py's "1,000 parcels in one tile" (2,308,093 pixel centres in
tile 0 of its collection, which it writes). `--trees` runs each tree's package in a process of
its own, one after the other, `--rounds` times: aef_zonal end to end (a new connection, SQL to
Arrow) and `zonal_means` alone, best of `--runs` each, with the process's CPU seconds and peak
RSS; every tree must give the same means, bit for bit. `--breakdown` (this tree): the
thread-seconds of CPU of each stage of `zonal_means` (timers in the threads that run them),
and the floor under any reader of the tile: zstd decompressing its 1,024 band-blocks with
two threads, file reads included.

    cd benchmarks
    python bench_zonal_floor.py --trees /tmp/before,.. --rounds 4 --runs 3
    python bench_zonal_floor.py --breakdown
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import shapely
import tifffile
import zstandard
from bench_areas import BLOCK, EPSG, YEAR, best_of, parcels, zonal_aefsql
from bench_local import write_collection

HERE = Path(__file__).resolve().parent


def one_tree(catalog: str, runs: int) -> dict:
    """This process's package: best seconds of aef_zonal (SQL) and of zonal_means."""
    from aefsql.geometry.areas import area_from
    from aefsql.kernels.means import zonal_means
    from aefsql.session import open_session

    polygons = parcels(1000, 4096)
    session = open_session(catalog)
    areas = [area_from(blob, EPSG) for blob in shapely.to_wkb(polygons)]
    sql, kernel, cpu = float("inf"), float("inf"), float("inf")
    for _ in range(runs):
        start = time.process_time()
        seconds, table = best_of(1, lambda: zonal_aefsql(catalog, polygons))
        cpu = min(cpu, time.process_time() - start)
        sql = min(sql, seconds)
        kernel = min(kernel, best_of(1, lambda: zonal_means(session, areas, [YEAR]))[0])
    means = np.array(table["embedding"].to_pylist(), dtype=np.float64)
    return {
        "sql": sql,
        "kernel": kernel,
        "cpu": cpu,
        "pixels": int(np.asarray(table["pixels"]).sum()),
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "means": hashlib.sha1(np.nan_to_num(means, nan=-9.0).tobytes()).hexdigest()[:12],
    }


def take_turns(trees: list[str], catalog: str, rounds: int, runs: int) -> None:
    best: dict[str, dict] = {}
    for r in range(rounds):
        for tree in trees:
            path = os.pathsep.join([str(Path(tree).resolve()), str(HERE)])
            out = subprocess.run(
                [sys.executable, __file__, "--one", "--catalog", catalog, "--runs", str(runs)],
                env={**os.environ, "PYTHONPATH": path},
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            got = json.loads(out.splitlines()[-1])
            load = os.getloadavg()[0]
            print(
                f"round {r + 1} {tree:<24} aef_zonal {got['sql']:.3f} s "
                f"({got['pixels'] / got['sql'] / 1e6:.2f} M px/s), CPU {got['cpu']:.2f} s; "
                f"zonal_means {got['kernel']:.3f} s; peak {got['peak_mib']:.0f} MiB; "
                f"means {got['means']}; load {load:.1f}",
                flush=True,
            )
            mine = best.setdefault(tree, dict(got))
            for key in ("sql", "kernel", "cpu", "peak_mib"):
                mine[key] = min(mine[key], got[key])
    if len({b["means"] for b in best.values()}) != 1:
        raise AssertionError("the trees' means differ")
    first = best[trees[0]]
    print(
        f"\n{'tree':<24} {'aef_zonal s':>11} {'M px/s':>7} {'vs first':>8} {'CPU s':>6} "
        f"{'zonal_means s':>13} {'peak MiB':>8}"
    )
    for tree, b in best.items():
        print(
            f"{tree:<24} {b['sql']:>11.3f} {b['pixels'] / b['sql'] / 1e6:>7.2f} "
            f"{first['sql'] / b['sql']:>7.2f}x {b['cpu']:>6.2f} {b['kernel']:>13.3f} "
            f"{b['peak_mib']:>8.0f}"
        )
    print(f"# best of {rounds} rounds x {runs} runs; the same means in every tree")


def breakdown(catalog: str, tiff: str, runs: int) -> None:
    """Thread-seconds of CPU by stage of zonal_means, and the zstd floor of the tile."""
    from aefsql.geometry.areas import area_from
    from aefsql.kernels import engine, means
    from aefsql.session import open_session

    session = open_session(catalog)
    areas = [area_from(blob, EPSG) for blob in shapely.to_wkb(parcels(1000, 4096))]
    spent: dict[str, float] = defaultdict(float)
    lock = threading.Lock()

    def timed(owner, name: str, label: str) -> None:
        inner = getattr(owner, name)

        def wrapper(*args, **kwargs):
            start = time.thread_time()
            try:
                return inner(*args, **kwargs)
            finally:
                with lock:
                    spent[label] += time.thread_time() - start

        setattr(owner, name, wrapper)

    timed(means, "_all_chunks", "plan: the polygons' chunks (main thread)")
    timed(means, "run_layout", "plan: each batch's run layout")
    timed(engine, "decode_block", "zstd decode (decode threads)")
    timed(means._BlockSums, "gather", "sums: take, v|v|, reduceat, nodata (decode threads)")
    timed(engine.BlockEngine, "_fetch", "fetch: pread of 933 MB (prefetch threads)")
    for r in range(runs):
        spent.clear()
        wall, cpu = time.perf_counter(), time.process_time()
        means.zonal_means(session, areas, [YEAR])
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(
            f"zonal_means run {r + 1}: {wall:.3f} s, process CPU {cpu:.2f} s, load "
            f"{os.getloadavg()[0]:.1f}"
        )
        for label, seconds in spent.items():
            print(f"    {label:<55} {seconds:.3f}")
        print(
            f"    {'the rest (main thread, batches, Python)':<55} {cpu - sum(spent.values()):.3f}"
        )

    with tifffile.TiffFile(tiff) as tif:
        offsets, counts = tif.pages[0].dataoffsets, tif.pages[0].databytecounts

    def decompress(blocks: range) -> None:
        codec = zstandard.ZstdDecompressor()
        with open(tiff, "rb") as f:
            for i in blocks:
                f.seek(offsets[i])
                codec.decompress(f.read(counts[i]), max_output_size=BLOCK * BLOCK)

    def zstd_floor() -> None:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(decompress, [range(0, len(counts), 2), range(1, len(counts), 2)]))

    for _ in range(runs):
        cpu = time.process_time()
        seconds = best_of(1, zstd_floor)[0]
        print(
            f"zstd of the tile's {len(counts)} band-blocks, 2 threads, reads included: "
            f"{seconds:.3f} s, CPU {time.process_time() - cpu:.2f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", help="comma-separated source trees, first the baseline")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--breakdown", action="store_true")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--catalog", help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/aefsql-bench"))
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_tree(args.catalog, args.runs)))
        return
    catalog = str(write_collection(args.dir, 4096, 2, BLOCK))  # as bench_areas.py's
    tiff = str(args.dir / f"{YEAR}/33N/bench{BLOCK}-0.tiff")
    if args.trees:
        take_turns(args.trees.split(","), catalog, args.rounds, args.runs)
    if args.breakdown:
        breakdown(catalog, tiff, args.runs)


if __name__ == "__main__":
    main()
