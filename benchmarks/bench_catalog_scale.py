"""What a catalog costs to load, as it grows, and what a catalog bomb costs.

A legit catalog of N rows (distinct paths, 0.75° boxes spread over the globe, nine years):
registering it (a local catalog is read, checked and normalized then), `aef_index()` and the
first `aef_locate` (the tile table and its grid), each in a fresh child process, against the
baseline of reading the same file with pyarrow in the same child. Then a catalog bomb: N rows
of constant columns (a few hundred KB of Parquet), served over HTTP on 127.0.0.1, queried
with aef_index() and aef_locate: time, outcome and peak memory (VmHWM) of the child.

    python benchmarks/bench_catalog_scale.py --rows 1000000 --bomb-rows 10000000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent


def legit_catalog(path: Path, rows: int) -> None:
    rng = np.random.default_rng(0)
    west = rng.uniform(-179, 178, rows).round(4)
    south = rng.uniform(-80, 79, rows).round(4)
    zone = ((west + 180) // 6 + 1).astype(int)
    years = 2017 + np.arange(rows) % 9
    table = pa.table(
        {
            "fid": np.arange(1, rows + 1),
            "year": years.astype(np.int32),
            "path": [
                f"{y}/{z}N/tile{i:08d}.tiff"
                for i, (y, z) in enumerate(zip(years, zone, strict=True))
            ],
            "crs": [f"EPSG:326{z:02d}" for z in zone],
            "wgs84_west": west,
            "wgs84_south": south,
            "wgs84_east": west + 0.75,
            "wgs84_north": south + 0.75,
        }
    )
    pq.write_table(table, path, compression="zstd")


def bomb_catalog(path: Path, rows: int, tile: str = "2023/33N/tile.tiff") -> None:
    """N identical rows (no fid: aefsql numbers them): Parquet's dictionary and run-length
    encodings make them a few hundred KB."""
    chunk = min(rows, 1_000_000)
    table = pa.table(
        {
            "year": pa.array(np.full(chunk, 2023, np.int32)),
            "path": pa.DictionaryArray.from_arrays(np.zeros(chunk, np.int32), [tile]).cast(
                pa.string()
            ),
            "wgs84_west": np.full(chunk, 12.0),
            "wgs84_south": np.full(chunk, 45.0),
            "wgs84_east": np.full(chunk, 12.75),
            "wgs84_north": np.full(chunk, 45.75),
        }
    )
    with pq.ParquetWriter(path, table.schema, compression="zstd") as out:
        for start in range(0, rows, chunk):
            out.write_table(table.slice(0, min(chunk, rows - start)))


CHILD = textwrap.dedent(
    """
    import json, sys, time
    import pyarrow.parquet as pq
    catalog, step = sys.argv[1], sys.argv[2]
    out = {}
    if step == "baseline":
        started = time.perf_counter()
        pq.read_table(catalog)
        out["seconds"] = time.perf_counter() - started
    else:
        import aefsql
        started = time.perf_counter()
        try:
            con = aefsql.connect(catalog=catalog)
            out["connect"] = time.perf_counter() - started
            con.execute("SELECT count(*) FROM aef_index()").fetchall()
            out["index"] = time.perf_counter() - started - out["connect"]
            mark = time.perf_counter()
            con.execute("SELECT aef_locate(12.3, 45.3, 2023)").fetchall()
            out["locate"] = time.perf_counter() - mark
            out["outcome"] = "read"
        except Exception as exc:
            out["outcome"] = str(exc).splitlines()[0][:160]
        out["seconds"] = time.perf_counter() - started
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            out["vmhwm_mb"] = int(line.split()[1]) / 1024
    print(json.dumps(out))
    """
)


def child(catalog: str, step: str) -> dict:
    run = subprocess.run(
        [sys.executable, "-c", CHILD, catalog, step], capture_output=True, text=True, check=True
    )
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--bomb-rows", type=int, default=10_000_000)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE.parent / "tests"))
    from servers import http_range_server

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        legit = folder / "legit.parquet"
        legit_catalog(legit, args.rows)
        base = child(str(legit), "baseline")
        load = child(str(legit), "aefsql")
        print(f"legit catalog, {args.rows:,} rows, {legit.stat().st_size / 1e6:.1f} MB")
        print(f"  pyarrow read_table      {base['seconds']:7.2f} s  (baseline)")
        for key in ("connect", "index", "locate"):
            if key in load:
                ratio = load[key] / base["seconds"]
                print(f"  aefsql {key:<16} {load[key]:7.2f} s  {ratio:6.1f}× baseline")
        print(f"  outcome: {load['outcome']}; peak memory {load['vmhwm_mb']:.0f} MB")

        bomb = folder / "bomb.parquet"
        bomb_catalog(bomb, args.bomb_rows)
        with http_range_server(folder) as server:
            result = child(server.base_url + "bomb.parquet", "aefsql")
        size = bomb.stat().st_size / 1e3
        print(f"bomb, {args.bomb_rows:,} constant rows, {size:.0f} KB, over HTTP")
        print(f"  {result['seconds']:.2f} s, peak memory {result['vmhwm_mb']:.0f} MB")
        print(f"  outcome: {result['outcome']}")

        long = folder / "long.parquet"
        bomb_catalog(long, 120_000, tile="a" * 10_000 + ".tiff")
        result = child(str(long), "aefsql")
        print(f"one 10 KB path in 120,000 rows, {long.stat().st_size / 1e3:.0f} KB, local")
        print(f"  {result['seconds']:.2f} s, peak memory {result['vmhwm_mb']:.0f} MB")
        print(f"  outcome: {result['outcome']}")


if __name__ == "__main__":
    main()
