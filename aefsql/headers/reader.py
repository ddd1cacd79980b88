"""Headers of AEF rasters: read ahead beside the parser, cached, restarted when a file changes.

Every kernel (points, areas, chips) and `locate` gets its headers here: the first read of
HEADER_FIRST_READ bytes, follow-up ranges while `parse_header` reports bytes missing,
block-table entries fetched on demand, a headers file consulted before any read, and
the restart when a file changes under a read. The pure point -> pixel mapping over a header
lives here too, so that a caller that only locates points needs no sampler.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol

import numpy as np

from ..errors import CatalogError, RangeReadError, TiffFormatError, redact
from ..format.tiff import MAX_IFDS, ImageHeader, MissingBytes, SparseBytes, parse_header
from ..geometry import geo
from ..options import check_level
from ..storage.fetch import ObjectChanged
from ..storage.memory import HeaderCache
from ..storage.store import ByteStore
from .table import HeadersFile

HEADER_FIRST_READ = 64 * 1024  # a COG with 1024-px blocks keeps its whole header in this
HEADER_MIN_FOLLOW_UP = 16 * 1024
BLOCK_TABLE_GAP = 4096  # fetch block-table entries this close together in one request
MAX_HEADER_ROUNDS = 32
CHANGE_RESTARTS = 3  # an object that keeps changing while being read fails after these


class HeaderSource(Protocol):
    """Anything that gives the headers of files at a level (a `Headers`)."""

    def headers_for(self, urls, level: int = 0) -> dict[str, ImageHeader]: ...


class Headers:
    """Headers of files read through one store; safe to call from several threads at once."""

    def __init__(self, store: ByteStore, cache: HeaderCache | None = None):
        self.store = store
        self.cache = cache if cache is not None else HeaderCache()  # keyed by (url, level)
        self.file: HeadersFile | None = None  # the headers file: headers taken before reading
        # The UTM zone the catalog gives a file ('33N'; None: it gives none, or the file is
        # not in it): a header in another zone is refused, since the catalog's zone decides
        # which tile owns a place at a seam (the session sets it).
        self.zone_of: Callable[[str], str | None] | None = None

    def headers_for(self, urls, level: int = 0) -> dict[str, ImageHeader]:
        """Headers of the given files at `level` (0: full resolution, k: the k-th overview):
        cached ones at once, the others fetched concurrently. A headers file holds
        level 0 only: an overview's header is read from its file (then cached)."""
        check_level(level)
        return self.restarting_on_change(lambda: self._headers_for(urls, level))

    def _headers_for(self, urls, level: int) -> dict[str, ImageHeader]:
        found: dict[str, ImageHeader] = {}
        pending: dict[str, SparseBytes] = {}
        for url in dict.fromkeys(urls):
            header = self.cache.get((url, level))
            if header is None and self.file is not None and level == 0:
                header = self.file.get(url)
                if header is not None:
                    self.cache.put((url, level), header)
            if header is None:
                pending[url] = SparseBytes()
            else:
                found[url] = self._checked(url, header)
        if not pending:
            return found
        heads, versions = self.store.read_head(list(pending), HEADER_FIRST_READ)
        for data, head in zip(pending.values(), heads, strict=True):
            data.add(0, head)
            if len(head) < HEADER_FIRST_READ:
                data.file_size = len(head)
        for _ in range(MAX_HEADER_ROUNDS):
            wanted = {}
            for url, data in pending.items():
                try:
                    header = parse_header(data, level)
                except MissingBytes as missing:
                    wanted[url] = missing
                    continue
                except TiffFormatError as exc:
                    raise type(exc)(f"{redact(url)}: {exc}") from None
                header = self._checked(url, dataclasses.replace(header, version=versions[url]))
                self.cache.put((url, level), header)
                found[url] = header
            pending = {url: pending[url] for url in wanted}
            if not pending:
                return found
            requests = [
                (url, m.offset, m.offset + max(m.length, HEADER_MIN_FOLLOW_UP))
                for url, m in wanted.items()
            ]
            answers = self.store.read(requests, versions=versions, allow_short=True)
            for (url, start, end), answer in zip(requests, answers, strict=True):
                pending[url].add(start, answer)
                if len(answer) < end - start:
                    pending[url].file_size = start + len(answer)
        raise TiffFormatError(f"{redact(next(iter(pending)))}: header spread over too many ranges")

    def _checked(self, url: str, header: ImageHeader) -> ImageHeader:
        """The header, unless the catalog puts its file in another UTM zone than its GeoKeys
        do (CatalogError: which one is wrong is not ours to guess)."""
        said = self.zone_of(url) if self.zone_of is not None else None
        zone = None if header.epsg is None else geo.utm_label(header.epsg)
        if said is not None and zone is not None and zone != said:
            raise CatalogError(
                f"{redact(url)}: the catalog puts it in UTM zone {said}, its header in "
                f"EPSG:{header.epsg} ({zone}): fix the catalog's crs/utm_zone (or the file)"
            )
        return header

    def load_block_tables(self, needs) -> None:
        """Fetch the block-table entries the (url, header, blocks) needs lack: the files whose
        header read held whole tables need nothing."""
        requests = [
            (url, start, end, table)
            for url, header, blocks in needs
            for table in (header.block_offsets, header.block_byte_counts)
            for start, end in table.missing_ranges(blocks)
        ]
        if not requests:
            return
        answers = self.store.read(
            [(url, start, end) for url, start, end, _ in requests],
            versions={url: header.version for url, header, _ in needs},
            max_gap=BLOCK_TABLE_GAP,
        )
        for (_, start, _, table), data in zip(requests, answers, strict=True):
            table.fill(start, data)

    def complete(self, urls) -> dict[str, ImageHeader]:
        """Headers with every block-table entry loaded (for a headers file)."""

        def complete():
            headers = self.headers_for(urls)
            self.load_block_tables(
                [(url, h, np.arange(h.block_offsets.size)) for url, h in headers.items()]
            )
            return headers

        return self.restarting_on_change(complete)

    def restarting_on_change(self, action):
        """`action()`, started over when a file changes under it: its cached header is
        dropped and read again, so no result mixes bytes of two versions of a file."""
        for attempt in range(1, CHANGE_RESTARTS + 1):
            try:
                return action()
            except ObjectChanged as changed:
                if attempt == CHANGE_RESTARTS:
                    raise RangeReadError(
                        f"{changed} (it changed {attempt} times in a row: giving up)"
                    ) from None
                for level in range(MAX_IFDS):  # every level read of the file
                    self.cache.discard((changed.url, level), version=changed.expected)
                if self.file is not None:
                    self.file.forget(changed.url)
                self.store.forget(changed.url)
        raise AssertionError("unreachable")


def point_pixels(url: str, header: ImageHeader, x, y, crs: int = geo.WGS84):
    """(rows, cols, inside) of points (x/y in EPSG `crs`) in one raster."""
    check_georeferenced(url, header)
    x, y = geo.transform_points(crs, header.epsg, x, y)
    return geo.pixel_of(header.transform, header.width, header.height, x, y)


def check_georeferenced(url: str, header: ImageHeader) -> None:
    """A raster aefsql can map points to: a north-aligned transform and an EPSG code."""
    source = redact(url)
    if header.transform is None:
        raise TiffFormatError(f"{source}: file has no georeferencing")
    if header.epsg is None:
        raise TiffFormatError(f"{source}: file names no EPSG code in its GeoKeys")
    if not geo.known_epsg(header.epsg):  # else pyproj's CRSError, naming no file, at transform
        raise TiffFormatError(
            f"{source}: its GeoKeys name EPSG:{header.epsg}, a CRS PROJ does not know"
        )
    geo.check_north_aligned(header.transform, source)
