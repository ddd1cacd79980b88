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
    rows_needed: int | None = None,
) -> np.ndarray:
    """Decode the first `rows_needed` rows (default all) of a block of shape
    (rows, cols, samples) into native byte order.

    Decompression stops once those rows are out: a point near the top of a 1024-row block costs
    a fraction of the whole inflate. `dtype` carries the file's byte order. Raises
    `TiffFormatError` on a corrupt stream.
    """
    check_supported(compression, predictor)
    rows_needed = rows if rows_needed is None else min(rows_needed, rows)
    expected = rows_needed * cols * samples * dtype.itemsize
    data = _decompress(raw, compression, expected)
    if len(data) < expected:
        raise TiffFormatError(
            f"block decodes to {len(data)} bytes, expected {expected}: corrupt or truncated"
        )
    count = rows_needed * cols * samples
    block = np.frombuffer(data, dtype=dtype, count=count).reshape(rows_needed, cols, samples)
    block = block.astype(dtype.newbyteorder("="), copy=False)
    if predictor == 2:
        # Horizontal differencing: each sample is stored as the difference to its left
        # neighbour; integer overflow wraps, exactly as the encoder's subtraction did.
        block = np.cumsum(block, axis=1, dtype=block.dtype)
    return block


def _decompress(raw: bytes, compression: int, length: int) -> bytes:
    """At least the first `length` bytes of the decompressed stream (all when shorter)."""
    try:
        if compression == ZSTD:
            # A stream reader stops early; GDAL's frames do not always record their size.
            with zstandard.ZstdDecompressor().stream_reader(raw) as reader:
                return _read_fully(reader, length)
        if compression in (DEFLATE, ADOBE_DEFLATE):
            return zlib.decompressobj().decompress(raw, length)
        if compression == LZW:
            # Into a buffer of the size asked for: the decoder stops there, so a small
            # stream that would inflate to gigabytes costs no more than the block holds.
            return bytes(_lzw_decoder()(raw, out=bytearray(length)))
        if compression == NONE:
            return raw
    except (zstandard.ZstdError, zlib.error, ValueError, RuntimeError) as exc:
        raise TiffFormatError(f"{codec_name(compression)} stream is corrupt: {exc}") from None
    raise UnsupportedCodecError(f"compression {codec_name(compression)} is not supported")


def _read_fully(reader, length: int) -> bytes:
    parts, have = [], 0
    while have < length:
        part = reader.read(length - have)
        if not part:
            break
        parts.append(part)
        have += len(part)
    return b"".join(parts)


def _lzw_decoder():
    try:
        from imagecodecs import lzw_decode
    except ImportError:
        raise UnsupportedCodecError(
            "LZW-compressed tiles need the optional imagecodecs package: pip install 'aefsql[lzw]'"
        ) from None
    return lzw_decode
