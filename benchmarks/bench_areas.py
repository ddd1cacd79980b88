"""Areas: aef_pixels against rasterio window reads, aef_zonal against rasterio and exactextract.

On the benchmark collection of bench_local.py (GDAL-written: int8 x 64 bands, planar-separate,
ZSTD, 1024-px blocks, south-up), measures in one run:

1. one area of N x N pixels (default 2048², not aligned on blocks: 3 x 3 blocks a band),
   every band: `SELECT * FROM aef_pixels(box, crs := 32633)` fetched as Arrow, aefsql's Python
   kernels alone (area_chunks + chunk_pixels, no DuckDB), and rasterio's
   `src.read(window=...)` (GDAL's defaults and GDAL_NUM_THREADS=ALL_CPUS); locally, and over
   HTTP through a proxy adding 50 ms to every request (GDAL via /vsicurl/). aefsql's values
   are checked equal to GDAL's, pixel for pixel and band for band, in the same run.
2. P parcels (default 1000; star-shaped, 1-100 ha, log-uniform) in one tile: aef_zonal
   against a rasterio loop (rasterio.mask.mask per polygon, then the mean of the
   de-quantized valid pixels: aef_zonal's pixel-centre rule, checked equal) and exactextract
   (mean of each band; it weights partial pixels, so its values are compared loosely;
   exactextract 0.3 refuses south-up rasters, so each band is handed to it flipped), and
   the floor under all three: the whole tile read with GDAL's threads (the parcels touch
   every block). Readers take turns, best of --runs.

    python benchmarks/bench_areas.py [--area 2048] [--parcels 1000] [--latency 0.05]
        [--runs 2] [--only local,http,zonal] [--profile]

`--profile` prints cProfile's view of the kernels, and with the zonal part aef_zonal's time
stage by stage (cProfile sees the main thread only: decode threads show as waiting). The
whole run takes 5-6 minutes on an idle 2-core machine; each part can run alone (`--only`).
Needs `pip install exactextract` for the zonal part.
"""

from __future__ import annotations

import argparse
import cProfile
import email.utils
import http.server
import multiprocessing
import os
import pstats
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pyarrow as pa
import rasterio
import rasterio.mask
import shapely
from bench_local import EPSG, PIXEL, X0, Y0, write_collection
from latency_proxy import LatencyProxy
from rasterio.windows import Window

import aefsql
from aefsql.geometry.areas import area_from
from aefsql.kernels.means import zonal_means
from aefsql.kernels.pixels import area_chunks, areas_chunks, chunk_pixels
from aefsql.session import open_session

YEAR = 2024
BLOCK = 1024
GDAL_HTTP = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tiff",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_MULTIPLEX": "YES",
    "GDAL_INGESTED_BYTES_AT_OPEN": "65536",
    "VSI_CACHE": "TRUE",
}
GDAL_THREADS = {"GDAL_NUM_THREADS": "ALL_CPUS"}  # GDAL >= 3.6: decode (and fetch) in parallel


# -- an HTTP server with Range support, in a process of its own -----------------------------


class RangeServer:
    """Static files on 127.0.0.1 with single Range requests, ETag, Last-Modified and If-Match;
    reads only the bytes asked for (tests/servers.py reads the whole file per request)."""

    def __init__(self, folder: Path):
        context = multiprocessing.get_context("spawn")
        self._port = context.Value("i", 0)
        self._ready = context.Event()
        self._process = context.Process(
            target=_serve_files, args=(str(folder), self._port, self._ready), daemon=True
        )

    def __enter__(self) -> RangeServer:
        self._process.start()
        if not self._ready.wait(10):
            raise RuntimeError("range server did not start")
        return self

    def __exit__(self, *exc) -> None:
        self._process.terminate()
        self._process.join(5)

    @property
    def port(self) -> int:
        return self._port.value


def _serve_files(folder: str, port, ready) -> None:
    root = Path(folder)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_HEAD(self):
            self._answer(body=False)

        def do_GET(self):
            self._answer(body=True)

        def _answer(self, body: bool):
            path = root / urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
            if not path.is_file():
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            stat = path.stat()
            etag = f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'
            if self.headers.get("If-Match") not in (None, "*", etag):
                self.send_response(412)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start, end, status = 0, stat.st_size, 200
            wanted = self.headers.get("Range")
            if wanted and wanted.startswith("bytes=") and "," not in wanted:
                first, _, last = wanted[6:].partition("-")
                if first:
                    start, end = int(first), min(stat.st_size, int(last) + 1 if last else end)
                else:
                    start = max(0, stat.st_size - int(last))
                status = 206
            self.send_response(status)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", email.utils.formatdate(stat.st_mtime, usegmt=True))
            self.send_header("Content-Length", str(end - start))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{stat.st_size}")
            self.end_headers()
            if body:
                with open(path, "rb") as f:
                    self.wfile.write(os.pread(f.fileno(), end - start, start))

    class Server(http.server.ThreadingHTTPServer):
        request_queue_size = 1024
        daemon_threads = True

    server = Server(("127.0.0.1", 0), Handler)
    port.value = server.server_address[1]
    ready.set()
    server.serve_forever()


# -- 1. one area -----------------------------------------------------------------------------


def area_box(row0: int, col0: int, n: int) -> list[float]:
    """The UTM box whose pixel centres are rows row0.. and cols col0.. (n each) of tile 0,
    inset a quarter pixel so that no centre lies on an edge."""
    inset = PIXEL / 4
    return [
        X0 + col0 * PIXEL + inset,
        Y0 + row0 * PIXEL + inset,
        X0 + (col0 + n) * PIXEL - inset,
        Y0 + (row0 + n) * PIXEL - inset,
    ]


def best_of(runs: int, action):
    """(best seconds, result of the last run)."""
    best, result = float("inf"), None
    for _ in range(runs):
        start = time.perf_counter()
        result = action()
        best = min(best, time.perf_counter() - start)
    return best, result


def aefsql_area(catalog: str, box: list[float]) -> pa.Table:
    """End to end: a new connection (catalog read, no cache), the query, the Arrow table."""
    con = aefsql.connect(catalog=catalog)
    try:
        return con.sql(
            f"SELECT * FROM aef_pixels({box}, years := {YEAR}, crs := {EPSG})"
        ).to_arrow_table()
    finally:
        con.close()


def aefsql_kernels(catalog: str, box: list[float]):
    """aefsql's Python kernels alone (no DuckDB, no Arrow): the values as numpy arrays."""
    session = open_session(catalog)
    chunks = area_chunks(session, area_from(box, EPSG), [YEAR])
    return chunk_pixels(session, chunks, list(range(64)))


def aefsql_read_area(catalog: str, box: list[float]):
    """The Python path: aefsql.read_area (a new session) as an xarray.DataArray."""
    return aefsql.read_area(box, YEAR, crs=EPSG, catalog=catalog)


def area_as_window(array, south_up: bool) -> np.ndarray:
    """read_area's north-up (1, 64, n, n) array in the file's row order, as rasterio gives."""
    values = np.asarray(array.values[0], dtype=np.int16)
    return values[:, ::-1] if south_up else values


def as_window(table: pa.Table, row0: int, col0: int, n: int) -> np.ndarray:
    """aef_pixels' rows as a (64, n, n) array laid out as rasterio's window read; pixels it
    did not return stay -99, a value int8 data cannot take."""
    rows = table["row"].to_numpy() - row0
    cols = table["col"].to_numpy() - col0
    if table.num_rows != n * n or not ((rows >= 0) & (rows < n) & (cols >= 0) & (cols < n)).all():
        raise AssertionError(f"aef_pixels returned {table.num_rows} rows, not the {n}² pixels")
    out = np.full((64, n, n), -99, np.int16)
    for band in range(64):
        out[band, rows, cols] = table[f"A{band:02d}"].fill_null(-128).to_numpy()
    return out


def rasterio_area(path: str, row0: int, col0: int, n: int, env: dict) -> np.ndarray:
    with rasterio.Env(**env), rasterio.open(path) as ds:
        return ds.read(window=Window(col0, row0, n, n))


def run_area(args, catalog: str, tiff: str, where: str, proxy: LatencyProxy | None) -> None:
    n, row0, col0 = args.area, args.offset[0], args.offset[1]
    box = area_box(row0, col0, n)
    gdal_base = GDAL_HTTP if proxy else {}
    counter = 0

    def url() -> str:  # a new URL each run: GDAL's /vsicurl/ cache lives across opens
        nonlocal counter
        counter += 1
        return f"{tiff}?run={counter}" if proxy else tiff

    readers = {  # label: (timed action, its result as rasterio's window array)
        "rasterio": (lambda: rasterio_area(url(), row0, col0, n, gdal_base), None),
        "rasterio, 2 threads": (
            lambda: rasterio_area(url(), row0, col0, n, {**gdal_base, **GDAL_THREADS}),
            None,
        ),
        "aefsql SQL -> Arrow": (
            lambda: aefsql_area(catalog, box),
            lambda table: as_window(table, row0, col0, n),
        ),
        "aefsql kernels": (lambda: aefsql_kernels(catalog, box), None),
        "aefsql read_area": (
            lambda: aefsql_read_area(catalog, box),
            lambda array: area_as_window(array, south_up=True),  # bench_local writes south-up
        ),
    }
    best = dict.fromkeys(readers, float("inf"))
    counts = {}
    reference = None
    load = os.getloadavg()[0]
    # Readers take turns, run after run: a load that comes and goes touches them all.
    for _ in range(args.runs):
        for label, (action, as_array) in readers.items():
            if proxy:
                proxy.reset()
            start = time.perf_counter()
            result = action()
            best[label] = min(best[label], time.perf_counter() - start)
            counts[label] = proxy.counts if proxy else None
            if label == "aefsql kernels":
                values = np.full((64, n, n), -99, np.int16)
                values[:, result.row - row0, result.col - col0] = result.values
            else:
                values = as_array(result) if as_array else result
            del result
            if reference is None:
                reference = values
            elif not np.array_equal(values, reference):
                raise AssertionError(f"{where}: {label} and GDAL disagree")
            del values
    baseline = min(best["rasterio"], best["rasterio, 2 threads"])
    print(
        f"\n# {where}: {n}x{n} px x 64 bands at row {row0}, col {col0} "
        f"({n * n:,} pixels; values equal to GDAL's), best of {args.runs}; "
        f"load average {load:.1f} -> {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'reader':<22} {'seconds':>8} {'Mpx/s':>7} {'vs best rasterio':>16}"
        + (f" {'requests':>8} {'MB down':>8}" if proxy else "")
    )
    for label, seconds in best.items():
        rate = n * n / seconds / 1e6
        line = f"{label:<22} {seconds:>8.2f} {rate:>7.2f} {baseline / seconds:>15.2f}x"
        if proxy:
            line += f" {counts[label].requests:>8} {counts[label].bytes_down / 1e6:>8.1f}"
        print(line)


def profile_kernels(catalog: str, args) -> None:
    box = area_box(args.offset[0], args.offset[1], args.area)
    aefsql_kernels(catalog, box)  # warm the page cache and the imports
    profiler = cProfile.Profile()
    profiler.enable()
    aefsql_kernels(catalog, box)
    profiler.disable()
    print("\n# cProfile of aefsql's kernels for the area (main thread; tottime)")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


# -- 2. zonal statistics ---------------------------------------------------------------------


def parcels(count: int, size: int, seed: int = 0) -> list[shapely.Polygon]:
    """Star-shaped polygons of 5-11 vertices, 1-100 ha (log-uniform), inside tile 0."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        hectares = np.exp(rng.uniform(0, np.log(100)))
        k = int(rng.integers(5, 12))
        angles = np.sort(rng.uniform(0, 2 * np.pi, k))
        radii = rng.uniform(0.5, 1.0, k)
        ring = np.column_stack([radii * np.cos(angles), radii * np.sin(angles)])
        ring *= np.sqrt(hectares * 1e4 / shapely.Polygon(ring).area)
        margin = 2 * np.abs(ring).max()
        centre = [
            X0 + rng.uniform(margin, size * PIXEL - margin),
            Y0 + rng.uniform(margin, size * PIXEL - margin),
        ]
        out.append(shapely.Polygon(ring + centre))
    return out


def dequantize(values: np.ndarray) -> np.ndarray:
    v = values.astype(np.float64)
    return np.sign(v) * (np.abs(v) / 127.5) ** 2


def zonal_aefsql(catalog: str, polygons: list[shapely.Polygon]) -> pa.Table:
    con = aefsql.connect(catalog=catalog)
    try:
        con.register(
            "parcels",
            pa.table({"parcel": np.arange(len(polygons)), "geom": shapely.to_wkb(polygons)}),
        )
        return con.sql(
            f"SELECT parcel, pixels, nodata_pixels, embedding "
            f"FROM aef_zonal('parcels', years := {YEAR}, crs := {EPSG})"
        ).to_arrow_table()
    finally:
        con.close()


def zonal_rasterio(tiff: str, polygons: list[shapely.Polygon]):
    """Per polygon, with one dataset open (GDAL's block cache kept across polygons): the
    valid pixels whose centres lie inside, their mean de-quantized embedding and their mean
    int8 values (for the comparison with exactextract)."""
    valid_counts, means, raw_means = [], [], []
    with rasterio.open(tiff) as ds:
        for polygon in polygons:
            data, _ = rasterio.mask.mask(
                ds, [shapely.geometry.mapping(polygon)], crop=True, filled=True, nodata=-128
            )
            inside = data[:, data[0] != -128]  # (64, pixels); AEF masks all bands together
            valid_counts.append(inside.shape[1])
            means.append(dequantize(inside).mean(axis=1))
            raw_means.append(inside.mean(axis=1))
    return np.array(valid_counts), np.array(means), np.array(raw_means)


def zonal_exactextract(tiff: str, polygons: list[shapely.Polygon]) -> np.ndarray:
    """exactextract's coverage-weighted mean of each band, (polygons, 64)."""
    from exactextract import exact_extract
    from exactextract.raster import RasterioRasterSource

    class NorthUpSource(RasterioRasterSource):
        """exactextract 0.3 reads south-up rasters as an inverted extent ("Incompatible
        extents"): present the band north-up, flipping each window it reads."""

        def res(self):
            return abs(self.ds.transform.a), abs(self.ds.transform.e)

        def extent(self):
            b = self.ds.bounds
            return b.left, min(b.bottom, b.top), b.right, max(b.bottom, b.top)

        def read_window(self, x0, y0, nx, ny):
            if self.ds.transform.e < 0:
                return super().read_window(x0, y0, nx, ny)
            window = Window(x0, self.ds.height - y0 - ny, nx, ny)
            return self.ds.read(self.band_idx, window=window, masked=True)[::-1]

    features = [
        {"type": "Feature", "properties": {"parcel": i}, "geometry": shapely.geometry.mapping(p)}
        for i, p in enumerate(polygons)
    ]
    with rasterio.open(tiff) as ds:
        sources = [NorthUpSource(ds, band + 1, name=f"A{band:02d}") for band in range(64)]
        result = exact_extract(sources, features, ["mean"], include_cols=["parcel"])
    by_parcel = {f["properties"]["parcel"]: f["properties"] for f in result}
    return np.array(
        [[by_parcel[i][f"A{b:02d}_mean"] for b in range(64)] for i in range(len(polygons))]
    )


def rasterio_tile(tiff: str) -> None:
    """The floor under any zonal reader here: every block of the tile read and decoded (the
    parcels touch them all), with GDAL's threads."""
    with rasterio.Env(**GDAL_THREADS), rasterio.open(tiff) as ds:
        ds.read()


def run_zonal(args, catalog: str, tiff: str) -> None:
    polygons = parcels(args.parcels, args.size)
    areas_ha = np.array([p.area for p in polygons]) / 1e4
    print(
        f"\n# {len(polygons)} parcels in one tile: {areas_ha.min():.1f}-{areas_ha.max():.1f} ha, "
        f"median {np.median(areas_ha):.1f} ha; best of {args.runs}, readers taking turns "
        f"(warm disk); load average {os.getloadavg()[0]:.1f}"
    )
    readers = {
        "aef_zonal (SQL -> Arrow)": lambda: zonal_aefsql(catalog, polygons),
        "rasterio mask + mean": lambda: zonal_rasterio(tiff, polygons),
        "exactextract mean": lambda: zonal_exactextract(tiff, polygons),
        "rasterio: whole tile, 2 thr": lambda: rasterio_tile(tiff),
    }
    best, results = dict.fromkeys(readers, float("inf")), {}
    for _ in range(args.runs):
        for label, read in readers.items():
            seconds, results[label] = best_of(1, read)
            best[label] = min(best[label], seconds)
    ours = results["aef_zonal (SQL -> Arrow)"]
    counts, means, raw_means = results["rasterio mask + mean"]
    ee = results["exactextract mean"]

    pixels = np.asarray(ours["pixels"]) - np.asarray(ours["nodata_pixels"])
    if not np.array_equal(pixels, counts):
        raise AssertionError("aef_zonal and rasterio count different pixels")
    embedding = np.array(ours["embedding"].to_pylist(), dtype=np.float64)
    error = np.abs(embedding - means).max()
    if error > 1e-6:
        raise AssertionError(f"aef_zonal and rasterio means differ by up to {error}")
    # exactextract weights pixels by the fraction the polygon covers: not the same numbers.
    ee_diff = np.abs(ee - raw_means)
    total = int(np.asarray(ours["pixels"]).sum())
    ours_s = best["aef_zonal (SQL -> Arrow)"]
    print(f"{'reader':<28} {'seconds':>8} {'Mpx/s':>6} {'parcels/s':>9} {'aef_zonal speed-up':>18}")
    for label, seconds in best.items():
        print(
            f"{label:<28} {seconds:>8.2f} {total / seconds / 1e6:>6.2f} "
            f"{len(polygons) / seconds:>9.1f} {seconds / ours_s:>17.2f}x"
        )
    print(
        f"# {total:,} pixels (Mpx/s: of these, for every reader); aef_zonal = rasterio: same "
        f"pixel counts, means within {error:.1e}; exactextract's int8 means vs the pixel-centre "
        f"ones: median |diff| {np.median(ee_diff):.2f}, max {ee_diff.max():.2f} "
        f"(of -127..127); load average now {os.getloadavg()[0]:.1f}"
    )
    if args.profile:
        profile_zonal(catalog, polygons)


def profile_zonal(catalog: str, polygons: list[shapely.Polygon]) -> None:
    """Where aef_zonal's time goes, stage by stage (best of 3 each), and cProfile's view of
    the kernel (main thread: the decode threads show as waiting)."""
    wkb = shapely.to_wkb(polygons)
    session = open_session(catalog)
    areas = [area_from(blob, EPSG) for blob in wkb]

    stages = {
        "connect (new connection)": lambda: aefsql.connect(catalog=catalog).close(),
        "WKB -> areas": lambda: [area_from(blob, EPSG) for blob in wkb],
        "chunks (areas_chunks)": lambda: areas_chunks(session, areas, [YEAR]),
        "zonal_means (layout + reads)": lambda: zonal_means(session, areas, [YEAR]),
        "SQL end to end": lambda: zonal_aefsql(catalog, polygons),
    }
    print("\n# aef_zonal stage by stage (best of 3)")
    for label, action in stages.items():
        print(f"{label:<30} {best_of(3, action)[0]:>6.3f} s")
    profiler = cProfile.Profile()
    profiler.enable()
    zonal_means(session, areas, [YEAR])
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


# -- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="tile side, pixels")
    parser.add_argument("--area", type=int, default=2048, help="area side, pixels")
    parser.add_argument("--offset", type=int, nargs=2, default=(700, 900), metavar=("ROW", "COL"))
    parser.add_argument("--parcels", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--only", default="local,http,zonal")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/aefsql-bench"))
    args = parser.parse_args()
    parts = set(args.only.split(","))
    index = write_collection(args.dir, args.size, 2, BLOCK)  # as bench_local.py's
    rel = f"2024/33N/bench{BLOCK}-0.tiff"
    print(
        f"# {os.cpu_count()} cores; tiles of {args.size}x{args.size} px x 64 bands, "
        f"int8, planar, ZSTD, {BLOCK}-px blocks, south-up (GDAL-written)"
    )
    if "local" in parts:
        run_area(args, str(index), str(args.dir / rel), "local files", None)
    if args.profile:
        profile_kernels(str(index), args)
    if "http" in parts:
        with RangeServer(args.dir) as server, LatencyProxy(server.port, args.latency) as proxy:
            base = f"http://127.0.0.1:{proxy.port}/"
            where = f"HTTP + {args.latency * 1000:.0f} ms per request"
            run_area(args, base + index.name, "/vsicurl/" + base + rel, where, proxy)
    if "zonal" in parts:
        run_zonal(args, str(index), str(args.dir / rel))


if __name__ == "__main__":
    main()
