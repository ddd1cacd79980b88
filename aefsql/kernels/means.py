"""Zonal means: each polygon's pixel count, nodata count and mean de-quantized embedding.

Raster-sequential: the pixels of every polygon are laid out first (row spans, as for
`aef_pixels`), grouped by file and ordered by block, so that each block is decoded once
however many polygons share it; their values are then summed per polygon with `bincount`.
A pixel inside several polygons counts in each; a location is counted once per polygon
across tiles and UTM zones (the ownership rule of aefsql/kernels/mosaic.py, applied by
`areas_chunks`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..aef import BAND_COUNT, SCALE, signed_squares
from ..errors import AefsqlError
from ..geometry.areas import Area
from .grouping import group_indices
from .pixels import Chunks, areas_chunks, check_area_size, chunk_blocks, chunk_pixels

if TYPE_CHECKING:
    from ..session import Session

BATCH_PIXELS = 1 << 21  # pixels read at once: 128 MiB of int8 values, a few hundred MiB in all
BANDS = list(range(BAND_COUNT))


@dataclass(frozen=True)
class ZonalMeans:
    """One entry per (polygon, year), polygon-major: `polygon` indexes the input areas."""

    polygon: np.ndarray  # int64
    year: np.ndarray  # int64
    pixels: np.ndarray  # int64: pixel centres inside
    nodata_pixels: np.ndarray  # int64: of which some band is nodata
    centroid_pixel: np.ndarray  # bool: no centre inside; the pixel under the centroid stands in
    means: np.ndarray  # float64 (entries, 64): NaN where no pixel is valid


def zonal_means(
    session: Session, areas: list[Area], years, level: int = 0, max_bytes=None
) -> ZonalMeans:
    """The zonal means of `areas` in each of `years` (at `level`); `max_bytes` (None: the
    streamed budget) bounds each area's pixels x 64 bands x years."""
    years = [int(y) for y in years]
    slot = {year: k for k, year in enumerate(years)}
    entries = len(areas) * len(years)
    sums = np.zeros((entries, len(BANDS)))
    pixels = np.zeros(entries, np.int64)
    valid = np.zeros(entries, np.int64)
    centroid = np.zeros(entries, dtype=bool)
    chunks, owner = _all_chunks(session, areas, years, level, max_bytes)
    entry = owner * len(years) + np.array([slot[int(y)] for y in chunks.year], np.int64)
    centroid[entry[chunks.centroid]] = True
    squares = signed_squares()
    for batch in _batches(session, chunks, level):
        found = chunk_pixels(session, _subset(chunks, batch), BANDS, level, coordinates=False)
        if found.chunk.size == 0:
            continue
        # Pixels come run by run (each chunk's pixels consecutive, in chunk order): sums
        # over runs first, a few per polygon, then per polygon.
        starts = np.flatnonzero(np.diff(found.chunk, prepend=-1))
        run_entry = entry[batch][found.chunk[starts]]
        run_pixels = np.diff(starts, append=found.chunk.size)
        good = np.ones(found.chunk.size, dtype=bool)
        for k in range(len(BANDS)):
            null = found.band_null(k)
            if null is not None:
                good &= ~null
        pixels += np.bincount(run_entry, weights=run_pixels, minlength=entries).astype(np.int64)
        run_valid = np.add.reduceat(good, starts, dtype=np.int64)
        valid += np.bincount(run_entry, weights=run_valid, minlength=entries).astype(np.int64)
        for k in range(len(BANDS)):
            codes = found.values[k].view(np.uint8)  # the table is indexed by uint8 view
            terms = squares[codes]
            if not good.all():
                terms[~good] = 0
            run_sums = np.add.reduceat(terms, starts, dtype=np.int64)
            sums[:, k] += np.bincount(run_entry, weights=run_sums, minlength=entries)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / SCALE / valid[:, None]
    means[valid == 0] = np.nan
    return ZonalMeans(
        polygon=np.repeat(np.arange(len(areas)), len(years)),
        year=np.tile(np.array(years, np.int64), len(areas)),
        pixels=pixels,
        nodata_pixels=pixels - valid,
        centroid_pixel=centroid,
        means=means,
    )


def _all_chunks(session: Session, areas, years, level, max_bytes=None):
    """Every area's chunks, and the area each chunk belongs to; an area whose pixels x 64
    bands x years exceed `max_bytes` (None: the streamed budget) is refused first, before
    any chunk is laid out or header read (`check_area_size`)."""
    for i, area in enumerate(areas):
        try:
            check_area_size(area, years, len(BANDS), max_bytes, level, session.catalog.tiles)
        except AefsqlError as exc:
            raise AefsqlError(f"polygon {i + 1}: {exc}") from None
    return areas_chunks(session, areas, years, level)


def _batches(session: Session, chunks: Chunks, level: int):
    """Indices of chunks, file by file and year by year, in block order, cut between blocks
    into batches of about BATCH_PIXELS pixels (a block's chunks stay in one batch, so each
    block is decoded once)."""
    counts = chunks.col1 - chunks.col0
    blocks = chunk_blocks(session, chunks, level)
    for of_path in group_indices(chunks.path, np.arange(counts.size)).values():
        for runs in group_indices(chunks.year, of_path).values():
            block = blocks[runs]
            order = np.lexsort((chunks.col0[runs], chunks.row[runs], block))
            runs, block = runs[order], block[order]
            firsts = np.flatnonzero(np.diff(block, prepend=-1))  # where each block starts
            sizes = np.add.reduceat(counts[runs], firsts)
            start, total = 0, 0
            for k, size in enumerate(sizes.tolist()):
                total += size
                if total >= BATCH_PIXELS or k == len(sizes) - 1:
                    stop = int(firsts[k + 1]) if k + 1 < len(firsts) else runs.size
                    yield runs[start:stop]
                    start, total = stop, 0


def _subset(chunks: Chunks, index: np.ndarray) -> Chunks:
    return Chunks(*(getattr(chunks, name)[index] for name in Chunks.__annotations__))
