"""The block engine: (file, block) reads -> ranged fetches in waves -> decoded blocks -> pixels.

Every kernel reads pixels through it: the point sampler (points.py) with a few pixels a
block, the area and chip kernels with runs of pixels (`run_layout`, `BlockEngine.read_layout`).
One call reads every distinct block once (nearby blocks of a file merged into one request,
only the prefix a block's needed rows take when it ends a request), decodes blocks in a
thread pool (zstd and zlib release the GIL) and gathers all the pixels of each block at once.

Words: a *tile* is a file (a catalog row); a *block* is a TIFF tile or strip inside it. A
block number counts the blocks of one plane (`block_row * blocks_across + block_col`);
planar-separate files hold one such block per band (`_plane_blocks`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .. import threads
from ..aef import NODATA
from ..errors import AefsqlError, TiffFormatError, redact
from ..format.codecs import ShortBlock, check_supported, decode_block, prefix_length
from ..format.tiff import ImageHeader
from ..headers.reader import Headers
from ..progress import Progress
from ..storage.fetch import Version
from ..storage.memory import BlockCache, HeaderCache
from ..storage.ranges import merge_ranges
from ..storage.store import ByteStore
from .grouping import group_indices

# Refused before reading: no AEF block comes near (a 1024-px block of 64 chunky bands is 64 MiB).
MAX_BLOCK_BYTES = 256 * 1024 * 1024
# Compressed bytes per wave: with PREFETCH_WAVES, what a job holds of them (48 MiB). Two
# waves ahead keep ~10 MB in flight at 200 MB/s and 50 ms latency with room to spare.
WAVE_BYTES = 16 * 1024 * 1024
PREFETCH_WAVES = 2  # waves fetched ahead of the one being decoded
PREFIX_READS = True  # False: blocks are read whole (benchmarks/bench_prefix.py compares)


@dataclass(frozen=True)
class RunLayout:
    """The pixels of runs — columns [col0, col1) of one row each — of one raster, in block
    order: runs are cut at block columns and the pieces ordered by (block, row, column), so
    each block's pixels are consecutive (a block's 64 band planes are then decoded once and
    read with one index). Runs already cut and in that order keep their order."""

    run: np.ndarray  # the input run of each pixel
    row: np.ndarray
    col: np.ndarray
    blocks: np.ndarray  # the blocks, in order
    bounds: np.ndarray  # blocks[i]'s pixels are [bounds[i], bounds[i + 1])

    @property
    def pixels(self) -> int:
        return int(self.row.size)


def run_layout(url, header: ImageHeader, row, col0, col1) -> RunLayout:
    """The pixels of the runs (row, [col0, col1)) of `header`'s raster in block order."""
    row, col0, col1 = (np.asarray(a, dtype=np.int64) for a in (row, col0, col1))
    if row.size and (
        row.min() < 0 or row.max() >= header.height or col0.min() < 0 or col1.max() > header.width
    ):
        raise AefsqlError(
            f"{redact(url)}: pixel runs outside its {header.width} x {header.height} raster"
        )
    keep = col1 > col0
    run, row, col0, col1 = np.flatnonzero(keep), row[keep], col0[keep], col1[keep]
    width, height = header.block_width, header.block_height
    first = col0 // width
    pieces = (col1 - 1) // width - first + 1
    piece_run = np.repeat(np.arange(run.size), pieces)
    block_col = first[piece_run] + _ramp(pieces)
    start = np.maximum(col0[piece_run], block_col * width)
    end = np.minimum(col1[piece_run], (block_col + 1) * width)
    piece_row = row[piece_run]
    block = (piece_row // height) * header.blocks_across + block_col
    order = np.lexsort((start, piece_row, block))
    if not np.all(order[1:] > order[:-1]):  # not yet in block order
        piece_run, start, end, piece_row, block = (
            a[order] for a in (piece_run, start, end, piece_row, block)
        )
    lengths = end - start
    changes = np.flatnonzero(block[1:] != block[:-1]) + 1
    firsts = np.concatenate([[0], changes]) if block.size else np.zeros(0, np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return RunLayout(
        run=np.repeat(run[piece_run], lengths),
        row=np.repeat(piece_row, lengths),
        col=np.repeat(start, lengths) + _ramp(lengths),
        blocks=block[firsts],
        bounds=np.append(offsets[firsts], offsets[-1]),
    )


def _ramp(counts: np.ndarray) -> np.ndarray:
    """0, 1, …, counts[0] - 1, 0, 1, …, counts[1] - 1, …"""
    total = int(counts.sum())
    return np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)


class BlockEngine:
    """Reads blocks of files: the store, the headers (their cache and any headers file), the
    cache of decoded blocks and the progress line; safe to call from several threads."""

    def __init__(
        self,
        store: ByteStore,
        header_cache: HeaderCache | None = None,
        blocks: BlockCache | None = None,
        progress: Progress | None = None,
    ):
        self.store = store
        self.headers = Headers(store, header_cache)
        self.blocks = blocks if blocks is not None else BlockCache()
        self.progress = progress if progress is not None else Progress(enabled=False)

    def read_layout(
        self,
        url: str,
        header: ImageHeader,
        layout: RunLayout,
        bands: list[int],
        keep=False,
        reduce=None,
    ) -> np.ndarray | None:
        """int8 values (bands, pixels) of `layout`'s pixels, band-major: the file's own
        values, nodata included (a band the file lacks holds its nodata, or 0). Decoded
        blocks are kept (whole) in the block cache only with `keep`: an area reads each block
        once, batches of chips may come back to it. Call it inside
        `headers.restarting_on_change`, with the header the layout was made from.

        With `reduce`, no values are made (None is returned): each block's pixels go to the
        object `reduce(start, end, rows, cols, width)` makes for them, which has
        `_BlockRuns`' `rows_needed` and `gather(block, None, columns, samples)` and sums
        them itself, in the decode threads (aefsql/kernels/means.py)."""
        _check_readable(url, header)
        values = None
        if reduce is None:
            values = np.empty((len(bands), layout.pixels), dtype=np.int8)
            absent = [k for k, band in enumerate(bands) if band >= header.samples_per_pixel]
            values[absent] = nodata_of(url, header)
        needed = _plane_blocks(header, layout.blocks, bands)
        self.headers.load_block_tables([(url, header, needed)])
        reads = []
        width, height = header.block_width, header.block_height
        for block, start, end in zip(
            layout.blocks.tolist(),
            layout.bounds[:-1].tolist(),
            layout.bounds[1:].tolist(),
            strict=True,
        ):
            rows = layout.row[start:end] - (block // header.blocks_across) * height
            cols = layout.col[start:end] - (block % header.blocks_across) * width
            runs = (reduce or _BlockRuns)(start, end, rows, cols, width)
            reads.extend(_band_reads(url, header, block, runs, bands))
        self.read_blocks(reads, {url: header}, values, keep=keep)
        self.progress.add(points=layout.pixels)
        return values

    def read_blocks(self, reads: list[_BlockRead], headers, values, keep: bool) -> None:
        """Gather the pixels of `reads` (`plan_blocks`) into `values`: each block from the
        block cache, else fetched in waves (prefixes where they end a request) and decoded;
        decoded blocks are kept in the cache with `keep`."""
        to_fetch = []
        for read in reads:
            block = self.blocks.get(read.key)
            if block is not None and block.shape[0] >= read.rows_needed:
                read.gather(block, values)
            else:
                to_fetch.append(read)
        # While one wave decodes, the next ones download (PREFETCH_WAVES in flight: over a
        # slow link a wave's first bytes come a round trip after it is asked for).
        waves = _waves(to_fetch)
        prefetch = threads.pool("prefetch")
        pending = deque(
            prefetch.submit(self._fetch, w, headers, keep) for w in waves[:PREFETCH_WAVES]
        )
        # The prefixes of a wave that fell short are read on while the next wave decodes,
        # and finished after it: a wave never waits a round trip for them.
        late = None
        for i, wave in enumerate(waves):
            self.store.check_cancelled()
            raw_by_range = pending.popleft().result()
            if i + PREFETCH_WAVES < len(waves):
                pending.append(
                    prefetch.submit(self._fetch, waves[i + PREFETCH_WAVES], headers, keep)
                )
            short = self._decode(_by_block(wave), raw_by_range, headers, values, keep)
            if late is not None:
                self._finish(*late, headers, values, keep)
            late = None
            if short:
                raw = {key: raw_by_range[key] for key in {(r.url, r.byte_range) for r, _ in short}}
                late = (prefetch.submit(self._extend, short, raw, headers, False), short, raw)
        if late is not None:
            self._finish(*late, headers, values, keep)

    def _finish(self, extension, short, raw, headers, values, keep: bool) -> None:
        """Decode the blocks whose prefix fell short once `extension` has read on; any still
        short are read to their end (a block comes in three parts at most)."""
        extension.result()
        again = self._decode([[read] for read, _ in short], raw, headers, values, keep)
        if again:
            self._extend(again, raw, headers, last=True)
            # Read whole, a block decodes or raises: nothing can be short any more.
            if self._decode([[read] for read, _ in again], raw, headers, values, keep):
                raise TiffFormatError("a block read whole decoded short without an error")

    def _fetch(self, wave: list[_BlockRead], headers, keep: bool) -> dict:
        """{(url, byte range): compressed bytes} of a wave's blocks: whole, or the prefix their
        rows need (see `fetch_spans`)."""
        nonempty = [r for r in wave if r.size]
        ends: dict[tuple, int] = {}  # (url, byte range): end of the bytes to fetch
        for read, (_, end) in zip(nonempty, fetch_spans(nonempty, headers, keep), strict=True):
            _farther(ends, (read.url, read.byte_range), end)
        answers = self.store.read(
            [(url, start, end) for (url, (start, _)), end in ends.items()],
            versions={r.url: r.version for r in nonempty},
            views=True,
        )
        self.progress.add(blocks=len(wave), nbytes=sum(len(a) for a in answers))
        return dict(zip(ends, answers, strict=True))

    def _extend(self, short: list[tuple[_BlockRead, int]], raw_by_range, headers, last) -> None:
        """Read more of the blocks whose prefix decoded to too few bytes (`short`: each read
        and the bytes it gave), as far as what the prefix revealed says they need; with
        `last`, to their end (a block is never read in more than three parts)."""
        ends: dict[tuple, int] = {}
        for read, got in short:
            key = (read.url, read.byte_range)
            header, have = headers[read.url], raw_by_range[key]
            length, total = read.decoded_bytes(header)
            want = (
                read.size
                if last
                else prefix_length(read.size, header.compression, length, total, have, got)
            )
            _farther(ends, key, read.byte_range[0] + want)
        requests = []  # each from where its bytes at hand end
        for key, end in ends.items():
            url, (start, _) = key
            requests.append((url, start + len(raw_by_range[key]), end))
        answers = self.store.read(
            requests,
            versions={r.url: r.version for r, _ in short},
            max_gap=0,
            views=True,
        )
        self.progress.add(nbytes=sum(len(a) for a in answers))
        for key, more in zip(ends, answers, strict=True):
            raw_by_range[key] = b"".join((raw_by_range[key], more))

    def _decode(self, tasks, raw_by_range, headers, values, keep: bool) -> list:
        """Decode each task's reads (a task a thread) and gather their pixels; returns the
        reads whose prefix fell short, with the bytes it gave."""

        def decode(read: _BlockRead) -> np.ndarray | int:
            """The block, or how many bytes a prefix too short gave."""
            header = headers[read.url]
            samples = 1 if header.planar_separate else header.samples_per_pixel
            if not read.size:
                return _empty_block(read.url, header, read.rows_needed, samples)
            raw = raw_by_range[(read.url, read.byte_range)]
            try:
                return decode_block(
                    raw,
                    compression=header.compression,
                    predictor=header.predictor,
                    rows=header.block_rows(read.block_row),
                    cols=header.block_width,
                    samples=samples,
                    dtype=header.dtype,
                    # A kept block is decoded whole: a later read may need more rows.
                    rows_needed=header.block_rows(read.block_row) if keep else read.rows_needed,
                )
            except TiffFormatError as exc:
                if len(raw) < read.size:  # only a prefix: read on, judge the whole block
                    return exc.decoded if isinstance(exc, ShortBlock) else 0
                # (ShortBlock's arguments are counts: read whole, it is a plain format error.)
                kind = TiffFormatError if isinstance(exc, ShortBlock) else type(exc)
                raise kind(f"{redact(read.url)} block {read.block}: {exc}") from None

        def decode_and_gather(reads: list[_BlockRead]) -> list[tuple[_BlockRead, int]]:
            # Each task writes its own (point, band) cells: tasks never touch the same cell.
            short = []
            for read in reads:
                block = decode(read)
                if isinstance(block, int):
                    short.append((read, block))
                    continue
                read.gather(block, values)
                if keep:
                    self.blocks.put(read.key, block)
            return short

        return [s for part in threads.pool("decode").map(decode_and_gather, tasks) for s in part]


def _farther(ends: dict, key: tuple, end: int) -> None:
    """One read of bytes per (url, byte range), as far as the farthest of the blocks that name
    them needs: two blocks of a table may share their bytes (a deduplicating writer, or a
    hostile header), and one buffer is kept a range."""
    ends[key] = max(ends.get(key, end), end)


def _by_block(wave: list[_BlockRead]) -> list[list[_BlockRead]]:
    """A wave's reads, one task per block (its 64 band planes when planar-separate):
    per-task overhead would otherwise dominate for small blocks."""
    by_block: dict[int, list[_BlockRead]] = {}
    for read in wave:
        by_block.setdefault(id(read.pixels), []).append(read)
    return list(by_block.values())


@dataclass(frozen=True)
class _BlockPoints:
    """The points that fall in one block (the same pixel in each band's plane), written
    point-major: values[point, band column]."""

    points: np.ndarray  # output rows
    rows: np.ndarray  # pixel row inside the block
    cols: np.ndarray  # pixel column inside the block

    @property
    def rows_needed(self) -> int:
        return int(self.rows.max()) + 1

    def gather(self, block: np.ndarray, values: np.ndarray, columns, samples) -> None:
        picked = block[self.rows, self.cols][:, samples]
        values[self.points[:, None], columns[None, :]] = picked


@dataclass(frozen=True)
class _BlockRuns:
    """Consecutive output pixels [start, end) that fall in one block, written band-major:
    values[band column, start:end]. Pixels that fill a window of the block (an area's box)
    are copied as one slice, others taken with one index shared by all bands."""

    start: int
    end: int
    rows: np.ndarray  # pixel row inside the block, ascending (then columns ascending)
    cols: np.ndarray  # pixel column inside the block
    width: int  # of the block

    @property
    def rows_needed(self) -> int:
        return int(self.rows[-1]) + 1

    @cached_property
    def window(self) -> tuple[int, int, int, int] | None:
        """(row0, row1, col0, col1) when the pixels are exactly that window, row by row."""
        row0, row1 = int(self.rows[0]), int(self.rows[-1]) + 1
        col0, col1 = int(self.cols.min()), int(self.cols.max()) + 1
        if (row1 - row0) * (col1 - col0) != self.end - self.start:
            return None
        # As many pixels as the window holds, all distinct (overlapping runs repeat pixels)
        # and in row-major order: they are the window.
        return (row0, row1, col0, col1) if (np.diff(self.flat) > 0).all() else None

    @cached_property
    def flat(self) -> np.ndarray:
        return self.rows * self.width + self.cols

    def gather(self, block: np.ndarray, values: np.ndarray, columns, samples) -> None:
        window = self.window
        for column, sample in zip(columns.tolist(), samples.tolist(), strict=True):
            out = values[column, self.start : self.end]
            if window is not None:
                row0, row1, col0, col1 = window
                out.reshape(row1 - row0, col1 - col0)[...] = block[row0:row1, col0:col1, sample]
            else:
                np.take(block[..., sample].reshape(-1), self.flat, out=out)


@dataclass(frozen=True)
class _BlockRead:
    """One block of one file, the pixels it serves and the output columns it fills."""

    url: str
    version: Version | None  # of the file: a block read from another one must not be used
    level: int  # block numbers are per level
    block: int  # in the file's block table (planes after planes when planar-separate)
    block_row: int
    byte_range: tuple[int, int]
    pixels: _BlockPoints | _BlockRuns
    columns: np.ndarray  # output band columns
    samples: np.ndarray  # the block's samples for those columns ([0] when planar-separate)

    @property
    def key(self) -> tuple:
        return (self.url, self.version, self.level, self.block)

    @property
    def rows_needed(self) -> int:
        return self.pixels.rows_needed

    @property
    def size(self) -> int:
        """Compressed bytes (0: a block the file leaves out)."""
        return self.byte_range[1] - self.byte_range[0]

    def decoded_bytes(self, header: ImageHeader) -> tuple[int, int]:
        """(decoded bytes of the rows needed, of the whole block)."""
        samples = 1 if header.planar_separate else header.samples_per_pixel
        row = header.block_width * samples * header.dtype.itemsize
        rows = header.block_rows(self.block_row)
        return min(self.rows_needed, rows) * row, rows * row

    def gather(self, block: np.ndarray, values: np.ndarray) -> None:
        self.pixels.gather(block, values, self.columns, self.samples)


def plan_blocks(url, header: ImageHeader, points, rows, cols, bands) -> list[_BlockRead]:
    """The block reads that fetch `bands` at the given pixels of one file (point-major)."""
    if points.size == 0:
        return []
    _check_readable(url, header)
    block_row = rows // header.block_height
    block_of = block_row * header.blocks_across + cols // header.block_width
    reads = []
    for block, members in group_indices(block_of, np.arange(points.size)).items():
        group = _BlockPoints(  # in-block pixels fit int32: blocks are at most 256 MiB
            points[members],
            (rows[members] - block_row[members] * header.block_height).astype(np.int32),
            (cols[members] % header.block_width).astype(np.int32),
        )
        reads.extend(_band_reads(url, header, int(block), group, bands))
    return reads


def _band_reads(url, header: ImageHeader, block: int, pixels, bands) -> list[_BlockRead]:
    """The reads of `bands` at one block's pixels: a plane's block per band when
    planar-separate."""
    columns = np.array([c for c, b in enumerate(bands) if b < header.samples_per_pixel], np.int64)
    wanted = np.array([b for b in bands if b < header.samples_per_pixel], np.int64)
    if header.planar_separate:
        numbers = [
            (block + band * header.blocks_per_plane, columns[k : k + 1], np.zeros(1, np.int64))
            for k, band in enumerate(wanted.tolist())
        ]
    else:
        numbers = [(block, columns, wanted)]
    reads = []
    for number, block_columns, samples in numbers:
        offset = int(header.block_offsets[number])
        size = int(header.block_byte_counts[number])
        if size > MAX_BLOCK_BYTES:
            raise TiffFormatError(
                f"{redact(url)} block {number}: its byte count ({size:,}) is refused: "
                f"the limit is {MAX_BLOCK_BYTES // 2**20} MiB"
            )
        reads.append(
            _BlockRead(
                url=url,
                version=header.version,
                level=header.level,
                block=number,
                block_row=block // header.blocks_across,
                byte_range=(offset, offset + size),
                pixels=pixels,
                columns=block_columns,
                samples=samples,
            )
        )
    return reads


def nodata_of(url, header: ImageHeader) -> int:
    """The file's nodata as an int8: its GDAL_NODATA tag, or AEF's -128 when it has none
    (aefsql reads AEF embeddings, whose nodata is -128 in every file; de-quantization maps
    -128 to NaN whatever the tag). A tag no int8 can hold is refused: NaN, 1000 or 2.5 never
    equal a value, so the file's nodata pixels would read as data."""
    nodata = header.nodata
    if nodata is None:
        return NODATA
    if not (np.isfinite(nodata) and nodata == int(nodata) and -128 <= nodata <= 127):
        raise TiffFormatError(
            f"{redact(url)}: nodata {nodata} cannot be an int8 value (AEF's is -128)"
        )
    return int(nodata)


def _check_readable(url, header: ImageHeader) -> None:
    """int8 samples with an int8 nodata, in a supported codec, in blocks of a sane size."""
    if header.dtype.kind != "i" or header.dtype.itemsize != 1:
        raise TiffFormatError(
            f"{redact(url)}: samples are {header.dtype.name}, expected int8 AEF embeddings"
        )
    nodata_of(url, header)
    check_supported(header.compression, header.predictor)
    _check_block_size(url, header)


def _check_block_size(url, header: ImageHeader) -> None:
    """A hostile or broken header must not make the decoder allocate gigabytes."""
    samples = 1 if header.planar_separate else header.samples_per_pixel
    decoded = header.block_width * header.block_height * samples * header.dtype.itemsize
    if decoded > MAX_BLOCK_BYTES:
        raise TiffFormatError(
            f"{redact(url)}: blocks of {header.block_width} x {header.block_height} pixels x "
            f"{samples} samples ({decoded / 2**20:,.0f} MiB decoded) are refused: the limit is "
            f"{MAX_BLOCK_BYTES // 2**20} MiB"
        )


def needed_blocks(header: ImageHeader, rows, cols, bands) -> np.ndarray:
    """The distinct blocks holding `bands` at these pixels."""
    blocks = np.unique(
        (rows // header.block_height) * header.blocks_across + cols // header.block_width
    )
    return _plane_blocks(header, blocks, bands)


def _plane_blocks(header: ImageHeader, blocks: np.ndarray, bands) -> np.ndarray:
    """The blocks of the table holding `bands` of these (distinct) blocks of one plane."""
    if not header.planar_separate:
        return blocks
    wanted = np.array([b for b in bands if b < header.samples_per_pixel], dtype=np.int64)
    return (wanted[:, None] * header.blocks_per_plane + blocks[None, :]).ravel()


def _empty_block(url, header: ImageHeader, rows: int, samples: int) -> np.ndarray:
    """A block the file leaves out (byte count 0): nodata, as GDAL reads it."""
    fill = nodata_of(url, header)
    return np.full((rows, header.block_width, samples), fill, dtype=header.dtype.newbyteorder("="))


def fetch_spans(reads: list[_BlockRead], headers, keep: bool) -> list[tuple[int, int]]:
    """The bytes to fetch of each of `reads` (non-empty): the prefix its rows need
    (`codecs.prefix_length`) when its block ends a request (`ranges.merge_ranges`, as the
    store merges them), else the whole block: a block followed closely by another one read
    makes one request with it, and cut, it would make two. A kept block is read whole, to be
    decoded whole."""
    spans = [read.byte_range for read in reads]
    if keep or not PREFIX_READS:
        return spans

    def request_ends() -> set[tuple[str, tuple[int, int]]]:
        by_url: dict[str, list[tuple[int, int]]] = {}
        for read, span in zip(reads, spans, strict=True):
            by_url.setdefault(read.url, []).append(span)
        return {
            (url, m.members[-1]) for url, ranges in by_url.items() for m in merge_ranges(ranges)
        }

    ends = request_ends()
    cut = [i for i, read in enumerate(reads) if (read.url, spans[i]) in ends]
    for i in cut:
        length, total = reads[i].decoded_bytes(headers[reads[i].url])
        size, compression = reads[i].size, headers[reads[i].url].compression
        spans[i] = (spans[i][0], spans[i][0] + prefix_length(size, compression, length, total))
    # A shorter span can merge with the next one across the gap its cut opened (a request
    # that had no room for the whole block has room for its prefix): such a block would be
    # fetched to its end anyway, and is read whole; until no cut block sits inside a request.
    while cut:
        ends = request_ends()
        inside = {i for i in cut if (reads[i].url, spans[i]) not in ends}
        if not inside:
            break
        for i in inside:
            spans[i] = reads[i].byte_range
        cut = [i for i in cut if i not in inside]
    return spans


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


def file_by_file(
    read: Callable[[np.ndarray], object], paths: np.ndarray, members: np.ndarray, on_error: str
) -> Iterator[tuple[np.ndarray, object]]:
    """Per-file failure isolation, for every kernel: (rows, result) of `read(members)`
    (`members`: indices into `paths`, the file of each row). With on_error 'null', when that
    read fails, each file's rows are read again on their own, and a file that fails gives
    (its rows, its message) instead: one unreadable file fails only its own rows. With
    'raise' the error goes up."""
    try:
        result = read(members)
    except AefsqlError:
        if on_error != "null":
            raise
    else:
        yield members, result
        return
    for rows in group_indices(paths, members).values():
        try:
            yield rows, read(rows)
        except AefsqlError as exc:
            yield rows, str(exc)
