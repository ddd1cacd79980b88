"""Peak memory and time of aef_zonal over many small fields: N squares of ~30 m (9 pixels)
scattered over 4 x 4 km of the demo collection (`aefsql demo`'s, written if absent), as a
GEOMETRY table, in one query, in a fresh process.

    python benchmarks/bench_zonal_memory.py [--fields 300000]

Prints the peak RSS before the query (imports, connection, the table) and after, and the
bytes per field this implies: what decides how many fields one machine takes in one query.
"""

from __future__ import annotations

import argparse

import numpy as np
import pyarrow as pa
from demo_index import demo_index, measured

import aefsql
from aefsql.geometry.geo import polygon_wkb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=300_000)
    args = parser.parse_args()
    con = aefsql.connect(catalog=str(demo_index()))
    rng = np.random.default_rng(0)
    lon = 36.80 + rng.random(args.fields) * 0.04
    lat = -1.30 + rng.random(args.fields) * 0.04
    side = 0.0003
    blobs = [
        polygon_wkb(
            np.array([x, x + side, x + side, x, x]), np.array([y, y, y + side, y + side, y])
        )
        for x, y in zip(lon.tolist(), lat.tolist(), strict=True)
    ]
    con.register("squares", pa.table({"id": np.arange(args.fields), "geom": blobs}))
    con.execute("CREATE TEMP TABLE fields AS SELECT id, ST_GeomFromWKB(geom) AS geom FROM squares")
    con.unregister("squares")
    del blobs
    (rows, pixels), seconds, before, after = measured(
        con, "SELECT count(*), sum(pixels) FROM aef_zonal('fields', years := 2024)"
    )
    print(
        f"{rows:,} fields ({pixels:,} pixels) in {seconds:.1f} s: peak RSS {before:,.0f} MiB "
        f"before, {after:,.0f} MiB after, {(after - before) * 1024 / rows:,.2f} KiB a field"
    )


if __name__ == "__main__":
    main()
