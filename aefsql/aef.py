"""The facts of AEF's published format, in one place for Python: 64 bands named A00..A63,
int8 values with nodata -128, the publisher's (de-)quantization, and 10 m pixels."""

from __future__ import annotations

from functools import cache

import numpy as np

BAND_COUNT = 64
NODATA = -128
PIXEL_METRES = 10.0  # the published files' pixel, on a side
STEP = 127.5  # sign(v) * (|v| / STEP)^2 de-quantizes v
SCALE = STEP**2  # sign(v) * (|v| / 127.5)^2 = v * |v| / SCALE
# The de-quantization as a formula, for file metadata that tells readers how to use the values.
DEQUANTIZATION = f"sign(v) * (abs(v) / {STEP})^2"
MODEL = "AlphaEarth Foundations (Google DeepMind), Satellite Embedding V1, annual"


def band_name(index: int) -> str:
    """The name of band `index` (0 -> 'A00')."""
    return f"A{index:02d}"


BAND_NAMES = tuple(band_name(i) for i in range(BAND_COUNT))


def quantize(values) -> np.ndarray:
    """The publisher's quantization, the inverse of `dequantize`: round(sign(v) * sqrt(|v|)
    * 127.5) as int8, clipped to +-127 (never nodata)."""
    return np.clip(np.rint(np.sign(values) * np.sqrt(np.abs(values)) * STEP), -127, 127).astype(
        np.int8
    )


def dequantize(values) -> np.ndarray:
    """The publisher's de-quantization sign(v) * (|v| / 127.5)^2 as float64; NaN for -128."""
    # A lookup in the 256 possible values: several times faster than the arithmetic.
    return dequantized_table()[np.asarray(values, dtype=np.int8).view(np.uint8)]


@cache
def dequantized_table() -> np.ndarray:
    """float64 (256,): the de-quantized value of each int8, indexed by its uint8 view."""
    v = np.arange(256, dtype=np.uint8).view(np.int8).astype(np.float64)
    return np.where(v == NODATA, np.nan, v * np.abs(v) / SCALE)


@cache
def signed_squares() -> np.ndarray:
    """int32 (256,): v * |v| for each int8 v (by its uint8 view), 0 for nodata. Summed in
    integers and divided by SCALE once, they give exactly the de-quantization above,
    averaged: means of many pixels lose nothing to float rounding."""
    v = np.arange(256, dtype=np.uint8).view(np.int8)
    return np.where(v == NODATA, 0, signed_square(v)).astype(np.int32)


def signed_square(values: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """int16 v * |v| of int8 values (nodata's too: callers leave those out), computed
    rather than looked up in `signed_squares`: a quarter of the time over many values.
    |v| <= 128, so v * |v| fits int16.

    With `out` (float32, of the values' shape), written there with no temporary: v * |v| is
    the de-quantized value times SCALE, all a cosine needs (it ignores scale), exact in
    float32. Nodata's comes out as +16384 there: callers mask it (`any_nodata`)."""
    if out is None:
        squares = values.astype(np.int16)
        np.multiply(squares, np.abs(squares), out=squares)
        return squares
    np.abs(values, out=out)
    out *= values
    return out


def any_nodata(values: np.ndarray) -> np.ndarray:
    """bool (pixels,) of int8 values (bands, pixels): where any band is NODATA. By each
    pixel's minimum, NODATA being the least int8: half the cost of comparing every value."""
    return values.min(axis=0) == NODATA
