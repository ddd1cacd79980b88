"""aefsql against Rasteret's `Collection.sample_points` on the same local files and points.

Rasteret 0.4 needs Python >= 3.12 (the machines run 3.11), so this runs in its own venv:

    python3.12 -m venv /tmp/venv312 && /tmp/venv312/bin/pip install rasteret rasterio .
    cd benchmarks && /tmp/venv312/bin/python bench_rasteret.py [--points 2000]

It reuses the GDAL-written collection of bench_local.py (run that first, same --dir/--size),
builds a Rasteret collection from the same index (its header enrichment timed apart), samples
the same points with both, checks that every value agrees, and prints points/s and the ratio.
"""

from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import rasteret
from bench_local import EPSG, points, write_collection
from pyproj import Transformer

import aefsql

BANDS = [f"A{i:02d}" for i in range(64)]


def rasteret_collection(index: Path, folder: Path):
    """A Rasteret collection of the index's files (absolute paths), COG headers enriched."""
    table = pq.read_table(index)
    paths = pa.array([str(folder / p) for p in table["path"].to_pylist()])
    table = table.set_column(table.schema.get_field_index("path"), "path", paths)
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
        data_source="aef/v1-annual",
        workspace_dir=folder / "rasteret",
        force=True,
    )


def rasteret_values(collection, table: pa.Table) -> np.ndarray:
    """int16 (n, 64) from Rasteret's long output (point_index, band, value); -999 for NULL."""
    out = collection.sample_points(
        table, bands=BANDS, x_column="lon", y_column="lat", geometry_crs=4326, progress=False
    )
    values = np.full((table.num_rows, 64), -999, dtype=np.int16)
    index = out["point_index"].to_numpy()
    band = np.array([int(b[1:]) for b in out["band"].to_pylist()])
    value = out["value"].to_numpy(zero_copy_only=False)
    ok = np.isfinite(value) & (value != -128)
    values[index[ok], band[ok]] = value[ok].astype(np.int16)
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--tiles", type=int, default=2)
    parser.add_argument("--points", type=int, default=2000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/aefsql-bench"))
    args = parser.parse_args()
    to_lonlat = Transformer.from_crs(EPSG, 4326, always_xy=True)
    print(
        f"# rasteret {rasteret.__version__}, {args.points} points, {args.tiles} tiles of "
        f"{args.size} px x 64 bands (local files)"
    )
    print(
        f"{'block':>5} {'points':>9} {'build s':>8} {'rasteret pt/s':>13} {'aefsql pt/s':>11} "
        f"{'aefsql/rasteret':>15} {'values differ':>13}"
    )
    for block in (1024, 256):
        index = write_collection(args.dir, args.size, args.tiles, block)
        start = time.perf_counter()
        collection = rasteret_collection(index, args.dir)
        build = time.perf_counter() - start
        for kind in ("uniform", "clustered"):
            x, y = points(kind, args.points, args.size, args.tiles)
            lon, lat = (np.asarray(v) for v in to_lonlat.transform(x, y))
            table = pa.table({"lon": lon, "lat": lat})
            start = time.perf_counter()
            theirs = rasteret_values(collection, table)
            theirs_s = time.perf_counter() - start
            start = time.perf_counter()
            ours_table = aefsql.sample_points(table, year=2024, catalog=str(index), progress=False)
            ours_s = time.perf_counter() - start
            ours = np.stack(
                [ours_table[b].cast(pa.int16()).fill_null(-999).to_numpy() for b in BANDS], axis=1
            )
            differ = int((ours != theirs).sum())
            print(
                f"{block:>5} {kind:>9} {build:>8.2f} {args.points / theirs_s:>13.0f} "
                f"{args.points / ours_s:>11.0f} {theirs_s / ours_s:>14.2f}x "
                f"{differ:>13}"
            )


if __name__ == "__main__":
    main()
