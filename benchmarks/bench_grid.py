"""aef_grid against aef_zonal over the same cells: the mean embedding per H3 or square cell.

On a GDAL-written tile of bench_local.py's layout (int8 x 64 bands, planar, ZSTD, 1024-px
blocks, south-up), one area of N x N pixels (default 1536², 2.4 M pixels) in EPSG:32633.
For each cell kind, in one run, taking turns:

- *aef_grid*: `FROM aef_grid(box, cell := …, years := 2024, crs := 32633)` to Arrow, on a
  new connection (the catalog read each time, as a user's first query);
- *aef_zonal*: the same cells as polygons, clipped to the area — H3 cells from
  `h3.cell_to_boundary` (their six vertices, as a user would draw them), squares as boxes —
  projected to the area's CRS, in a table handed to `aef_zonal('cells', crs := 32633)` on a
  new connection. The cells are those aef_grid returned (found before the timing).

Both read every block once; the difference is the plan: aef_zonal lays out and owns each
polygon's rows, aef_grid lays the area out once and cuts its runs at the cells. Each run
checks that both count the same pixels in all; squares must agree cell for cell, H3 cells may
differ by a pixel where a centre lies within centimetres of a straight-edged boundary (see
docs/functions.md). Prints the best of --runs for each, and the ratio. With --geometry
'pixel' (or 'point'), aef_grid is timed a third time with `geometry := …`, its `geom` read:
what the cells' outlines (or centres) add.

    PYTHONPATH=$PWD python benchmarks/bench_grid.py [--area 1536] [--runs 3]
        [--cells h3:7,h3:8,h3:9,1000,250,100] [--dir /tmp/aefsql-bench-grid]
        [--geometry pixel]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import h3
import numpy as np
import pyarrow as pa
import shapely
from bench_local import EPSG, PIXEL, X0, Y0, write_collection
from pyproj import Transformer

import aefsql

YEAR = 2024
BLOCK = 1024
SIZE = 2048  # the tile's side, pixels
TO_UTM = Transformer.from_crs(4326, EPSG, always_xy=True)


def area_box(n: int) -> list[float]:
    """n x n pixel centres of the tile, from (100, 150), inset a quarter pixel."""
    inset = PIXEL / 4
    x0, y0 = X0 + 150 * PIXEL + inset, Y0 + 100 * PIXEL + inset
    return [x0, y0, x0 + n * PIXEL - 2 * inset, y0 + n * PIXEL - 2 * inset]


def grid(catalog: str, box: list[float], cell, geometry: str | None = None) -> pa.Table:
    given = f", geometry := '{geometry}'" if geometry else ""
    with aefsql.connect(catalog=catalog) as con:
        return con.sql(
            f"FROM aef_grid({box}, cell := {cell!r}, years := {YEAR}, crs := {EPSG}{given})"
        ).to_arrow_table()


def cell_polygons(cells: list[str], box: list[float], cell) -> list[shapely.Polygon]:
    """Each cell's polygon in EPSG:32633, clipped to the area."""
    area = shapely.box(*box)
    found = []
    for name in cells:
        if isinstance(cell, str):
            lat, lon = np.array(h3.cell_to_boundary(name)).T
            x, y = TO_UTM.transform(lon, lat)
            shape = shapely.Polygon(np.column_stack([x, y]))
        else:
            _, _, x, y = name.split(":")
            shape = shapely.box(float(x), float(y), float(x) + cell, float(y) + cell)
        found.append(shapely.intersection(shape, area))
    return found


def zonal(catalog: str, polygons: list[shapely.Polygon]) -> pa.Table:
    with aefsql.connect(catalog=catalog) as con:
        con.register(
            "cells", pa.table({"i": np.arange(len(polygons)), "geom": shapely.to_wkb(polygons)})
        )
        return con.sql(
            f"SELECT i, pixels, nodata_pixels, embedding "
            f"FROM aef_zonal('cells', years := {YEAR}, crs := {EPSG}) ORDER BY i"
        ).to_arrow_table()


def check(grid_rows: pa.Table, zonal_rows: pa.Table, cell) -> int:
    """The cells whose pixel counts differ (0 for squares); the totals must agree."""
    ours, theirs = grid_rows["pixels"].to_numpy(), zonal_rows["pixels"].to_numpy()
    differ = int((ours != theirs).sum())
    if not isinstance(cell, str) and differ:
        raise AssertionError(f"cell {cell}: {differ} squares count other pixels than aef_zonal")
    if isinstance(cell, str) and ours.sum() != theirs.sum():
        raise AssertionError(f"cell {cell}: {ours.sum()} pixels against aef_zonal's {theirs.sum()}")
    same = ours == theirs
    a = np.array(grid_rows["embedding"].to_pylist(), np.float64)[same]
    b = np.array(zonal_rows["embedding"].to_pylist(), np.float64)[same]
    if not np.array_equal(a, b):
        raise AssertionError(f"cell {cell}: means differ where the pixels agree")
    return differ


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--area", type=int, default=1536, help="area side, pixels")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cells", default="h3:7,h3:8,h3:9,1000,250,100")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/aefsql-bench-grid"))
    parser.add_argument("--geometry", choices=["pixel", "point"], default=None)
    args = parser.parse_args()
    catalog = str(write_collection(args.dir, SIZE, 1, BLOCK))
    box = area_box(args.area)
    print(f"# uptime: {os.popen('uptime').read().strip()}")
    print(
        f"# {os.cpu_count()} cores; one tile of {SIZE}² px x 64 bands, int8, planar, ZSTD, "
        f"{BLOCK}-px blocks (GDAL-written); area {args.area}² px; best of {args.runs}"
    )
    print(
        f"{'cell':>6} {'cells':>6} {'aef_grid s':>10} {'aef_zonal s':>11} "
        f"{'grid speed-up':>13} {'H3 cells off by a pixel':>23}"
        + (f" {'with geom s':>11} {'geom adds':>9}" if args.geometry else "")
    )
    for text in args.cells.split(","):
        cell = text if text.startswith("h3:") else int(text)
        rows = grid(catalog, box, cell)  # warm the page cache; the cells to compare
        polygons = cell_polygons(rows["cell"].to_pylist(), box, cell)
        best = {"grid": float("inf"), "zonal": float("inf"), "geom": float("inf")}
        for _ in range(args.runs):
            for name, action in (
                ("grid", lambda cell=cell: grid(catalog, box, cell)),
                ("zonal", lambda polygons=polygons: zonal(catalog, polygons)),
                *(
                    [("geom", lambda cell=cell: grid(catalog, box, cell, args.geometry))]
                    if args.geometry
                    else []
                ),
            ):
                start = time.perf_counter()
                result = action()
                best[name] = min(best[name], time.perf_counter() - start)
                if name == "zonal":
                    differ = check(rows, result, cell)
        print(
            f"{text:>6} {rows.num_rows:>6} {best['grid']:>10.2f} {best['zonal']:>11.2f} "
            f"{best['zonal'] / best['grid']:>12.2f}x {differ:>23}"
            + (
                f" {best['geom']:>11.2f} {best['geom'] / best['grid'] - 1:>8.0%}"
                if args.geometry
                else ""
            )
        )
    print(f"# uptime: {os.popen('uptime').read().strip()}")


if __name__ == "__main__":
    main()
