"""aefsql against Rasteret's `Collection.sample_points`: same local files, same points, same run.

Rasteret 0.4 needs Python >= 3.12 (the project runs 3.11), so this runs in its own venv:

    /root/.pyenv/versions/3.12.1/bin/python3.12 -m venv /tmp/venv312
    /tmp/venv312/bin/pip install rasteret rasterio 'aefsql @ file:///work/main'
    cd /work/main/benchmarks && /tmp/venv312/bin/python bench_rasteret.py [--points 20000]

It writes (or reuses) bench_local.py's GDAL-written collection in --dir, builds a Rasteret
collection of the same files from the same index (COG header enrichment, timed apart from
sampling), samples the same uniform and clustered points with both, checks every value
(int8; nodata -128 is NULL in aefsql), and prints points/s, best of --repeat runs each.
`differ` counts (point, band) values that disagree; `NULL` counts aefsql's NULL values.
"""

from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import rasteret
from bench_local import EPSG, points, write_collection
from pyproj import Transformer

import aefsql

BANDS = [f"A{i:02d}" for i in range(64)]
NULL, MISSING = -999, -1000  # NULL/nodata on either side; no row at all from Rasteret


def rasteret_collection(index: Path, folder: Path):
    """Rasteret's collection of the index's files: absolute hrefs, id/datetime added, enriched."""
    table = pq.read_table(index)
    table = table.set_column(
        table.schema.get_field_index("path"),
        "path",
        pa.array([str(folder / p) for p in table["path"].to_pylist()]),
    )
    table = table.append_column("id", pa.array([str(f) for f in table["fid"].to_pylist()]))
    table = table.append_column(
        "datetime",
        pa.array(
            [datetime.datetime(y, 1, 1) for y in table["year"].to_pylist()], pa.timestamp("us")
        ),
    )
    return rasteret.build_from_table(
        table,
        column_map={"geom": "geometry"},
        href_column="path",
        band_index_map={b: i for i, b in enumerate(BANDS)},
        enrich_cog=True,
    )


def sample_rasteret(collection, table: pa.Table) -> pa.Table:
    """Rasteret's long output: one row (point_index, band, value: float64) per point and band.

    `bbox=` (the points' extent) is passed on to `Collection.subset`: without it Rasteret 0.4.1
    filters records by one OR-ed bbox test per point, an expression so deep that Arrow
    overflows the stack (segfault) from about 10^4 points.
    """
    lon, lat = table["lon"].to_numpy(), table["lat"].to_numpy()
    return collection.sample_points(
        table,
        bands=BANDS,
        x_column="lon",
        y_column="lat",
        geometry_crs=4326,
        progress=False,
        bbox=(lon.min(), lat.min(), lon.max(), lat.max()),
    )


def rasteret_matrix(out: pa.Table, n: int) -> np.ndarray:
    """(n, 64) int16 of Rasteret's values; NULL for nodata, MISSING where no row came back."""
    values = np.full((n, 64), MISSING, dtype=np.int16)
    value = out["value"].to_numpy()
    value = np.where(np.isnan(value) | (value == -128), NULL, value)
    band = pc.cast(pc.utf8_slice_codeunits(out["band"], 1), pa.int64()).to_numpy()
    values[out["point_index"].to_numpy(), band] = value.astype(np.int16)
    return values


def sample_aefsql(index: Path, table: pa.Table) -> pa.Table:
    return aefsql.sample_points(table, years=2024, catalog=str(index), progress=False)


def aefsql_matrix(out: pa.Table) -> np.ndarray:
    return np.stack([out[b].cast(pa.int16()).fill_null(NULL).to_numpy() for b in BANDS], axis=1)


def best_of(repeat: int, run, *args):
    """Best wall time of `repeat` calls of run(*args), and the last call's result."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        result = run(*args)
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--tiles", type=int, default=2)
    parser.add_argument("--points", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/aefsql-bench"))
    args = parser.parse_args()
    to_lonlat = Transformer.from_crs(EPSG, 4326, always_xy=True)
    n = args.points
    print(
        f"# rasteret {rasteret.__version__}, aefsql {aefsql.__version__}: {n} points, "
        f"{args.tiles} tiles of {args.size}x{args.size} px x 64 bands, best of {args.repeat}"
    )
    print(
        f"{'block':>5} {'points':>9} {'build s':>7} {'rasteret s':>10} {'rasteret pt/s':>13} "
        f"{'aefsql s':>8} {'aefsql pt/s':>11} {'aefsql/rasteret':>15} {'differ':>6} {'NULL':>5}"
    )
    for block in (1024, 256):
        index = write_collection(args.dir, args.size, args.tiles, block)
        start = time.perf_counter()
        collection = rasteret_collection(index, args.dir)
        build_s = time.perf_counter() - start
        for kind in ("uniform", "clustered"):
            x, y = points(kind, n, args.size, args.tiles)
            lon, lat = (np.asarray(v) for v in to_lonlat.transform(x, y))
            table = pa.table({"lon": lon, "lat": lat})
            theirs_s, theirs = best_of(args.repeat, sample_rasteret, collection, table)
            ours_s, ours = best_of(args.repeat, sample_aefsql, index, table)
            theirs, ours = rasteret_matrix(theirs, n), aefsql_matrix(ours)
            differ = ours != theirs
            print(
                f"{block:>5} {kind:>9} {build_s:>7.2f} {theirs_s:>10.2f} {n / theirs_s:>13.0f} "
                f"{ours_s:>8.2f} {n / ours_s:>11.0f} {theirs_s / ours_s:>14.2f}x "
                f"{int(differ.sum()):>6} {int((ours == NULL).sum()):>5}"
            )
            if differ.any():
                print(
                    f"      DISAGREE: {int(differ.any(axis=1).sum())} of {n} points, "
                    f"{int((theirs == MISSING).sum())} values missing from Rasteret's output, "
                    f"{int((theirs == NULL).sum())} NULL in Rasteret"
                )


if __name__ == "__main__":
    main()
