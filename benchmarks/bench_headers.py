"""Where headers come from, over HTTP with 50 ms a request: read from each COG, from an aefsql
headers file, or from a collection Rasteret built; requests, bytes and time of the same points,
values checked against GDAL in the same run.

Rasteret needs Python >= 3.12, so this runs in its own venv:

    /root/.pyenv/versions/3.12.1/bin/python3.12 -m venv /tmp/venv312
    /tmp/venv312/bin/pip install rasteret rasterio 'aefsql @ file:///work/main'
    cd /work/main/benchmarks && /tmp/venv312/bin/python bench_headers.py [--points 8]

It reuses bench_local.py's collection (--tiles files of --size px, 1024-px blocks), builds
Rasteret's collection of the same files (`rasteret.build_from_table`, headers read locally),
points its records at the HTTP server's URLs, and samples --points uniform points (isolated
points: the case where a header read is a large share of the requests), best of --repeat runs,
each on a new session (no header cached).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from bench_areas import RangeServer
from bench_local import EPSG, points, time_rasterio, write_collection
from bench_rasteret import BANDS, rasteret_collection
from latency_proxy import LatencyProxy
from pyproj import Transformer

import aefsql


def rasteret_folder(index: Path, folder: Path, out: Path, base_url: str) -> Path:
    """Rasteret's collection of the index's files, its paths turned into `base_url`'s."""
    if out.exists():
        shutil.rmtree(out)
    collection = rasteret_collection(index, folder)
    collection.export(str(out))
    for part in out.rglob("*.parquet"):
        table = pq.read_table(part, partitioning=None)
        urls = [
            base_url + Path(p).relative_to(folder).as_posix() for p in table["path"].to_pylist()
        ]
        column = table.schema.get_field_index("path")
        pq.write_table(table.set_column(column, "path", pa.array(urls)), part)
    return out


def run(index_url: str, table: pa.Table, proxy: LatencyProxy, **options) -> tuple:
    """(seconds, requests, bytes, result) of one sampling on a new session; the catalog's
    own requests are counted too (the same in every run)."""
    proxy.reset()
    start = time.perf_counter()
    out = aefsql.sample_points(table, years=2024, catalog=index_url, progress=False, **options)
    seconds = time.perf_counter() - start
    return seconds, proxy.counts.requests, proxy.counts.bytes_down, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--tiles", type=int, default=4)
    parser.add_argument("--points", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/aefsql-bench"))
    args = parser.parse_args()
    index = write_collection(args.dir, args.size, args.tiles, 1024)
    x, y = points("uniform", args.points, args.size, args.tiles, seed=3)
    lon, lat = (
        np.asarray(v) for v in Transformer.from_crs(EPSG, 4326, always_xy=True).transform(x, y)
    )
    table = pa.table({"lon": lon, "lat": lat})
    _, gdal = time_rasterio(args.dir, args.size, 1024, x, y)
    print(
        f"# {args.points} points over {args.tiles} files of {args.size}x{args.size} px x 64 "
        f"bands, 1024-px blocks, HTTP +{args.latency * 1000:.0f} ms a request, best of "
        f"{args.repeat}"
    )
    print(f"{'headers from':>22} {'requests':>8} {'MB':>7} {'seconds':>7}")
    with RangeServer(args.dir) as server, LatencyProxy(server.port, args.latency) as proxy:
        base = f"http://127.0.0.1:{proxy.port}/"
        catalog = base + index.name
        ours = args.dir / "headers-aefsql.parquet"
        aefsql.write_headers(str(ours), catalog=catalog)
        theirs = rasteret_folder(index, args.dir, args.dir / "collection-rasteret", base)
        sources = {
            "each COG": {},
            "aefsql headers file": {"headers": str(ours)},
            "Rasteret collection": {"headers": str(theirs)},
        }
        for name, options in sources.items():
            best = None
            for _ in range(args.repeat):
                result = run(catalog, table, proxy, **options)
                if best is None or result[0] < best[0]:
                    best = result
            seconds, requests, nbytes, out = best
            values = np.stack([out[b].fill_null(-128).to_numpy() for b in BANDS], axis=1)
            assert np.array_equal(values, gdal), f"{name}: values differ from GDAL's"
            print(f"{name:>22} {requests:>8} {nbytes / 1e6:>7.1f} {seconds:>7.2f}")


if __name__ == "__main__":
    main()
