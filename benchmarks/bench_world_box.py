"""The whole-world box as a user writes it: time and peak memory (VmHWM) in this process.

    PYTHONPATH=$PWD python benchmarks/bench_world_box.py <index.parquet> pixels|zonal|read_area

Run it once per case (a fresh process each, so VmHWM is the case's own). Write the demo
collection first: `aefsql demo` or aefsql.demo.write_demo_collection(folder, tile_px=512).
"""

import sys
import time

import aefsql

WORLD = "[-180, -90, 180, 90]"
WORLD_WKT = "POLYGON((-180 -90, 180 -90, 180 90, -180 90, -180 -90))"


def main() -> None:
    catalog, case = sys.argv[1], sys.argv[2]
    con = aefsql.connect(catalog=catalog, progress=False)
    start = time.perf_counter()
    try:
        if case == "pixels":
            query = f"SELECT count(*) FROM aef_pixels({WORLD}, years := [2023, 2024])"
            out = con.sql(query).fetchall()
        elif case == "zonal":
            con.execute(f"CREATE TABLE w AS SELECT '{WORLD_WKT}'::GEOMETRY AS geom")
            query = "SELECT year, pixels FROM aef_zonal('w', years := [2023, 2024])"
            out = con.sql(query).fetchall()
        else:
            out = aefsql.read_area([-180, -90, 180, 90], 2024, catalog=catalog)
    except aefsql.errors.AefsqlError as exc:
        out = f"refused: {str(exc)[:110]}"
    seconds = time.perf_counter() - start
    with open("/proc/self/status") as status:
        hwm = next(line for line in status if line.startswith("VmHWM")).split()[1]
    print(case, out, f"{seconds:.1f} s", f"VmHWM {int(hwm) // 1024} MiB")


if __name__ == "__main__":
    main()
