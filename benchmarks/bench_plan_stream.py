"""aef_pixels over an area of many tiles: time to the first row and VmHWM, one process.

    PYTHONPATH=$PWD python benchmarks/bench_plan_stream.py write FOLDER TILES_ACROSS
    PYTHONPATH=$PWD python benchmarks/bench_plan_stream.py first-row|all FOLDER/index.parquet

`write` makes a collection of TILES_ACROSS² tiles of 4096² px, one band (A00, a constant:
planning, not decoding, is measured), 256-px blocks, side by side in EPSG:32633: each tile
has 4096 rows x 16 block columns = 65,536 chunks. `first-row` runs `SELECT * FROM
aef_pixels(<box of them all>, bands := ['A00']) LIMIT 1` and prints its time and VmHWM;
`all` runs `SELECT count(*), sum(A00)` of the same (every pixel streamed).
Run `first-row` with PYTHONPATH of the tree to measure (a fresh process each), e.g. the
branch's and main's, on the same collection.
"""

import sys
import time
from pathlib import Path

import numpy as np
from pyproj import Transformer

SIZE, BLOCK, PIXEL, EPSG = 4096, 256, 10.0, 32633
WEST, SOUTH = 300000.0, 4900000.0


def write(folder: Path, across: int) -> None:
    from aefsql.writer import TileEntry, write_aef_cog, write_index

    folder.mkdir(parents=True, exist_ok=True)
    data = np.full((1, SIZE, SIZE), 7, np.int8)
    entries = []
    for i in range(across):
        for j in range(across):
            west, south = WEST + i * SIZE * PIXEL, SOUTH + j * SIZE * PIXEL
            rel = f"2024/33N/t{i}-{j}.tiff"
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            transform = (PIXEL, 0.0, west, 0.0, PIXEL, south)
            write_aef_cog(folder / rel, data, epsg=EPSG, transform=transform, block_size=BLOCK)
            east, north = west + SIZE * PIXEL, south + SIZE * PIXEL
            entries.append(TileEntry(2024, rel, EPSG, west, south, east, north))
    write_index(folder / "index.parquet", entries)


def run(index: str, everything: bool) -> None:
    import aefsql

    index_folder = Path(index).parent
    across = int(np.sqrt(len(list(index_folder.glob("2024/33N/*.tiff")))))
    span = across * SIZE * PIXEL
    # The box of all tiles, 1 m inside their outer edges.
    to_lonlat = Transformer.from_crs(EPSG, 4326, always_xy=True)
    box = [WEST + 1, SOUTH + 1, WEST + span - 1, SOUTH + span - 1]
    con = aefsql.connect(catalog=index, progress=False)
    pixels = f"aef_pixels({box}, years := 2024, crs := {EPSG}, bands := ['A00'], max_bytes := 1e12)"
    if everything:
        query = f"SELECT count(*), sum(A00) FROM {pixels}"
    else:
        query = f"SELECT x, y, A00 FROM {pixels} LIMIT 1"
    start = time.perf_counter()
    row = con.sql(query).fetchall()
    seconds = time.perf_counter() - start
    with open("/proc/self/status") as status:
        hwm = next(line for line in status if line.startswith("VmHWM")).split()[1]
    lon, lat = to_lonlat.transform(box[0], box[1])
    print(
        f"{across * across} tiles ({across * across * SIZE * 16:,} chunks) from "
        f"lon/lat {lon:.3f} {lat:.3f}: {'all' if everything else 'first row'} {row} in "
        f"{seconds:.1f} s, "
        f"VmHWM {int(hwm) // 1024} MiB"
    )


def main() -> None:
    if sys.argv[1] == "write":
        write(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        run(sys.argv[2], everything=sys.argv[1] == "all")


if __name__ == "__main__":
    main()
