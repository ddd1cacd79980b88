"""The planner: points -> (file, block) groups -> ranged reads -> decoded blocks -> pixel values.

One call handles a whole batch of points over any number of files: it fetches the missing
headers concurrently, reads every distinct block once (nearby blocks of a file merged into one
request), decodes blocks in a thread pool (zstd and zlib release the GIL) and gathers all the
points of each block at once.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from . import geo, threads
from .cache import BlockCache, HeaderCache
from .codecs import check_supported, decode_block
from .errors import AefsqlError, TiffFormatError
from .io import ByteStore, redact
from .ranges import merge_ranges
from .tiff import ImageHeader, MissingBytes, SparseBytes, parse_header

BAND_COUNT = 64
BAND_NAMES = tuple(f"A{i:02d}" for i in range(BAND_COUNT))
WGS84 = 4326
HEADER_FIRST_READ = 64 * 1024  # a COG with 1024-px blocks keeps its whole header in this
HEADER_MIN_FOLLOW_UP = 16 * 1024
MAX_HEADER_ROUNDS = 32
WAVE_BYTES = 128 * 1024 * 1024  # compressed bytes in flight per wave: bounds memory


@dataclass
class Samples:
    """Pixel values of n points in k bands; NULL is `covered` False or `valid` False."""

    values: np.ndarray  # int8 (n, k)
    valid: np.ndarray  # bool (n, k): inside a raster and not nodata
    covered: np.ndarray  # bool (n,): inside a raster


def band_indices(names: list[str] | None) -> list[int]:
    """['A00', 'A05'] -> [0, 5]; None -> all 64 bands."""
    if names is None:
        return list(range(BAND_COUNT))
    lookup = {name: i for i, name in enumerate(BAND_NAMES)}
    unknown = [name for name in names if name not in lookup]
    if unknown:
        raise AefsqlError(f"unknown band name(s) {unknown}: bands are named A00..A63")
    return sorted({lookup[name] for name in names})


class Sampler:
    """Samples AEF rasters at points; safe to call from several threads at once."""

    def __init__(
        self,
        store: ByteStore,
        headers: HeaderCache | None = None,
        blocks: BlockCache | None = None,
    ):
        self.store = store
        self.headers = headers if headers is not None else HeaderCache()
        self.blocks = blocks if blocks is not None else BlockCache()

    # -- headers -------------------------------------------------------------------------

    def headers_for(self, urls) -> dict[str, ImageHeader]:
        """Headers of the given files: cached ones at once, the others fetched concurrently."""
        found: dict[str, ImageHeader] = {}
        pending: dict[str, SparseBytes] = {}
        for url in dict.fromkeys(urls):
            header = self.headers.get(url)
            if header is None:
                pending[url] = SparseBytes()
            else:
                found[url] = header
        if not pending:
            return found
        heads = self.store.read_head(list(pending), HEADER_FIRST_READ)
        for data, head in zip(pending.values(), heads, strict=True):
            data.add(0, head)
            if len(head) < HEADER_FIRST_READ:
                data.file_size = len(head)
        for _ in range(MAX_HEADER_ROUNDS):
            wanted = {}
            for url, data in pending.items():
                try:
                    header = parse_header(data)
                except MissingBytes as missing:
                    wanted[url] = missing
                    continue
                except TiffFormatError as exc:
                    raise type(exc)(f"{redact(url)}: {exc}") from None
                self.headers.put(url, header)
                found[url] = header
            pending = {url: pending[url] for url in wanted}
            if not pending:
                return found
            requests = [
                (url, m.offset, m.offset + max(m.length, HEADER_MIN_FOLLOW_UP))
                for url, m in wanted.items()
            ]
            answers = self.store.read_ranges(requests, allow_short=True)
            for (url, start, end), answer in zip(requests, answers, strict=True):
                pending[url].add(start, answer)
                if len(answer) < end - start:
                    pending[url].file_size = start + len(answer)
        raise TiffFormatError(f"{redact(next(iter(pending)))}: header spread over too many ranges")

    # -- sampling ------------------------------------------------------------------------

    def sample(self, urls, lon, lat, bands: list[int] | None = None) -> Samples:
        """Values of `bands` (indices into A00..A63) at each (url, lon, lat).

        A point is not covered when its url is None, its lon/lat is invalid, or it falls
        outside that raster; a band is not valid where it is not covered or holds nodata.
        """
        bands = list(range(BAND_COUNT)) if bands is None else bands
        lon = np.asarray(lon, dtype=np.float64)
        lat = np.asarray(lat, dtype=np.float64)
        n = lon.size
        values = np.zeros((n, len(bands)), dtype=np.int8)
        valid = np.zeros((n, len(bands)), dtype=bool)
        covered = np.zeros(n, dtype=bool)
        urls = np.asarray(urls, dtype=object)
        usable = geo.valid_lonlat(lon, lat) & np.array([u is not None for u in urls], dtype=bool)
        if not usable.any():
            return Samples(values, valid, covered)

        by_url = group_indices(urls, np.flatnonzero(usable))
        headers = self.headers_for(list(by_url))

        reads = []  # one _BlockRead per (url, block): the points it serves
        for url, indices in by_url.items():
            header = headers[url]
            rows, cols, inside = self.pixels(url, header, lon[indices], lat[indices])
            covered[indices] = inside
            reads.extend(
                _plan_blocks(url, header, indices[inside], rows[inside], cols[inside], bands)
            )

        self._read_blocks(reads, headers, values, valid)
        return Samples(values, valid, covered)

    def pixels(self, url: str, header: ImageHeader, lon: np.ndarray, lat: np.ndarray):
        """(rows, cols, inside) of lon/lat points in one raster."""
        source = redact(url)
        if header.transform is None:
            raise TiffFormatError(f"{source}: file has no georeferencing")
        if header.epsg is None:
            raise TiffFormatError(f"{source}: file names no EPSG code in its GeoKeys")
        geo.check_north_aligned(header.transform, source)
        x, y = geo.transform_points(WGS84, header.epsg, lon, lat)
        return geo.pixel_of(header.transform, header.width, header.height, x, y)

    def _read_blocks(self, reads: list[_BlockRead], headers, values, valid) -> None:
        to_fetch = []
        for read in reads:
            block = self.blocks.get(read.key)
            if block is not None:
                read.gather(block, values, valid)
            else:
                to_fetch.append(read)
        for wave in _waves(to_fetch):
            self._fetch_wave(wave, headers, values, valid)

    def _fetch_wave(self, wave: list[_BlockRead], headers, values, valid) -> None:
        ranges_by_url: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for read in wave:
            if read.byte_range[1] > read.byte_range[0]:
                ranges_by_url[read.url].append(read.byte_range)
        merged = [(url, m) for url, rs in ranges_by_url.items() for m in merge_ranges(rs)]
        answers = self.store.read_ranges([(url, m.start, m.end) for url, m in merged])
        raw_by_range = {}
        for (url, m), data in zip(merged, answers, strict=True):
            for member in m.members:
                raw_by_range[(url, member)] = m.slice(data, member)

        def decode(read: _BlockRead) -> np.ndarray:
            header = headers[read.url]
            if read.byte_range[1] == read.byte_range[0]:
                return _empty_block(header, read)
            try:
                return decode_block(
                    raw_by_range[(read.url, read.byte_range)],
                    compression=header.compression,
                    predictor=header.predictor,
                    rows=header.block_rows(read.block_row),
                    cols=header.block_width,
                    samples=1 if header.planar_separate else header.samples_per_pixel,
                    dtype=header.dtype,
                )
            except TiffFormatError as exc:
                raise type(exc)(f"{redact(read.url)} block {read.block}: {exc}") from None

        for read, block in zip(wave, threads.pool("decode").map(decode, wave), strict=True):
            read.gather(block, values, valid)
            self.blocks.put(read.key, block)


@dataclass
class _BlockRead:
    """One block of one file and the (point, band) cells it fills."""

    url: str
    block: int
    block_row: int
    byte_range: tuple[int, int]
    points: np.ndarray  # output row of each cell
    columns: np.ndarray  # output band column of each cell
    rows: np.ndarray  # pixel row inside the block
    cols: np.ndarray  # pixel column inside the block
    samples: np.ndarray  # sample inside the block (0 when planar-separate)
    nodata: float | None

    @property
    def key(self) -> tuple:
        return (self.url, self.block)

    def gather(self, block: np.ndarray, values: np.ndarray, valid: np.ndarray) -> None:
        picked = block[self.rows, self.cols, self.samples]
        values[self.points, self.columns] = picked
        ok = np.ones(picked.shape, dtype=bool) if self.nodata is None else picked != self.nodata
        valid[self.points, self.columns] = ok


def group_indices(keys: np.ndarray, indices: np.ndarray) -> dict:
    """{key: the indices (ascending) whose key it is}, for the given indices."""
    if indices.size == 0:
        return {}
    unique, inverse = np.unique(keys[indices], return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(1, unique.size))
    return dict(zip(unique.tolist(), np.split(indices[order], bounds), strict=True))


def _plan_blocks(url, header: ImageHeader, points, rows, cols, bands) -> list[_BlockRead]:
    """The block reads that fetch `bands` at the given pixels of one file."""
    if points.size == 0:
        return []
    if header.dtype.kind != "i" or header.dtype.itemsize != 1:
        raise TiffFormatError(
            f"{redact(url)}: samples are {header.dtype.name}, expected int8 AEF embeddings"
        )
    check_supported(header.compression, header.predictor)
    available = [
        (column, band) for column, band in enumerate(bands) if band < header.samples_per_pixel
    ]
    block_row = rows // header.block_height
    base = block_row * header.blocks_across + cols // header.block_width
    in_rows = rows - block_row * header.block_height
    in_cols = cols % header.block_width

    # Every (point, band) cell: the block holding it and the sample inside that block.
    columns = np.repeat(np.array([c for c, _ in available], dtype=np.int64), points.size)
    band_of = np.repeat(np.array([b for _, b in available], dtype=np.int64), points.size)
    tiles = np.tile(base, len(available))
    if header.planar_separate:
        blocks = band_of * header.blocks_per_plane + tiles
        samples = np.zeros_like(blocks)
    else:
        blocks = tiles
        samples = band_of
    cell_points = np.tile(points, len(available))
    cell_rows = np.tile(in_rows, len(available))
    cell_cols = np.tile(in_cols, len(available))
    cell_block_rows = np.tile(block_row, len(available))

    order = np.argsort(blocks, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(blocks[order]) != 0])
    reads = []
    for group in np.split(order, starts[1:]):
        block = int(blocks[group[0]])
        offset = int(header.block_offsets[block])
        size = int(header.block_byte_counts[block])
        reads.append(
            _BlockRead(
                url=url,
                block=block,
                block_row=int(cell_block_rows[group[0]]),
                byte_range=(offset, offset + size),
                points=cell_points[group],
                columns=columns[group],
                rows=cell_rows[group],
                cols=cell_cols[group],
                samples=samples[group],
                nodata=header.nodata,
            )
        )
    return reads


def _empty_block(header: ImageHeader, read: _BlockRead) -> np.ndarray:
    """A block the file leaves out (byte count 0): GDAL reads it as nodata, or 0 without one."""
    fill = header.nodata if header.nodata is not None else 0
    samples = 1 if header.planar_separate else header.samples_per_pixel
    return np.full(
        (header.block_rows(read.block_row), header.block_width, samples),
        fill,
        dtype=header.dtype.newbyteorder("="),
    )


def _waves(reads: list[_BlockRead]) -> list[list[_BlockRead]]:
    """Split reads into waves of at most WAVE_BYTES compressed bytes, in file/offset order."""
    reads = sorted(reads, key=lambda r: (r.url, r.byte_range))
    waves, wave, size = [], [], 0
    for read in reads:
        length = read.byte_range[1] - read.byte_range[0]
        if wave and size + length > WAVE_BYTES:
            waves.append(wave)
            wave, size = [], 0
        wave.append(read)
        size += length
    if wave:
        waves.append(wave)
    return waves
