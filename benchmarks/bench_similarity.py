"""A similarity map in SQL: aef_similarity and aef_pixels(as_vector := true) against the
aef_vector idiom and against rasterio reading the same pixels; and a 10^8-pixel scan.

On bench_local.py's collection (GDAL-written: int8 x 64 bands, planar-separate, ZSTD, 1024-px
blocks, south-up; the area of bench_areas.py: N x N pixels, default 2048², not aligned on
blocks), measures in one run, each from a new connection, fetching (row, col, similarity) as
Arrow:

(a) the idiom documented before as_vector:
    `array_cosine_similarity(aef_vector(p), ref)` over `aef_pixels(…) p`;
(b) `array_cosine_similarity(embedding, ref)` over `aef_pixels(…, as_vector := true)`;
(c) `SELECT x, y, similarity FROM aef_similarity(…)`, and the same with lon, lat;

and, as the read they build on, `SELECT count(*), sum(A63) FROM aef_pixels(…)`, and where
(c)'s time goes: the Python API `aefsql.similarity` (the same SQL, from Python), the read
alone in the kernels (`chunk_pixels` over the area's chunks, no DuckDB) and the cosine alone
(`pixel_similarity` over those pixels, in memory),

against rasterio's `src.read(window=...)` with GDAL_NUM_THREADS=ALL_CPUS (the read alone,
the baseline of issue 24's ratios). (b)'s similarities are checked against numpy's cosine
over the de-quantized rasterio window in the same run, pixel for pixel; (a)'s against (b)'s.
(c)'s and the Python path's against it too, NULL where any band is nodata.

`--scan` instead writes every pixel of both tiles in `--years` years (3: 1.0 x 10^8
pixel-years; other years' files are symbolic links to 2024's, under `--scan-dir`) through
`COPY (FROM aef_similarity(…)) TO 'x.parquet'`, and runs `ORDER BY similarity DESC LIMIT 10`
and `count(*) WHERE similarity > 0.5` over the same pixels, each in a fresh process,
reporting its peak RSS (getrusage's ru_maxrss), seconds and rows (as bench_area_memory.py).

    python benchmarks/bench_similarity.py [--area 2048] [--runs 2] [--idiom-runs 1]
    python benchmarks/bench_similarity.py --scan [--years 3]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from bench_areas import BLOCK, GDAL_THREADS, YEAR, area_box, best_of, rasterio_area
from bench_local import EPSG, PIXEL, X0, Y0, write_collection

import aefsql
from aefsql.aef import NODATA, dequantize
from aefsql.duck import udfs
from aefsql.geometry.areas import area_from
from aefsql.kernels.pixels import area_chunks, chunk_pixels
from aefsql.kernels.similarity import Cosines, pixel_similarity, query_vector
from aefsql.session import open_session
from aefsql.writer import TileEntry, write_index

QUERIES = {
    "aef_pixels, bands, count": (
        "SELECT count(*) AS row, sum(A63) AS col, NULL AS similarity "
        "FROM aef_pixels({box}, years := {year}, crs := {epsg}) WHERE ? IS NOT NULL"
    ),
    "(a) aef_vector(p) idiom": (
        "SELECT p.row, p.col, array_cosine_similarity(aef_vector(p), ?::FLOAT[64]) AS similarity "
        "FROM aef_pixels({box}, years := {year}, crs := {epsg}) p WHERE aef_vector(p) IS NOT NULL"
    ),
    "(b) as_vector := true": (
        "SELECT row, col, array_cosine_similarity(embedding, ?::FLOAT[64]) AS similarity "
        "FROM aef_pixels({box}, years := {year}, crs := {epsg}, as_vector := true) "
        "WHERE embedding IS NOT NULL"
    ),
    "(c) aef_similarity": (
        "SELECT x, y, similarity "
        "FROM aef_similarity({box}, ?::FLOAT[64], years := {year}, crs := {epsg})"
    ),
    "(c) aef_similarity, lon/lat": (
        "SELECT x, y, lon, lat, similarity "
        "FROM aef_similarity({box}, ?::FLOAT[64], years := {year}, crs := {epsg})"
    ),
}
# (c)'s rows hold every pixel (NULL similarity on nodata), placed by x/y: checked apart.
EVERY_PIXEL = ("(c) aef_similarity", "(c) aef_similarity, lon/lat", "aefsql.similarity (Python)")


def similarity_map(catalog: str, query: str, reference: np.ndarray) -> pa.Table:
    con = aefsql.connect(catalog=catalog)
    try:
        return con.sql(query, params=[reference.tolist()]).to_arrow_table()
    finally:
        con.close()


def numpy_similarity(window: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """float64 (n, n): each pixel's cosine with `reference`, NaN where any band is nodata."""
    vectors = dequantize(window).astype(np.float32).astype(np.float64)  # (64, n, n)
    ref = reference.astype(np.float64)
    dot = np.tensordot(ref, vectors, axes=1)
    cosine = dot / (np.linalg.norm(vectors, axis=0) * np.linalg.norm(ref))
    return np.where((window == NODATA).any(axis=0), np.nan, cosine)


def python_similarity(catalog: str, box: list[float], reference: np.ndarray) -> pa.Table:
    """The Python API: aefsql.similarity (a new session), which runs aef_similarity."""
    return aefsql.similarity(box, reference, years=YEAR, crs=EPSG, catalog=catalog)


def kernel_parts(catalog: str, box: list[float], reference: np.ndarray) -> dict:
    """Seconds of the read alone (`chunk_pixels` over the area's chunks, a new session: the
    plan included), of the cosine alone (`pixel_similarity` over the pixels in memory), and
    of the read with the cosines computed as the blocks decode (`Cosines`, a new session)."""
    start = time.perf_counter()
    session = open_session(catalog)
    chunks = area_chunks(session, area_from(box, EPSG), [YEAR])
    pixels = chunk_pixels(session, chunks, list(range(64)), coordinates=False)
    read = time.perf_counter() - start
    start = time.perf_counter()
    query = query_vector(reference)
    pixel_similarity(pixels, query)
    cosine = time.perf_counter() - start
    del pixels
    start = time.perf_counter()
    session = open_session(catalog)
    chunks = area_chunks(session, area_from(box, EPSG), [YEAR])
    cosines = Cosines(tuple(query.astype(np.float32).tolist()))
    chunk_pixels(session, chunks, [], coordinates=False, derive=cosines)
    return {
        "kernels: read (chunk_pixels)": read,
        "kernels: cosine": cosine,
        "kernels: read + cosines (Cosines)": time.perf_counter() - start,
    }


def breakdown(catalog: str, text: str, reference: np.ndarray, runs: int) -> tuple[float, dict]:
    """(seconds, {part: seconds}) of the fastest of `runs` runs of the query `text`, with
    timers around the UDF bodies: the plan (area_units, unit_chunks), and inside each
    chunk_similarity call the wait for its read and cosines (`_read_chunks`: computed as
    the blocks decode, the next vectors' ahead meanwhile) and the Arrow lists; what is left
    is DuckDB's (unnest, projection, the Arrow result)."""
    spent: dict = {}

    def timed(name, function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - start

        return wrapper

    parts = {
        (udfs.SessionUdfs, "area_units"): "plan (area_units, unit_chunks)",
        (udfs.SessionUdfs, "unit_chunks"): "plan (area_units, unit_chunks)",
        (udfs.SessionUdfs, "_read_chunks"): "read, decode, cosine (wait for)",
        (udfs.SessionUdfs, "_pixel_lists"): "Arrow lists (_pixel_lists)",
    }
    saved = {key: getattr(*key) for key in parts}
    try:
        for (owner, name), label in parts.items():
            setattr(owner, name, timed(label, saved[owner, name]))
        best = (float("inf"), {})
        for _ in range(runs):
            spent.clear()
            seconds, _ = best_of(1, lambda: similarity_map(catalog, text, reference))
            if seconds < best[0]:
                best = (seconds, dict(spent))
    finally:
        for (owner, name), function in saved.items():
            setattr(owner, name, function)
    seconds, found = best
    found["DuckDB: unnest, projection, Arrow out"] = seconds - sum(found.values())
    return seconds, found


def check_every_pixel(table: pa.Table, expected: np.ndarray, row0: int, col0: int, label: str):
    """Every pixel of the window once, placed by its x/y; NULL exactly where numpy's is NaN
    (any band nodata), numpy's cosine elsewhere."""
    n = expected.shape[0]
    rows = np.rint((table["y"].to_numpy() - Y0) / PIXEL - 0.5).astype(np.int64) - row0
    cols = np.rint((table["x"].to_numpy() - X0) / PIXEL - 0.5).astype(np.int64) - col0
    if table.num_rows != n * n or len(set((rows * n + cols).tolist())) != n * n:
        raise AssertionError(f"{label}: {table.num_rows} rows, not the {n}² pixels once each")
    got = table["similarity"].to_numpy(zero_copy_only=False).astype(np.float64)
    want = expected[rows, cols]
    if not np.array_equal(np.isnan(got), np.isnan(want)):
        raise AssertionError(f"{label}: NULL similarities differ from rasterio's nodata")
    valid = ~np.isnan(want)
    if not np.allclose(got[valid], want[valid], rtol=1e-5, atol=2e-6):
        raise AssertionError(f"{label}: similarities differ from numpy over rasterio's window")


def check(table: pa.Table, expected: np.ndarray, row0: int, col0: int, label: str) -> None:
    rows = table["row"].to_numpy() - row0
    cols = table["col"].to_numpy() - col0
    valid = ~np.isnan(expected)
    if table.num_rows != valid.sum():
        raise AssertionError(f"{label}: {table.num_rows} rows, not the {valid.sum()} valid pixels")
    got = table["similarity"].to_numpy().astype(np.float64)
    if not np.allclose(got, expected[rows, cols], rtol=1e-5, atol=1e-6):
        raise AssertionError(f"{label}: similarities differ from numpy over rasterio's window")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="tile side, pixels")
    parser.add_argument("--area", type=int, default=2048, help="area side, pixels")
    parser.add_argument("--offset", type=int, nargs=2, default=(700, 900), metavar=("ROW", "COL"))
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--idiom-runs", type=int, default=1, help="runs of (a), ~30 s each")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/aefsql-bench"))
    parser.add_argument("--scan", action="store_true", help="the 10^8-pixel scan instead")
    parser.add_argument("--years", type=int, default=3, help="years of the scan")
    parser.add_argument("--scan-dir", type=Path, default=Path("/tmp/aefsql-bench-sim"))
    args = parser.parse_args()
    if args.scan:
        scan(args)
        return
    index = str(write_collection(args.dir, args.size, 2, BLOCK))  # as bench_local.py's
    tiff = str(args.dir / f"2024/33N/bench{BLOCK}-0.tiff")
    n, (row0, col0) = args.area, args.offset
    box = area_box(row0, col0, n)
    print(
        f"# {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; similarity map of {n}x{n} px "
        f"x 64 bands (tile {args.size}², {BLOCK}-px blocks, south-up, GDAL-written)"
    )
    window = rasterio_area(tiff, row0, col0, n, GDAL_THREADS)
    reference = dequantize(window[:, n // 2, n // 2]).astype(np.float32)
    expected = numpy_similarity(window, reference)
    best = {"rasterio read, 2 threads": float("inf")}
    best.update(dict.fromkeys(QUERIES, float("inf")))
    best["aefsql.similarity (Python)"] = float("inf")
    tables = {}
    # Readers take turns, run after run: a load that comes and goes touches them all.
    for run in range(args.runs):
        seconds, _ = best_of(1, lambda: rasterio_area(tiff, row0, col0, n, GDAL_THREADS))
        best["rasterio read, 2 threads"] = min(best["rasterio read, 2 threads"], seconds)
        for label, query in QUERIES.items():
            if label.startswith("(a)") and run >= args.idiom_runs:
                continue
            text = query.format(box=box, year=YEAR, epsg=EPSG)
            seconds, tables[label] = best_of(1, lambda t=text: similarity_map(index, t, reference))
            best[label] = min(best[label], seconds)
        label = "aefsql.similarity (Python)"
        seconds, tables[label] = best_of(1, lambda: python_similarity(index, box, reference))
        best[label] = min(best[label], seconds)
        for part, seconds in kernel_parts(index, box, reference).items():
            best[part] = min(best.get(part, float("inf")), seconds)
    for label, table in tables.items():
        if label in EVERY_PIXEL:
            check_every_pixel(table, expected, row0, col0, label)
        elif "count" not in label:  # the read alone, in SQL: what (b) adds its vectors to
            check(table, expected, row0, col0, label)
    base = best["rasterio read, 2 threads"]
    print(f"{'':30} {'seconds':>8} {'M px/s':>8} {'vs rasterio':>12}")
    for label, seconds in best.items():
        print(f"{label:30} {seconds:8.2f} {n * n / seconds / 1e6:8.2f} {base / seconds:11.2f}x")
    print("values: (a), (b), (c) and Python equal numpy's cosine over rasterio's window")
    text = QUERIES["(c) aef_similarity"].format(box=box, year=YEAR, epsg=EPSG)
    seconds, parts = breakdown(index, text, reference, args.runs)
    print(f"where (c)'s time goes (fastest of {args.runs} runs, {seconds:.2f} s):")
    for part, spent in parts.items():
        print(f"  {part:40} {spent:6.2f} s {n * n / spent / 1e6 if spent > 0 else 0:8.1f} M px/s")


SCAN_CHILD = r"""
import json, resource, sys, time
import aefsql

def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024

catalog, query, reference = json.loads(sys.argv[1])
con = aefsql.connect(catalog=catalog)
con.sql("SELECT 1").fetchall()
before = rss()
start = time.perf_counter()
result = con.execute(query, [reference]).fetchall()
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
con.close()
print(json.dumps({"seconds": seconds, "before": before, "peak": peak, "result": result}))
"""


def scan_index(folder: Path, bench: Path, size: int, years: list[int]) -> Path:
    """Both bench tiles in each of `years`, every year's files links to bench's 2024 ones."""
    entries = []
    for year in years:
        for k in range(2):
            rel = f"{year}/33N/bench{BLOCK}-{k}.tiff"
            path = folder / rel
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.symlink_to(bench / f"2024/33N/bench{BLOCK}-{k}.tiff")
            west = X0 + k * size * PIXEL
            entries.append(
                TileEntry(year, rel, EPSG, west, Y0, west + size * PIXEL, Y0 + size * PIXEL)
            )
    return write_index(folder / f"index-{len(years)}y.parquet", entries)


def scan(args) -> None:
    write_collection(args.dir, args.size, 2, BLOCK)
    years = list(range(2024 - args.years + 1, 2025))
    index = scan_index(args.scan_dir, args.dir, args.size, years)
    inset = PIXEL / 4
    box = [
        X0 + inset,
        Y0 + inset,
        X0 + 2 * args.size * PIXEL - inset,
        Y0 + args.size * PIXEL - inset,
    ]
    pixels = 2 * args.size * args.size * len(years)
    output = args.scan_dir / "similarity.parquet"
    call = f"aef_similarity({box}, ?::FLOAT[64], years := {years}, crs := {EPSG})"
    queries = {
        "COPY (FROM aef_similarity(…)) TO parquet": f"COPY (FROM {call}) TO '{output}'",
        "COPY (SELECT x, y, similarity …) TO parquet": (
            f"COPY (SELECT x, y, similarity FROM {call}) TO '{output}'"
        ),
        "ORDER BY similarity DESC LIMIT 10": (
            f"SELECT x, y, similarity FROM {call} ORDER BY similarity DESC LIMIT 10"
        ),
        "count(*) WHERE similarity > 0.5": f"SELECT count(*) FROM {call} WHERE similarity > 0.5",
    }
    rng = np.random.default_rng(0)
    reference = dequantize(rng.integers(-127, 128, 64).astype(np.int8)).astype(np.float32)
    print(
        f"# {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; {pixels:,} pixel-years "
        f"({len(years)} years x 2 tiles of {args.size}², {BLOCK}-px blocks), each query in a "
        "fresh process"
    )
    print(f"{'':46} {'peak RSS':>9} {'before':>8} {'seconds':>8} {'M px/s':>7}  result")
    for label, query in queries.items():
        argument = json.dumps([str(index), query, reference.tolist()])
        try:
            done = subprocess.run(
                [sys.executable, "-c", SCAN_CHILD, argument],
                capture_output=True,
                text=True,
                check=True,
            )
            found = json.loads(done.stdout.strip().splitlines()[-1])
            if label.startswith("COPY"):
                found["result"] = f"{pq.ParquetFile(output).metadata.num_rows:,} rows"
        finally:
            output.unlink(missing_ok=True)
        mib = 1 << 20
        result = found["result"] if isinstance(found["result"], str) else found["result"][:1]
        print(
            f"{label:46} {found['peak'] / mib:7.0f} MiB {found['before'] / mib:5.0f} MiB "
            f"{found['seconds']:8.1f} {pixels / found['seconds'] / 1e6:7.2f}  {result}"
        )


if __name__ == "__main__":
    main()
