"""Pure block decoding: compressed TIFF block bytes -> numpy array."""

from __future__ import annotations

import zlib

import numpy as np
import zstandard

from .errors import TiffFormatError, UnsupportedCodecError

NONE = 1
LZW = 5
DEFLATE = 8
ADOBE_DEFLATE = 32946
ZSTD = 50000

CODEC_NAMES = {
    1: "none",
    2: "CCITT RLE",
    3: "CCITT fax3",
    4: "CCITT fax4",
    5: "LZW",
    6: "old-style JPEG",
    7: "JPEG",
    8: "DEFLATE",
    32773: "PackBits",
    32946: "DEFLATE",
    34887: "LERC",
    34925: "LZMA",
    50000: "ZSTD",
    50001: "WebP",
    50002: "JPEG XL",
}


def codec_name(compression: int) -> str:
    return CODEC_NAMES.get(compression, f"unknown ({compression})")


def check_supported(compression: int, predictor: int) -> None:
    """Raise `UnsupportedCodecError` before any block is fetched that could not be decoded."""
    if compression not in (NONE, LZW, DEFLATE, ADOBE_DEFLATE, ZSTD):
        raise UnsupportedCodecError(
            f"compression {codec_name(compression)} is not supported "
            "(aefsql decodes ZSTD, DEFLATE, LZW and uncompressed tiles)"
        )
    if compression == LZW:
        _lzw_decoder()
    if predictor not in (1, 2):
        raise UnsupportedCodecError(
            f"predictor {predictor} is not supported (aefsql undoes predictors 1 and 2)"
        )


def decode_block(
    raw: bytes,
    *,
    compression: int,
    predictor: int,
    rows: int,
    cols: int,
    samples: int,
    dtype: np.dtype,
) -> np.ndarray:
    """Decode one block into an array of shape (rows, cols, samples) in native byte order.

    `dtype` carries the file's byte order. Raises `TiffFormatError` on a corrupt stream.
    """
    check_supported(compression, predictor)
    expected = rows * cols * samples * dtype.itemsize
    data = _decompress(raw, compression)
    if len(data) < expected:
        raise TiffFormatError(
            f"block decodes to {len(data)} bytes, expected {expected}: corrupt or truncated"
        )
    block = np.frombuffer(data, dtype=dtype, count=rows * cols * samples)
    block = block.reshape(rows, cols, samples).astype(dtype.newbyteorder("="), copy=False)
    if predictor == 2:
        # Horizontal differencing: each sample is stored as the difference to its left
        # neighbour; integer overflow wraps, exactly as the encoder's subtraction did.
        block = np.cumsum(block, axis=1, dtype=block.dtype)
    return block


def _decompress(raw: bytes, compression: int) -> bytes:
    try:
        if compression == ZSTD:
            # A streaming decompressor: GDAL's frames do not always record their content size.
            return zstandard.ZstdDecompressor().decompressobj().decompress(raw)
        if compression in (DEFLATE, ADOBE_DEFLATE):
            return zlib.decompress(raw)
        if compression == LZW:
            return _lzw_decoder()(raw)
        if compression == NONE:
            return raw
    except (zstandard.ZstdError, zlib.error, ValueError, RuntimeError) as exc:
        raise TiffFormatError(f"{codec_name(compression)} stream is corrupt: {exc}") from None
    raise UnsupportedCodecError(f"compression {codec_name(compression)} is not supported")


def _lzw_decoder():
    try:
        from imagecodecs import lzw_decode
    except ImportError:
        raise UnsupportedCodecError(
            "LZW-compressed tiles need the optional imagecodecs package: pip install 'aefsql[lzw]'"
        ) from None
    return lzw_decode
