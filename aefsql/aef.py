"""AEF's int8 quantization: the publisher's de-quantization, in one place for Python."""

from __future__ import annotations

from functools import cache

import numpy as np

NODATA = -128
SCALE = 127.5**2  # sign(v) * (|v| / 127.5)^2 = v * |v| / SCALE


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
    v = np.arange(256, dtype=np.uint8).view(np.int8).astype(np.int32)
    return np.where(v == NODATA, 0, v * np.abs(v)).astype(np.int32)
