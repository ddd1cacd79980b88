"""aef_zonal(on_error := 'null') when a file cannot be read: N fields of ~30 m on the demo
collection's Nairobi tile, whose 2024 file is missing (header) or has its blocks zeroed
(blocks), in a copy of the collection (`aefsql demo`'s, written if absent).

    python benchmarks/bench_zonal_errors.py [--fields 2000]

Prints the seconds of 2023 alone (every file readable), of 2023 and 2024 with each kind of
broken 2024 file, and how many field-years came back with an aef_error (all of 2024's).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from demo_index import demo_index

import aefsql
from aefsql.geometry.geo import polygon_wkb

TILE = "2024/37S/demo2-0000000000-0000000000.tiff"


def fields(n: int) -> pa.Table:
    rng = np.random.default_rng(0)
    lon = 36.80 + rng.random(n) * 0.04
    lat = -1.31 + rng.random(n) * 0.04
    side = 0.0003
    blobs = [
        polygon_wkb(
            np.array([x, x + side, x + side, x, x]), np.array([y, y, y + side, y + side, y])
        )
        for x, y in zip(lon.tolist(), lat.tolist(), strict=True)
    ]
    return pa.table({"id": np.arange(n), "geom": blobs})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=2000)
    args = parser.parse_args()
    demo = demo_index().parent
    table = fields(args.fields)
    with tempfile.TemporaryDirectory() as folder:
        for kind in ("header", "blocks"):
            copy = Path(folder) / kind
            shutil.copytree(demo, copy)
            path = copy / TILE
            if kind == "header":
                path.unlink()
            else:
                raw = bytearray(path.read_bytes())
                raw[len(raw) // 4 :] = bytes(len(raw) - len(raw) // 4)
                path.write_bytes(raw)
            con = aefsql.connect(catalog=str(copy / "index.parquet"))
            con.register("fields", table)
            for years in ("2023", "[2023, 2024]"):
                start = time.perf_counter()
                ((rows, errors),) = con.sql(
                    f"SELECT count(*), count(aef_error) FROM aef_zonal('fields', years := {years}, "
                    "on_error := 'null')"
                ).fetchall()
                print(
                    f"{kind:6s} years {years:12s} {time.perf_counter() - start:6.2f} s  "
                    f"{rows:,} field-years, {errors:,} with aef_error"
                )
            con.close()


if __name__ == "__main__":
    main()
