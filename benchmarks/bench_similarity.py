"""A similarity map in SQL: aef_pixels(as_vector := true) against the aef_vector idiom and
against rasterio reading the same pixels.

On bench_local.py's collection (GDAL-written: int8 x 64 bands, planar-separate, ZSTD, 1024-px
blocks, south-up; the area of bench_areas.py: N x N pixels, default 2048², not aligned on
blocks), measures in one run, each from a new connection, fetching (row, col, similarity) as
Arrow:

(a) the idiom documented before as_vector:
    `array_cosine_similarity(aef_vector(p), ref)` over `aef_pixels(…) p`;
(b) `array_cosine_similarity(embedding, ref)` over `aef_pixels(…, as_vector := true)`;

and, as the read they both build on, `SELECT count(*), sum(A63) FROM aef_pixels(…)`,

against rasterio's `src.read(window=...)` with GDAL_NUM_THREADS=ALL_CPUS (the read alone,
the baseline of issue 24's ratios). (b)'s similarities are checked against numpy's cosine
over the de-quantized rasterio window in the same run, pixel for pixel; (a)'s against (b)'s.

    python benchmarks/bench_similarity.py [--area 2048] [--runs 2] [--idiom-runs 1]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
from bench_areas import BLOCK, GDAL_THREADS, YEAR, area_box, best_of, rasterio_area
from bench_local import EPSG, write_collection

import aefsql
from aefsql.aef import NODATA, dequantize

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
}


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
    args = parser.parse_args()
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
    for label, table in tables.items():
        if "count" not in label:  # the read alone, in SQL: what (b) adds its vectors to
            check(table, expected, row0, col0, label)
    base = best["rasterio read, 2 threads"]
    print(f"{'':28} {'seconds':>8} {'M px/s':>8} {'vs rasterio':>12}")
    for label, seconds in best.items():
        print(f"{label:28} {seconds:8.2f} {n * n / seconds / 1e6:8.2f} {base / seconds:11.2f}x")
    print("values: (a) and (b) equal numpy's cosine over rasterio's window, pixel for pixel")


if __name__ == "__main__":
    main()
