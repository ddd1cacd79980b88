"""aef_pixels to Arrow and to Parquet against a threaded rasterio window read (issue 24).

One 2048² × 64-band area of bench_areas.py (tile 0 at row 700, column 900), read by:
rasterio (`GDAL_NUM_THREADS=ALL_CPUS` locally; over HTTP GDAL's defaults, its faster
setting there), `SELECT * FROM aef_pixels(…)` to Arrow, the same without lon/lat, `COPY … TO`
Parquet, and `SELECT count(*), sum(A63)` (the read alone). Each SQL reader opens a new
connection. Over HTTP everything goes through latency_proxy.py (+50 ms a request). Every
Arrow result is checked against rasterio's window: as many rows as pixels, and the same sum
of each of three bands. Wall and CPU seconds (this process's, every thread) are printed.

`floors` measures what the SQL read cannot go below on this machine, each part alone:
(a) DuckDB's own `SELECT *` → Arrow and `COPY … TO` Parquet of an in-memory Arrow table
with exactly aef_pixels' schema and rows (aef_pixels' own result, no aefsql in the query);
(b) pyproj projecting the 4.2 M pixel centres to lon/lat, in one thread and in two (halves,
a transformer each: PROJ lets go of the GIL); (c) aefsql's kernels alone (fetch, decode,
gather: `chunk_pixels` of the area's chunks, no lon/lat, no DuckDB); (d) each SQL read's
CPU seconds by thread (Linux: /proc/self/task): DuckDB runs aef_pixels' pipeline on one
thread (its source is one UDF's list of chunks), which also runs the UDFs' Python, while
aefsql's pools read, decode and project beside it: that thread's CPU is the query's floor.

    python benchmarks/bench_pixels_sql.py [--runs 3] [--only local,http,floors]

Run it from each tree to compare (PYTHONPATH=<tree>), alternating, in one session.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import numpy as np
import pyproj
from bench_areas import (
    EPSG,
    GDAL_HTTP,
    GDAL_THREADS,
    YEAR,
    RangeServer,
    area_box,
    rasterio_area,
    write_collection,
)
from latency_proxy import LatencyProxy

import aefsql
from aefsql.geometry.areas import area_from
from aefsql.kernels.pixels import area_chunks, chunk_pixels
from aefsql.session import open_session

BLOCK = 1024
CHECKED_BANDS = (0, 31, 63)


def sql_reader(catalog: str, box: list[float], select: str, copy_to: str | None = None):
    def read():
        con = aefsql.connect(catalog=catalog)
        area = f"aef_pixels({box}, years := {YEAR}, crs := {EPSG})"
        try:
            if copy_to:
                con.sql(f"COPY (SELECT {select} FROM {area}) TO '{copy_to}' (FORMAT parquet)")
                return None
            return con.sql(f"SELECT {select} FROM {area}").to_arrow_table()
        finally:
            con.close()

    return read


def check(table, window: np.ndarray, label: str) -> None:
    if table is None or "A63" not in table.column_names:
        return
    n = window.shape[1] * window.shape[2]
    if table.num_rows != n:
        raise AssertionError(f"{label}: {table.num_rows} rows, not {n}")
    for band in CHECKED_BANDS:
        got = table[f"A{band:02d}"].fill_null(-128).to_numpy().astype(np.int64).sum()
        if got != window[band].astype(np.int64).sum():
            raise AssertionError(f"{label}: band {band} differs from rasterio's window")


def run(where: str, readers: dict, runs: int, baseline: str | None) -> None:
    """Best wall time of `runs` turns of each reader (and the CPU seconds of that run),
    with its ratio to `baseline`'s; each result checked against the baseline's window."""
    best = dict.fromkeys(readers, (float("inf"), 0.0))
    load = os.getloadavg()[0]
    window = None
    for _ in range(runs):  # readers take turns
        for label, read in readers.items():
            start, cpu = time.perf_counter(), time.process_time()
            result = read()
            took = (time.perf_counter() - start, time.process_time() - cpu)
            best[label] = min(best[label], took)
            if label == baseline:
                window = result
            elif baseline is not None:
                check(result, window, label)
            del result
    print(f"\n# {where}, best of {runs}; load {load:.1f} -> {os.getloadavg()[0]:.1f}")
    for label, (seconds, cpu) in best.items():
        ratio = f"{best[baseline][0] / seconds:>6.2f}x" if baseline else ""
        print(f"{label:<40} {seconds:>7.2f} s {cpu:>6.2f} CPU-s {ratio}")


def floors(catalog: str, box: list[float], runs: int, out: str) -> None:
    """(a) DuckDB alone on aef_pixels' own result, (b) PROJ alone on its pixel centres,
    (c) aefsql's kernels alone: see the module's docstring."""
    table = sql_reader(catalog, box, "*")()  # exactly aef_pixels' schema and rows
    con = duckdb.connect()
    con.register("pixels", table)
    x, y = table["x"].to_numpy(), table["y"].to_numpy()
    crs = set(table["crs"].unique().to_pylist())
    if crs != {f"EPSG:{EPSG}"}:
        raise AssertionError(f"the area's pixels are in {crs}, not EPSG:{EPSG} alone")

    def project(part: slice):
        transformer = pyproj.Transformer.from_crs(EPSG, 4326, always_xy=True)
        return transformer.transform(x[part], y[part], errcheck=False)

    def project_in_two():
        half = x.size // 2
        with ThreadPoolExecutor(2) as pool:
            return list(pool.map(project, [slice(0, half), slice(half, None)]))

    def kernels():
        session = open_session(catalog)
        chunks = area_chunks(session, area_from(box, EPSG), [YEAR])
        return chunk_pixels(session, chunks, list(range(64)), coordinates=False)

    readers = {
        "(a) DuckDB: SELECT * FROM arrow -> Arrow": lambda: con.sql(
            "SELECT * FROM pixels"
        ).to_arrow_table(),
        "(a) DuckDB: COPY arrow TO Parquet": lambda: con.sql(
            f"COPY (SELECT * FROM pixels) TO '{out}' (FORMAT parquet)"
        ),
        f"(b) PROJ, {x.size:,} lon/lat, 1 thread": lambda: project(slice(None)),
        f"(b) PROJ, {x.size:,} lon/lat, 2 threads": project_in_two,
        "(c) aefsql kernels, no lon/lat": kernels,
    }
    schema = ", ".join(f"{f.name} {f.type}" for f in table.schema if not f.name.startswith("A"))
    print(f"\n{table.num_rows:,} rows: {schema}, A00..A63 int8")
    run("floors", readers, runs, None)
    con.close()
    if os.path.isdir("/proc/self/task"):
        print(f"\n# (d) CPU seconds by thread, best wall time of {runs}")
        for select in ("*", "* EXCLUDE (lon, lat)", "count(*), sum(A63)"):
            best = min((by_thread(catalog, box, select) for _ in range(runs)), key=lambda r: r[0])
            wall, threads = best
            pipeline = max((v, k) for k, v in threads.items() if not k.startswith("aefsql-"))
            pools = ", ".join(
                f"{k[7:]} {v:.2f}" for k, v in sorted(threads.items()) if k.startswith("aefsql-")
            )
            print(
                f"SELECT {select:<22} {wall:>6.2f} s; DuckDB's pipeline thread {pipeline[0]:.2f}"
                f" CPU-s; aefsql's pools: {pools}"
            )


def by_thread(catalog: str, box: list[float], select: str) -> tuple[float, dict[str, float]]:
    """Wall seconds of `SELECT {select} FROM aef_pixels(…)` to Arrow, and the CPU seconds
    each thread spent in it, by name (aefsql's pools by pool; DuckDB's threads, unknown to
    Python, by their id), read before the connection closes (its threads end with it)."""

    def cpu() -> dict[str, float]:
        tick = os.sysconf("SC_CLK_TCK")
        found = {}
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except FileNotFoundError:  # a thread that ended meanwhile
                continue
            found[tid] = (int(fields[11]) + int(fields[12])) / tick
        return found

    area = f"{box}, years := {YEAR}, crs := {EPSG}"
    con = aefsql.connect(catalog=catalog)
    try:
        before, start = cpu(), time.perf_counter()
        con.sql(f"SELECT {select} FROM aef_pixels({area})").to_arrow_table()
        wall, after = time.perf_counter() - start, cpu()
    finally:
        con.close()
    names = {str(t.native_id): t.name.rsplit("_", 1)[0] for t in threading.enumerate()}
    threads: dict[str, float] = {}
    for tid, seconds in after.items():
        name = names.get(tid, f"thread {tid}")
        threads[name] = threads.get(name, 0.0) + seconds - before.get(tid, 0.0)
    return wall, threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="local,http,floors")
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/aefsql-bench"))
    args = parser.parse_args()
    parts = set(args.only.split(","))
    index = write_collection(args.dir, 4096, 2, BLOCK)
    rel = f"2024/33N/bench{BLOCK}-0.tiff"
    row0, col0, n = 700, 900, 2048
    box = area_box(row0, col0, n)
    out = str(Path(tempfile.mkdtemp()) / "pixels.parquet")

    def sql_readers(catalog: str, parquet: bool) -> dict:
        readers = {
            "SELECT * -> Arrow": sql_reader(catalog, box, "*"),
            "SELECT * EXCLUDE (lon, lat) -> Arrow": sql_reader(
                catalog, box, "* EXCLUDE (lon, lat)"
            ),
            "count(*), sum(A63)": sql_reader(catalog, box, "count(*), sum(A63)"),
        }
        if parquet:
            readers["COPY (SELECT *) TO Parquet"] = sql_reader(catalog, box, "*", out)
        return readers

    if "local" in parts:
        tiff = str(args.dir / rel)
        readers = {
            "rasterio, 2 threads": lambda: rasterio_area(tiff, row0, col0, n, GDAL_THREADS),
            **sql_readers(str(index), parquet=True),
        }
        run("local files", readers, args.runs, "rasterio, 2 threads")
    if "http" in parts:
        with RangeServer(args.dir) as server, LatencyProxy(server.port, args.latency) as proxy:
            base = f"http://127.0.0.1:{proxy.port}/"
            counter = [0]

            def rasterio_http():
                counter[0] += 1  # a new URL each run: GDAL's /vsicurl/ cache lives on
                url = f"/vsicurl/{base}{rel}?run={counter[0]}"
                return rasterio_area(url, row0, col0, n, GDAL_HTTP)

            readers = {"rasterio": rasterio_http, **sql_readers(base + index.name, False)}
            run(f"HTTP + {args.latency * 1000:.0f} ms a request", readers, args.runs, "rasterio")
    if "floors" in parts:
        floors(str(index), box, args.runs, out)


if __name__ == "__main__":
    main()
