"""The point sampler: values of points of named files, read through the block engine.

`sample` maps each (file, x, y) to its pixel in that file (`headers.reader.point_pixels`),
groups the points by block and reads every block once (`engine.BlockEngine`);
`sample_pixels` does the same for pixels `locate.locate_pixels` already found (a whole-table
job: each point projected once); `plan` says what a sample would read, from headers only.
Point values of remote files can be kept in the disk cache (`_KeptValues`), so that a re-run
of a whole-table job reads nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..aef import BAND_COUNT, BAND_NAMES
from ..format.tiff import ImageHeader
from ..geometry import geo
from ..headers.reader import check_georeferenced, point_pixels
from ..options import band_list, check_level
from ..storage.disk import DiskCache, PixelValues, values_entry_name
from ..storage.ranges import merge_ranges
from ..storage.store import protocol_of
from .engine import BlockEngine, fetch_spans, file_by_file, needed_blocks, nodata_of, plan_blocks
from .grouping import group_indices


@dataclass
class Samples:
    """Pixel values of n points in k bands. A band is NULL where its point is not covered or
    its value is its file's nodata."""

    values: np.ndarray  # int8 (n, k)
    covered: np.ndarray  # bool (n,): inside a raster
    nodata: np.ndarray  # float (n,): the nodata value of each point's file, NaN for none
    band_count: np.ndarray  # int (n,): how many bands each point's file has
    bands: list[int]  # the band (index into A00..A63) of each of the k columns

    @staticmethod
    def empty(n: int, bands: list[int]) -> Samples:
        """n points covered by nothing, to be filled."""
        return Samples(
            values=np.zeros((n, len(bands)), dtype=np.int8),
            covered=np.zeros(n, dtype=bool),
            nodata=np.full(n, np.nan),
            band_count=np.zeros(n, dtype=np.int16),
            bands=bands,
        )

    def put(self, rows: np.ndarray, other: Samples) -> None:
        """Write `other` (the samples of `rows`, indices) in place."""
        self.values[rows] = other.values
        self.covered[rows] = other.covered
        self.nodata[rows] = other.nodata
        self.band_count[rows] = other.band_count

    def complete(self) -> np.ndarray:
        """bool (n,): every band column holds data (coverage.point_status_codes' `complete`)."""
        with np.errstate(invalid="ignore"):
            return (
                self.covered
                & (self.values != self.nodata[:, None]).all(axis=1)
                & (max(self.bands, default=-1) < self.band_count)
            )

    def band_valid(self, k: int) -> np.ndarray:
        """bool (n,): band column k holds data (one column at a time: no n x k mask)."""
        with np.errstate(invalid="ignore"):
            return (
                self.covered
                & (self.bands[k] < self.band_count)
                & (self.values[:, k] != self.nodata)
            )

    @staticmethod
    def concatenate(parts: list[Samples]) -> Samples:
        return Samples(
            values=np.concatenate([p.values for p in parts]),
            covered=np.concatenate([p.covered for p in parts]),
            nodata=np.concatenate([p.nodata for p in parts]),
            band_count=np.concatenate([p.band_count for p in parts]),
            bands=parts[0].bands,
        )

    @property
    def valid(self) -> np.ndarray:
        """bool (n, k): every band's validity at once."""
        return np.stack([self.band_valid(k) for k in range(self.values.shape[1])], axis=1)


@dataclass(frozen=True)
class ReadPlan:
    """The cost of sampling some points of one file, before any pixel is read."""

    points: int
    blocks: int
    requests: int
    bytes: int


def band_indices(names: list[str] | None) -> list[int]:
    """['A00', 'A05'] -> [0, 5]; None -> all 64 bands."""
    return [BAND_NAMES.index(name) for name in band_list(names)]


def sample(
    engine: BlockEngine,
    urls,
    x,
    y,
    bands: list[int] | None = None,
    *,
    crs: int = geo.WGS84,
    keep_blocks: bool = True,
    level: int = 0,
    keep_values: bool = False,
) -> Samples:
    """Values of `bands` (indices into A00..A63) at each (url, x, y), x/y in EPSG `crs`
    (default lon/lat; a point in its file's own CRS is not transformed at all).

    A point is not covered when its url is None, its x/y is invalid, or it falls
    outside that raster; a band is not valid where it is not covered or holds nodata.
    `keep_blocks`: put decoded blocks in the block cache (a whole-table job, which reads
    each block once, does better to leave the memory free). `level`: read the files'
    level-k overview (0: full resolution); a file without it is an error. `keep_values`:
    keep the values read in the disk cache, per remote file version and pixel, and take
    them from there when every point of a file has them (a whole-table job that is re-run;
    row-by-row calls would rewrite a file's entry each time).
    """
    check_level(level)
    return engine.headers.restarting_on_change(
        lambda: _sample(
            engine,
            urls,
            x,
            y,
            bands,
            crs=crs,
            keep_blocks=keep_blocks,
            level=level,
            keep_values=keep_values,
        )
    )


def sample_pixels(
    engine: BlockEngine,
    urls,
    rows,
    cols,
    bands: list[int] | None = None,
    *,
    keep_blocks: bool = True,
    keep_values: bool = False,
    into: tuple[Samples, np.ndarray] | None = None,
) -> Samples:
    """`sample` at pixels already located (`locate.locate_pixels`: the row and column of
    each point in its file's full-resolution grid, -1 for none), so that no point is
    projected a second time. A pixel is not covered when its url is None, or its row and
    column are not in that raster. `into`: (samples, position of each point there) to
    write the values into, and return, instead of new samples of the points (a caller that
    keeps them elsewhere then never holds them twice); its bands must be `bands`."""
    return engine.headers.restarting_on_change(
        lambda: _sample_pixels(
            engine,
            urls,
            rows,
            cols,
            bands,
            keep_blocks=keep_blocks,
            keep_values=keep_values,
            into=into,
        )
    )


def sample_pixels_or_errors(
    engine: BlockEngine,
    urls,
    rows,
    cols,
    bands: list[int],
    *,
    on_error: str,
    into: tuple[Samples, np.ndarray] | None = None,
    **options,
) -> tuple[Samples, np.ndarray | None]:
    """`sample_pixels`, and with on_error 'null' a file that cannot be read gives its points
    no value and its message (`engine.file_by_file`): (samples, the message of each point,
    or None when every file was read). `into`: as for `sample_pixels` (the messages are
    still per point)."""
    urls = np.asarray(urls, dtype=object)
    rows, cols = _pixel_indices(rows), _pixel_indices(cols)
    everything = np.arange(urls.size)

    def read(at: np.ndarray) -> Samples:
        if at is everything:  # (no copies of 10^6 points' arrays for the usual case)
            return sample_pixels(engine, urls, rows, cols, bands, into=into, **options)
        part_into = None if into is None else (into[0], into[1][at])
        return sample_pixels(engine, urls[at], rows[at], cols[at], bands, into=part_into, **options)

    parts = list(file_by_file(read, urls, everything, on_error))
    if len(parts) == 1 and parts[0][0] is everything:
        return parts[0][1], None
    merged = Samples.empty(urls.size, bands) if into is None else into[0]
    errors = np.full(urls.size, None, dtype=object)
    for at, part in parts:
        if isinstance(part, str):
            errors[at] = part
            if into is not None:  # a read that failed part way may have marked them
                merged.covered[into[1][at]] = False
        elif into is None:
            merged.put(at, part)
    return merged, errors


def _sample(
    engine: BlockEngine,
    urls,
    x,
    y,
    bands,
    *,
    crs: int,
    keep_blocks: bool,
    level: int = 0,
    keep_values: bool = False,
) -> Samples:
    bands = list(range(BAND_COUNT)) if bands is None else bands
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    found = Samples.empty(x.size, bands)
    urls = np.asarray(urls, dtype=object)
    usable = geo.valid_coordinates(x, y, crs) & np.array([u is not None for u in urls], bool)
    if not usable.any():
        return found

    by_url = group_indices(urls, np.flatnonzero(usable))
    headers = engine.headers.headers_for(list(by_url), level)
    located = []  # (url, output rows, pixel rows, pixel cols) of the points inside
    for url, indices in by_url.items():
        rows, cols, inside = point_pixels(url, headers[url], x[indices], y[indices], crs)
        located.append(_placed(found, url, headers[url], indices, rows, cols, inside))
    _read_located(engine, headers, located, found, level, keep_blocks, keep_values)
    engine.progress.add(points=x.size)
    return found


def _sample_pixels(
    engine: BlockEngine,
    urls,
    rows,
    cols,
    bands,
    *,
    keep_blocks: bool,
    keep_values: bool,
    into: tuple[Samples, np.ndarray] | None,
) -> Samples:
    bands = list(range(BAND_COUNT)) if bands is None else bands
    urls = np.asarray(urls, dtype=object)
    rows, cols = _pixel_indices(rows), _pixel_indices(cols)
    found, at = (Samples.empty(urls.size, bands), None) if into is None else into
    if found.bands != bands:
        raise ValueError(f"sample_pixels into samples of bands {found.bands}, not {bands}")
    usable = np.not_equal(urls, None)
    if not usable.any():
        return found
    by_url = group_indices(urls, np.flatnonzero(usable))
    headers = engine.headers.headers_for(list(by_url))
    located = [
        _pixels_placed(found, url, headers[url], indices, rows, cols, at)
        for url, indices in by_url.items()
    ]
    del by_url, usable  # (10^6 points' worth less while the blocks are read)
    _read_located(engine, headers, located, found, 0, keep_blocks, keep_values)
    engine.progress.add(points=urls.size)
    return found


def _pixel_indices(values) -> np.ndarray:
    """Pixel rows or columns as integers, as given (int32 from DuckDB: half the memory of
    int64 for 10^6 points), else int64."""
    values = np.asarray(values)
    return values if np.issubdtype(values.dtype, np.integer) else values.astype(np.int64)


def _pixels_placed(found: Samples, url, header: ImageHeader, indices, rows, cols, at):
    """`_placed` for the points `indices` (at positions `at[indices]` of `found`, or at
    `indices` without `at`) of one file at pixels already located."""
    r, c = rows[indices], cols[indices]
    # As `point_pixels` checks: a file whose points could not be mapped while locating
    # (rotated, no EPSG code) has them without a pixel, and fails here, naming why.
    check_georeferenced(url, header)
    # Checked against the header of now: the file may have changed since it was located.
    inside = (r >= 0) & (r < header.height) & (c >= 0) & (c < header.width)
    return _placed(found, url, header, indices if at is None else at[indices], r, c, inside)


def _placed(found: Samples, url, header: ImageHeader, indices, rows, cols, inside):
    """Mark the points `indices` of one file covered or not, with its nodata and band count;
    return (url, output rows, pixel rows, pixel cols) of those inside."""
    found.covered[indices] = inside
    found.band_count[indices] = header.samples_per_pixel
    found.nodata[indices] = nodata_of(url, header)
    return url, indices[inside], rows[inside], cols[inside]


def _read_located(
    engine: BlockEngine,
    headers,
    located: list,
    found: Samples,
    level: int,
    keep_blocks: bool,
    keep_values: bool,
) -> None:
    """Read the values of the `located` pixels (`_placed`) into `found`: from the disk
    cache's kept values where it has them, else block by block. `located` is emptied once
    the block reads hold what they need (10^6 points' worth less while reading)."""
    bands, values = found.bands, found.values
    kept = _kept_values(engine, headers, level, bands) if keep_values else None
    if kept is not None:
        located[:] = kept.fill(located, values)
    engine.headers.load_block_tables(
        [(url, headers[url], needed_blocks(headers[url], r, c, bands)) for url, _, r, c in located]
    )
    reads = []  # one block read per (url, block): the points it serves
    for url, points, rows, cols in located:
        reads.extend(plan_blocks(url, headers[url], points, rows, cols, bands))
    if kept is None:
        located.clear()
    engine.read_blocks(reads, headers, values, keep_blocks)
    if kept is not None:
        kept.keep(located, values)


def _kept_values(engine: BlockEngine, headers, level: int, bands: list[int]) -> _KeptValues | None:
    """The disk cache's pixel values for these files, when there is a disk cache."""
    store = engine.store
    if store.disk_cache is None:
        return None
    keepable = [url for url, header in headers.items() if _keepable(url, header)]
    store.versions(keepable)  # asked side by side
    for url in keepable:  # nothing kept under a version the file no longer has is served
        store.confirmed(url, headers[url].version)
    return _KeptValues(store.disk_cache, headers, values_entry_name(level, bands), len(bands))


def plan(engine: BlockEngine, url: str, x, y, bands: list[int], crs: int = geo.WGS84) -> ReadPlan:
    """What sampling `bands` at these points of one file would read (headers only)."""
    return engine.headers.restarting_on_change(lambda: _plan(engine, url, x, y, bands, crs))


def _plan(engine: BlockEngine, url: str, x, y, bands: list[int], crs: int) -> ReadPlan:
    header = engine.headers.headers_for([url])[url]
    rows, cols, inside = point_pixels(url, header, np.asarray(x), np.asarray(y), crs)
    points = np.flatnonzero(inside)
    rows, cols = rows[inside], cols[inside]
    engine.headers.load_block_tables([(url, header, needed_blocks(header, rows, cols, bands))])
    reads = plan_blocks(url, header, points, rows, cols, bands)
    nonempty = [r for r in reads if r.size]
    merged = merge_ranges(fetch_spans(nonempty, {url: header}, keep=False))
    return ReadPlan(
        points=int(points.size),
        blocks=len(reads),
        requests=len(merged),
        bytes=sum(m.end - m.start for m in merged),
    )


@dataclass
class _KeptValues:
    """Point values kept in the disk cache per file version (PixelValues): a re-run finds
    them there, and neither downloads nor decodes (only for `_keepable` files). Entries are
    read one file at a time and let go (each may hold up to VALUES_ENTRY_LIMIT bytes): the
    few a job adds to are read again to be merged."""

    cache: DiskCache
    headers: dict
    name: str  # the entry of this level and band list
    bands: int

    def fill(self, located: list, values: np.ndarray) -> list:
        """`located` (url, points, rows, cols) without the points whose values are kept:
        those are written into `values`; the others are left to read."""
        left = []
        for url, points, rows, cols in located:
            header = self.headers[url]
            kept = self._get(url, header) if points.size else None
            if kept is not None:
                found, at = kept.lookup(rows.astype(np.int64) * header.width + cols)
                values[points[found]] = kept.values[at[found]]
                if found.all():
                    continue
                points, rows, cols = points[~found], rows[~found], cols[~found]
            left.append((url, points, rows, cols))
        return left

    def keep(self, read: list, values: np.ndarray) -> None:
        """Add the values just read, file by file."""
        for url, points, rows, cols in read:
            header = self.headers[url]
            if not _keepable(url, header) or not points.size:
                continue
            pixels = rows.astype(np.int64) * header.width + cols
            kept = self._get(url, header) or PixelValues(
                np.zeros(0, np.int64), np.zeros((0, self.bands), np.int8)
            )
            merged = kept.merged(pixels, values[points])
            self.cache.put_values(url, str(header.version), self.name, merged)

    def _get(self, url: str, header) -> PixelValues | None:
        """The kept values of the file's version, if it has any and is keepable."""
        if not _keepable(url, header):
            return None
        return self.cache.get_values(url, str(header.version), self.name, self.bands)


def _keepable(url: str, header: ImageHeader) -> bool:
    """Values are kept for remote files with a version: local files are read in place (the
    disk cache never copies them), and values of an unversioned file could be another's."""
    return header.version is not None and protocol_of(url) != "file"
