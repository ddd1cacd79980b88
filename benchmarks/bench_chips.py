"""Chips into a PyTorch DataLoader: aefsql.torch.ChipDataset against a rasterio window-read
dataset, on the same file, locally and over HTTP with a fixed latency per request.

On tile 0 of bench_local.py's collection (GDAL-written: 4096² px x 64 bands, int8, planar,
ZSTD, 1024-px blocks, south-up; ~0.93 GB), N chips of 64 px and of 256 px (one year) centred
on points in 50 clusters of 300 m (centres random in the tile; every chip wholly inside it).
Readers, each through `DataLoader(num_workers=W)` for W in --workers, one epoch:

- aefsql, tile batches: `DataLoader(ds, batch_sampler=ds.tile_batches(B), num_workers=W)`;
- aefsql, random batches: `DataLoader(ds, batch_size=B, shuffle=True, num_workers=W)`, on a
  random subset of --random-batches x B of the points (each batch is read on its own and
  nothing is cached across batches, so its rate does not depend on N; the full N would take
  tens of minutes over HTTP);
- rasterio: a map-style Dataset whose __getitem__ reads the 64 bands of the chip's window
  (`src.read(window=...)`; clipped to the raster and padded with -128 where it would leave
  it, i.e. boundless, without rasterio's slow VRT path), flipped north-up, plus the same
  all-bands mask; one dataset opened per worker process and kept (GDAL's block cache, default
  size, shared by all its reads). `DataLoader(ds, batch_size=B, shuffle=True,
  num_workers=W)`. Twice: with GDAL's defaults (GDAL_NUM_THREADS unset: over /vsicurl/, a
  64-band window inside one block costs 64 requests one after the other) and with
  GDAL_NUM_THREADS=ALL_CPUS (the blocks fetched in parallel); ratios are given against
  both, and "vs best rasterio" against the faster.

Each reader runs in a fresh process (spawned; its DataLoader workers are forked from it, as
Linux's default start method does), so no cache or connection carries over; readers take
turns. The timer covers making the
dataset (aefsql: catalog, locating, headers) and the whole epoch. Over HTTP all go through
latency_proxy.py (+--latency s a request) to bench_areas' Range server in its own process,
GDAL through /vsicurl/ with bench_areas' options (GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR,
CPL_VSIL_CURL_ALLOWED_EXTENSIONS, GDAL_HTTP_MERGE_CONSECUTIVE_RANGES, GDAL_HTTP_MULTIPLEX,
GDAL_INGESTED_BYTES_AT_OPEN, VSI_CACHE; GDAL_HTTP_MULTIRANGE left at its default, parallel
single ranges) and a new URL a run.

Bytes: over HTTP the proxy counts the bytes down (and requests); locally, the rchar of the
run's process tree (its reaped DataLoader workers included). *needed* is the compressed size
of the distinct blocks the run's chips touch (blocks meeting any chip x 64 bands, from the
TIFF's TileOffsets/TileByteCounts through tifffile).

Before timing, aefsql's chips are checked equal to the rasterio dataset's (all 64 bands, every
pixel) for a sample of points of each size, locally and over HTTP.

    python benchmarks/bench_chips.py [--chips 2000,300] [--batch 32,16] [--workers 0,2]
        [--random-batches 8] [--latency 0.05] [--only local,http] [--check 48]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
import traceback
from pathlib import Path

import numpy as np
import pyarrow as pa
import rasterio
import tifffile
import torch
from bench_areas import BLOCK, GDAL_HTTP, RangeServer
from bench_local import EPSG, PIXEL, X0, Y0, write_collection
from latency_proxy import LatencyProxy
from rasterio.windows import Window
from torch.utils.data import DataLoader, Dataset

from aefsql.torch import ChipDataset

YEAR = 2024
TILE = 4096
REL = f"2024/33N/bench{BLOCK}-0.tiff"
NODATA = -128
GDAL_HTTP_CHIPS = {**GDAL_HTTP, "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff"}
GDAL_THREADS = {"GDAL_NUM_THREADS": "ALL_CPUS"}  # GDAL >= 3.6: fetch and decode in parallel
READERS = ("rasterio", "rasterio, GDAL threads", "aefsql tile batches", "aefsql random batches")


# -- the workload --------------------------------------------------------------------------


def chip_pixels(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) in tile 0's file order (south-up: row 0 is the southernmost) of n chip
    centres in 50 clusters of 300 m (30 px), centres random in the tile, every chip inside."""
    rng = np.random.default_rng(seed)
    half = size // 2
    centres = rng.uniform(0, TILE, (50, 2))
    which = rng.integers(0, 50, n)
    rows = np.rint(centres[which, 0] + rng.normal(0, 30, n)).astype(np.int64)
    cols = np.rint(centres[which, 1] + rng.normal(0, 30, n)).astype(np.int64)
    # North-up chip row i is file row r + half - i: file rows r - (size - 1 - half) .. r + half.
    rows = np.clip(rows, size - 1 - half, TILE - 1 - half)
    cols = np.clip(cols, half, TILE - size + half)
    return rows, cols


def points_table(rows, cols) -> pa.Table:
    """UTM pixel centres (south-up: y grows with the row), and the pixel as columns."""
    return pa.table(
        {
            "x": X0 + (cols + 0.5) * PIXEL,
            "y": Y0 + (rows + 0.5) * PIXEL,
            "row": rows,
            "col": cols,
        }
    )


def needed_bytes(tiff: Path, rows, cols, size: int) -> tuple[int, int]:
    """(blocks, compressed bytes) of the distinct blocks the chips meet, all 64 bands."""
    with tifffile.TiffFile(tiff) as f:
        page = f.pages[0]
        counts = np.asarray(page.databytecounts, np.int64)
        across = page.imagewidth // page.tilewidth
        per_band = across * (page.imagelength // page.tilelength)
        bands = page.samplesperpixel
        block = page.tilewidth
    half = size // 2
    r0, r1 = (rows - (size - 1 - half)) // block, (rows + half) // block
    c0, c1 = (cols - half) // block, (cols - half + size - 1) // block
    positions = set()
    for top, bottom, left, right in zip(
        r0.tolist(), r1.tolist(), c0.tolist(), c1.tolist(), strict=True
    ):
        positions.update(
            r * across + c for r in range(top, bottom + 1) for c in range(left, right + 1)
        )
    blocks = [band * per_band + p for band in range(bands) for p in sorted(positions)]
    return len(blocks), int(counts[blocks].sum())


# -- the baseline: rasterio window reads -----------------------------------------------------


class RasterioChips(Dataset):
    """Chip i: the size x size window of `path` centred (as aef_chips centres) on pixel
    (rows[i], cols[i]) of the south-up file, all bands, north-up, -128 outside the raster."""

    def __init__(self, path: str, rows, cols, size: int, env: dict):
        self.path, self.rows, self.cols, self.size, self.env = path, rows, cols, size, env
        self._ds = self._env = self._pid = None

    def __len__(self) -> int:
        return len(self.rows)

    def dataset(self):
        """This process's open dataset (a worker opens its own, once)."""
        if self._pid != os.getpid():
            self._env = rasterio.Env(**self.env)
            self._env.__enter__()
            self._ds = rasterio.open(self.path)
            self._pid = os.getpid()
        return self._ds

    def close(self) -> None:
        if self._pid == os.getpid():
            self._ds.close()
            self._env.__exit__(None, None, None)
        self._ds = self._env = self._pid = None

    def __getitem__(self, i: int) -> dict:
        ds = self.dataset()
        n, half = self.size, self.size // 2
        row, col = int(self.rows[i]), int(self.cols[i])
        south_up = ds.transform.e > 0
        row0 = row - (n - 1 - half) if south_up else row - half
        col0 = col - half
        r0, r1 = max(row0, 0), min(row0 + n, ds.height)
        c0, c1 = max(col0, 0), min(col0 + n, ds.width)
        window = Window(c0, r0, c1 - c0, r1 - r0)
        if (r0, r1, c0, c1) == (row0, row0 + n, col0, col0 + n):
            image = ds.read(window=window)
        else:
            image = np.full((ds.count, n, n), NODATA, np.int8)
            if r1 > r0 and c1 > c0:
                image[:, r0 - row0 : r1 - row0, c0 - col0 : c1 - col0] = ds.read(window=window)
        if south_up:
            image = np.ascontiguousarray(image[:, ::-1])
        return {
            "image": torch.from_numpy(image),
            "mask": torch.from_numpy((image != NODATA).all(axis=0)),
            "row": row,
            "col": col,
        }


# -- one timed run, in a process of its own --------------------------------------------------


def _rchar() -> int:
    """Bytes this process (and its reaped children) read through read syscalls."""
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def run_one(job: dict) -> dict:
    rows, cols, size, batch, workers = (
        job["rows"],
        job["cols"],
        job["size"],
        job["batch"],
        job["workers"],
    )
    # Linux's default (Python < 3.14), which a spawned process does not inherit.
    context = {"multiprocessing_context": "fork"} if workers else {}
    before = _rchar()
    start = time.perf_counter()
    if job["reader"].startswith("rasterio"):
        env = {**job["env"], **(GDAL_THREADS if "threads" in job["reader"] else {})}
        ds = RasterioChips(job["tiff"], rows, cols, size, env)
        loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, **context)
    else:
        ds = ChipDataset(
            points_table(rows, cols),
            size=size,
            years=YEAR,
            crs=EPSG,
            catalog=job["catalog"],
            x_column="x",
            y_column="y",
        )
        if job["reader"] == "aefsql tile batches":
            loader = DataLoader(
                ds, batch_sampler=ds.tile_batches(batch), num_workers=workers, **context
            )
        else:
            loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, **context)
    chips, seen = 0, []
    for b in loader:
        chips += b["image"].shape[0]
        if b["image"].shape[1:] != (64, size, size):
            raise AssertionError(f"{job['reader']}: a batch of shape {tuple(b['image'].shape)}")
        seen.append(np.column_stack([np.asarray(b["row"]), np.asarray(b["col"])]))
    seconds = time.perf_counter() - start
    if isinstance(ds, RasterioChips):
        ds.close()
    del loader
    seen = np.concatenate(seen)
    return {"seconds": seconds, "chips": chips, "rchar": _rchar() - before, "seen": seen}


def _child(job: dict, queue) -> None:
    try:
        queue.put(run_one(job))
    except BaseException:  # noqa: BLE001 (reported to the parent)
        queue.put({"error": traceback.format_exc()})


def in_fresh_process(job: dict) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(job, queue))
    process.start()
    result = queue.get()
    process.join()
    if "error" in result:
        raise RuntimeError(f"{job['reader']} failed:\n{result['error']}")
    return result


# -- checks ----------------------------------------------------------------------------------


def check_equal(catalog: str, tiff: str, env: dict, rows, cols, size: int, where: str) -> None:
    """aefsql's chips (read as one batch) against the rasterio dataset's, value for value."""
    ours = ChipDataset(
        points_table(rows, cols),
        size=size,
        years=YEAR,
        crs=EPSG,
        catalog=catalog,
        x_column="x",
        y_column="y",
    )
    theirs = RasterioChips(tiff, rows, cols, size, env)
    try:
        items = ours.__getitems__(list(range(len(rows))))
        for i, item in enumerate(items):
            expected = theirs[i]
            if not torch.equal(item["image"], expected["image"]):
                raise AssertionError(f"{where}: chip {i} ({size} px) differs from rasterio's")
            if not torch.equal(item["mask"], expected["mask"]) or not item["found"]:
                raise AssertionError(f"{where}: chip {i} ({size} px): mask or found differ")
    finally:
        theirs.close()
    print(f"# {where}: {len(rows)} chips of {size} px equal to rasterio's (64 bands, every pixel)")


# -- main ------------------------------------------------------------------------------------


def run_where(args, where: str, catalog: str, tiff: str, env: dict, proxy) -> list[dict]:
    rows_out = []
    for size, n, batch in zip(args.sizes, args.chips, args.batch, strict=True):
        rows, cols = chip_pixels(n, size)
        pick = np.random.default_rng(1).permutation(n)
        check = pick[: args.check if proxy is None else max(1, args.check // 3)]
        check_equal(catalog, tiff, env, rows[check], cols[check], size, where)
        subset = pick[: args.random_batches * batch]
        for workers in args.workers:
            counter = 0
            for reader in READERS:
                counter += 1
                chosen = subset if reader == "aefsql random batches" else np.arange(n)
                job = {
                    "reader": reader,
                    "rows": rows[chosen],
                    "cols": cols[chosen],
                    "size": size,
                    "batch": batch,
                    "workers": workers,
                    "catalog": catalog,
                    # a new URL a run: GDAL's /vsicurl/ caches outlive a dataset
                    "tiff": f"{tiff}?run={size}-{workers}-{counter}" if proxy else tiff,
                    "env": env,
                }
                load = os.getloadavg()[0]
                if proxy:
                    proxy.reset()
                result = in_fresh_process(job)
                counts = proxy.counts if proxy else None
                seen = result["seen"]
                if sorted(map(tuple, seen.tolist())) != sorted(
                    zip(rows[chosen].tolist(), cols[chosen].tolist(), strict=True)
                ):
                    raise AssertionError(f"{where}: {reader} did not serve each chip once")
                blocks, need = needed_bytes(args.dir / REL, seen[:, 0], seen[:, 1], size)
                got = counts.bytes_down if counts else result["rchar"]
                rows_out.append(
                    {
                        "where": where,
                        "size": size,
                        "workers": workers,
                        "reader": reader,
                        "chips": result["chips"],
                        "seconds": result["seconds"],
                        "rate": result["chips"] / result["seconds"],
                        "load": load,
                        "requests": counts.requests if counts else None,
                        "bytes": got,
                        "needed": need,
                        "blocks": blocks,
                    }
                )
                print_row(rows_out[-1])
    return rows_out


def print_row(row: dict) -> None:
    requests = "" if row["requests"] is None else f"{row['requests']:>9}"
    print(
        f"{row['where']:<10} {row['size']:>4} {row['workers']:>2} {row['reader']:<23} "
        f"{row['chips']:>6} {row['seconds']:>8.2f} {row['rate']:>8.1f} "
        f"{row['bytes'] / 1e6:>9.1f} {row['needed'] / 1e6:>9.1f} "
        f"{row['bytes'] / row['needed']:>6.2f}x {row['load']:>5.1f} {requests}",
        flush=True,
    )


def print_table(rows: list[dict]) -> None:
    """The runs as a Markdown table, each against the rasterio runs of its (where, size, W)."""
    print(
        "\n| where | chip px | W | reader | chips | s | chips/s | vs rasterio | vs best rasterio "
        "| MB read | MB needed | read / needed | requests | load |"
    )
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        group = [
            r
            for r in rows
            if r["reader"].startswith("rasterio")
            and (r["where"], r["size"], r["workers"]) == (row["where"], row["size"], row["workers"])
        ]
        default = next(r["rate"] for r in group if r["reader"] == "rasterio")
        best = max(r["rate"] for r in group)
        requests = "" if row["requests"] is None else str(row["requests"])
        print(
            f"| {row['where']} | {row['size']} | {row['workers']} | {row['reader']} | "
            f"{row['chips']} | {row['seconds']:.2f} | {row['rate']:.1f} | "
            f"{row['rate'] / default:.2f}x | {row['rate'] / best:.2f}x | "
            f"{row['bytes'] / 1e6:.0f} | {row['needed'] / 1e6:.0f} | "
            f"{row['bytes'] / row['needed']:.2f}x | {requests} | {row['load']:.1f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ints = lambda text: [int(v) for v in text.split(",")]  # noqa: E731
    parser.add_argument("--sizes", type=ints, default=[64, 256])
    parser.add_argument("--chips", type=ints, default=[2000, 300])
    parser.add_argument("--batch", type=ints, default=[32, 16])
    parser.add_argument("--workers", type=ints, default=[0, 2])
    parser.add_argument("--random-batches", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--only", default="local,http")
    parser.add_argument("--check", type=int, default=48, help="chips checked a size (local)")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/aefsql-bench"))
    args = parser.parse_args()
    parts = set(args.only.split(","))
    index = write_collection(args.dir, TILE, 2, BLOCK)  # bench_local's; reused when present
    print(
        f"# {os.cpu_count()} cores; tile 0 of {TILE}x{TILE} px x 64 bands, int8, planar, ZSTD, "
        f"{BLOCK}-px blocks, south-up; chips {args.sizes} px, {args.chips} of them, batches "
        f"{args.batch}; random batches: {args.random_batches} batches; torch {torch.__version__}"
        f", rasterio {rasterio.__version__} (GDAL {rasterio.__gdal_version__})"
    )
    print(
        f"{'where':<10} {'size':>4} {'W':>2} {'reader':<23} {'chips':>6} {'seconds':>8} "
        f"{'chips/s':>8} {'MB read':>9} {'MB need':>9} {'read/need':>7} {'load':>5} "
        f"{'requests':>9}"
    )
    start = time.perf_counter()
    rows = []
    if "local" in parts:
        rows += run_where(args, "local", str(index), str(args.dir / REL), {}, None)
    if "http" in parts:
        with RangeServer(args.dir) as server, LatencyProxy(server.port, args.latency) as proxy:
            base = f"http://127.0.0.1:{proxy.port}/"
            where = f"HTTP+{args.latency * 1000:.0f}ms"
            rows += run_where(
                args, where, base + index.name, "/vsicurl/" + base + REL, GDAL_HTTP_CHIPS, proxy
            )
    print_table(rows)
    print(f"# total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
