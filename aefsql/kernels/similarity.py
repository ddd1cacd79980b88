"""Similarity search: the query vector a search ranks pixels by (`query_vector`), and each
pixel's cosine with it, computed from its int8 values (`pixel_similarity`).

The query is GeoVibes' (and Rocchio's, with the original query weighted 0):
2·mean(positives) − mean(negatives), or mean(positives) without negatives. Plain
mean(positives) − mean(negatives) is the direction from the negatives to the positives: when
both are close (the usual case: "this field, not that field"), it is a small difference that
can point far from either, and the ranking forgets what the positives look like; adding the
positives' mean once more keeps them the anchor and only pushes away from the negatives.

Cosine does not care about scale, and de-quantization is v·|v| / 127.5² (aef.SCALE), so a
pixel's cosine with the query is that of its v·|v|: int8 becomes float32 v·|v| a piece at a
time (a piece stays in cache), then one BLAS matrix-vector product gives the dot products and
one einsum the norms (numpy lets go of the GIL). No pixel's 64 de-quantized values are ever
kept. An area's cosines are computed as its blocks are read (`Cosines`: in the decode
threads, a block at a time); `pixel_similarity` computes those of pixels in memory.
"""

from __future__ import annotations

import math
import numbers
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .. import threads
from ..aef import BAND_COUNT, NODATA, any_nodata, signed_square
from ..errors import AefsqlError
from ..options import ANY_VALUE, Mention, OptionError
from .engine import BlockEngine, RunLayout, _BlockRuns, nodata_of

if TYPE_CHECKING:
    from .pixels import Pixels

# Pixels a task: 64 x 4,096 float32 is 1 MiB, so a task's pieces stay in cache (of 1,024 to
# 8,192 pixels, 4,096 was fastest here, on 2 cores with 1 MiB of L2 each).
SIMILARITY_PIECE = 1 << 12


def query_vector(reference, negatives=None) -> np.ndarray:
    """float64 (64,): the unit query vector of a search. `reference` is one embedding (64
    numbers, de-quantized as aef_vector and `embedding` columns give them) or a list of them
    (their mean); `negatives` a list of them (or one) whose mean is pushed away:
    2·mean(reference) − mean(negatives). Refused, naming the parameter: a vector of another
    length, a NULL or NaN item, an empty list, a query of length zero."""
    positives = _embeddings(reference, "reference")
    query = positives.mean(axis=0)
    if negatives is not None:
        query = 2 * query - _embeddings(negatives, "negatives").mean(axis=0)
    norm = float(np.linalg.norm(query))
    if norm == 0 or not math.isfinite(norm):
        why = (
            "the reference is all zeros"
            if negatives is None
            else "2·mean(reference) − mean(negatives) is all zeros"
        )
        raise OptionError(
            "{}: " + why + ", which has no direction to compare with",
            Mention("reference", ANY_VALUE),
        )
    return query / norm


def _embeddings(value, name: str) -> np.ndarray:
    """float64 (k, 64) of one embedding or a list of them, checked."""
    if value is None:
        raise OptionError(
            "{} is NULL: pass one embedding (64 numbers) or a list of them",
            Mention(name, ANY_VALUE),
        )
    items = _as_list(value, name)
    if not items:
        raise OptionError(
            "{} is an empty list: pass one embedding (64 numbers) or a list of them",
            Mention(name, ANY_VALUE),
        )
    nested = [v is not None and not _is_number(v) for v in items]
    if any(nested) and any(_is_number(v) for v in items):
        raise OptionError(
            "{} mixes numbers and lists: pass one embedding or a list of them",
            Mention(name, ANY_VALUE),
        )
    rows = [_as_list(v, name) if v is not None else None for v in items] if any(nested) else [items]
    for k, row in enumerate(rows):
        which = f" (item {k + 1})" if any(nested) else ""
        if row is None:
            raise OptionError(
                "{}" + which + " is NULL: an embedding is 64 numbers", Mention(name, ANY_VALUE)
            )
        if len(row) != BAND_COUNT:
            raise OptionError(
                "{}" + which + f" has {len(row)} numbers: an embedding has {BAND_COUNT}",
                Mention(name, ANY_VALUE),
            )
        if not all(_is_number(v) for v in row):
            raise OptionError(
                "{}" + which + " holds a NULL or a non-number: an embedding is 64 numbers",
                Mention(name, ANY_VALUE),
            )
    vectors = np.array(rows, dtype=np.float64)
    if not np.isfinite(vectors).all():
        raise OptionError(
            "{} holds NaN or infinity: an embedding is 64 finite numbers", Mention(name, ANY_VALUE)
        )
    return vectors


def _as_list(value, name: str) -> list:
    if isinstance(value, np.ndarray):
        return list(value)
    if isinstance(value, dict):  # SQL: a STRUCT, such as aef_embedding's bands
        raise OptionError(
            "{} is a struct (aef_embedding's int8 bands?): pass its de-quantized vector, "
            "aef_vector(…), a FLOAT[64]",
            Mention(name, ANY_VALUE),
        )
    if isinstance(value, str | bytes) or not hasattr(value, "__len__"):
        raise OptionError(
            "{} is one embedding (64 numbers) or a list of them, not " + f"{type(value).__name__}",
            Mention(name, ANY_VALUE),
        )
    return list(value)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def pixel_similarity(pixels: Pixels, query: np.ndarray) -> np.ndarray:
    """float32 (pixels,): each pixel's cosine with `query` (float64 (64,), `query_vector`'s),
    NaN where any band is nodata (or missing), or where every band is 0 (no direction).
    Needs all 64 bands, in order. (Over pixels in memory; an area's are computed as they are
    read: `Cosines`.)"""
    if pixels.bands != list(range(BAND_COUNT)):
        raise AefsqlError("a similarity needs all 64 bands, in order")
    values, n = pixels.values, pixels.values.shape[1]
    similarity = np.empty(n, np.float32)
    if n == 0:
        return similarity
    query = np.ascontiguousarray(query, np.float32)
    # One int8 comparison in each piece when every pixel's file has the same nodata and all
    # 64 bands (AEF's files); otherwise each band's NULLs once, here.
    nodata = pixels.common_nodata if pixels.fewest_bands >= BAND_COUNT else None
    null = None
    if nodata is None:
        null = np.zeros(n, bool)
        for k in range(BAND_COUNT):
            band = pixels.band_null(k)
            if band is not None:
                null |= band
    buffers = threading.local()  # a thread's float32 pieces, reused: no page faults

    def piece(start: int) -> None:
        stop = min(start + SIMILARITY_PIECE, n)
        if getattr(buffers, "f", None) is None:
            buffers.f = np.empty((BAND_COUNT, SIMILARITY_PIECE), np.float32)
        similarity[start:stop] = _cosines(values[:, start:stop], query, nodata, buffers.f)

    list(threads.pool("similarity").map(piece, range(0, n, SIMILARITY_PIECE)))
    if null is not None:
        similarity[null] = np.nan
    return similarity


def _cosines(part: np.ndarray, query: np.ndarray, nodata: int | None, scratch) -> np.ndarray:
    """float32 (pixels,): the cosine of each pixel of int8 `part` (64, pixels) with the unit
    float32 `query`, NaN where every band is 0 or (unless `nodata` is None) any band is
    `nodata`. `scratch`: float32 (64, at least pixels), for the v·|v| (`signed_square`)."""
    f = signed_square(part, out=scratch[:, : part.shape[1]])
    dot = query @ f
    norm = np.sqrt(np.einsum("ij,ij->j", f, f))
    with np.errstate(divide="ignore", invalid="ignore"):
        result = dot / norm
    # (float32 rounding puts a pixel's cosine with itself at 1.0000001: a cosine is in [-1, 1])
    np.clip(result, -1.0, 1.0, out=result)
    result[norm == 0] = np.nan
    if nodata == NODATA:
        result[any_nodata(part)] = np.nan
    elif nodata is not None:
        result[(part == np.int8(nodata)).any(axis=0)] = np.nan
    return result


@dataclass(frozen=True)
class Cosines:
    """Each pixel's cosine with a unit query vector, computed from a file's blocks as they
    are decoded (`chunk_pixels`' `derive`): a block's 64 planes are gathered into the block's
    own int8 values and, as its last plane comes, turned into cosines piece by piece in that
    decode thread (`_cosines`) — no (64, pixels) array of the whole read, and the cosines of
    one block overlap the decoding of the next. NaN where any band is the file's nodata,
    every band 0, or the file lacks bands (a vector needs all 64: nothing is read then).
    Equal queries make equal objects: a read ahead is matched by it."""

    query: tuple[float, ...]  # float32 values of the unit query vector

    def __call__(self, engine: BlockEngine, url: str, header, layout: RunLayout) -> np.ndarray:
        """float32 (layout.pixels,): the cosines of `layout`'s pixels of the file `url`."""
        out = np.full(layout.pixels, np.nan, np.float32)
        if header.samples_per_pixel < BAND_COUNT or not layout.pixels:
            return out
        query = np.asarray(self.query, np.float32)
        nodata = nodata_of(url, header)

        def block(start: int, end: int, rows, cols, width: int) -> _BlockCosines:
            runs = _BlockRuns(0, end - start, rows, cols, width)
            return _BlockCosines(runs, out[start:end], query, nodata)

        engine.read_layout(url, header, layout, list(range(BAND_COUNT)), reduce=block)
        return out


class _BlockCosines:
    """One block's pixels of a `Cosines` read (the engine's `reduce`): each plane gathered
    into the block's int8 values as it is decoded; after the 64th, the cosines. A block's
    planes come one task after another (never two threads at once), as in means.py."""

    def __init__(self, runs: _BlockRuns, out: np.ndarray, query: np.ndarray, nodata: int):
        self.runs, self.out, self.query, self.nodata = runs, out, query, nodata
        self.values: np.ndarray | None = None
        self.planes_in = 0

    @property
    def rows_needed(self) -> int:
        return self.runs.rows_needed

    def gather(self, block: np.ndarray, _values, columns, samples) -> None:
        if self.values is None:
            self.values = np.empty((BAND_COUNT, self.out.size), np.int8)
        self.runs.gather(block, self.values, columns, samples)
        self.planes_in += len(columns)
        if self.planes_in == BAND_COUNT:
            values, self.values = self.values, None
            scratch = np.empty((BAND_COUNT, min(SIMILARITY_PIECE, values.shape[1])), np.float32)
            for start in range(0, values.shape[1], SIMILARITY_PIECE):
                stop = start + SIMILARITY_PIECE
                self.out[start:stop] = _cosines(
                    values[:, start:stop], self.query, self.nodata, scratch
                )
