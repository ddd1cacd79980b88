"""Block decoding: codecs, predictor 2, corrupt streams."""

import tracemalloc
import zlib

import numpy as np
import pytest
import zstandard

from aefsql.errors import TiffFormatError, UnsupportedCodecError
from aefsql.format.codecs import ADOBE_DEFLATE, DEFLATE, LZW, NONE, ZSTD, decode_block

BLOCK = np.random.default_rng(7).integers(-128, 128, (8, 16, 3), dtype=np.int8)


def decode_int8(raw: bytes, compression: int, predictor: int, shape=BLOCK.shape) -> np.ndarray:
    rows, cols, samples = shape
    return decode_block(
        raw,
        compression=compression,
        predictor=predictor,
        rows=rows,
        cols=cols,
        samples=samples,
        dtype=np.dtype("i1"),
    )


def encode(block: np.ndarray, compression: int, predictor: int) -> bytes:
    if predictor == 2:
        # The encoder's side of horizontal differencing, wrapping like int8 subtraction.
        block = np.concatenate([block[:, :1], np.diff(block, axis=1)], axis=1).astype(np.int8)
    raw = block.tobytes()
    if compression == ZSTD:
        return zstandard.ZstdCompressor().compress(raw)
    if compression in (DEFLATE, ADOBE_DEFLATE):
        return zlib.compress(raw)
    return raw


@pytest.mark.parametrize("compression", [NONE, DEFLATE, ADOBE_DEFLATE, ZSTD])
@pytest.mark.parametrize("predictor", [1, 2])
def test_round_trip(compression, predictor):
    decoded = decode_int8(encode(BLOCK, compression, predictor), compression, predictor)
    assert np.array_equal(decoded, BLOCK)


def test_predictor_2_on_big_endian_int16():
    block = np.arange(-40, 40, dtype=np.int16).reshape(4, 20, 1) * 997
    diffs = np.concatenate([block[:, :1], np.diff(block, axis=1)], axis=1).astype(">i2")
    decoded = decode_block(
        zlib.compress(diffs.tobytes()),
        compression=DEFLATE,
        predictor=2,
        rows=4,
        cols=20,
        samples=1,
        dtype=np.dtype(">i2"),
    )
    assert np.array_equal(decoded, block)


@pytest.mark.parametrize("compression", [DEFLATE, ZSTD])
def test_corrupt_stream_is_a_clean_error(compression):
    # Compressible content: random bytes would be stored raw, where no codec can see damage.
    smooth = np.repeat(np.arange(8, dtype=np.int8), 48).reshape(8, 16, 3)
    bad = bytearray(encode(smooth, compression, 1))
    bad[len(bad) // 2 :] = b"\xff" * (len(bad) - len(bad) // 2)
    with pytest.raises(TiffFormatError, match="corrupt"):
        decode_int8(bytes(bad), compression, 1)


def test_short_block_is_a_clean_error():
    with pytest.raises(TiffFormatError, match="expected 384"):
        decode_int8(zlib.compress(b"\0" * 100), DEFLATE, 1)


@pytest.mark.parametrize(
    "compression, predictor, message",
    [
        (7, 1, "compression JPEG is not supported"),
        (34887, 1, "LERC"),
        (12345, 1, "unknown \\(12345\\)"),
        (ZSTD, 3, "predictor 3 is not supported"),
    ],
)
def test_unsupported_codec_names_it(compression, predictor, message):
    with pytest.raises(UnsupportedCodecError, match=message):
        decode_int8(b"", compression, predictor, shape=(1, 1, 1))


def test_lzw_round_trip():
    imagecodecs = pytest.importorskip("imagecodecs")
    decoded = decode_int8(imagecodecs.lzw_encode(BLOCK.tobytes()), LZW, 1)
    assert np.array_equal(decoded, BLOCK)


@pytest.mark.parametrize("compression", [DEFLATE, ZSTD])
@pytest.mark.parametrize("predictor", [1, 2])
def test_partial_decode_returns_the_first_rows(compression, predictor):
    decoded = decode_block(
        encode(BLOCK, compression, predictor),
        compression=compression,
        predictor=predictor,
        rows=8,
        cols=16,
        samples=3,
        dtype=np.dtype("i1"),
        rows_needed=3,
    )
    assert np.array_equal(decoded, BLOCK[:3])


@pytest.mark.parametrize("compression", [DEFLATE, ZSTD])
def test_partial_decode_stops_before_the_rest_of_the_stream(compression):
    # Damage at the end of the stream is never reached when only the first row is wanted
    # (256 KiB of output: more than one of zstd's 128 KiB blocks).
    shape = dict(rows=128, cols=2048, samples=1, dtype=np.dtype("i1"))
    smooth = np.repeat(np.arange(128, dtype=np.int8), 2048).reshape(128, 2048, 1)
    raw = bytearray(encode(smooth, compression, 1))
    raw[-len(raw) // 4 :] = b"\xff" * (len(raw) // 4)
    first = decode_block(bytes(raw), compression=compression, predictor=1, rows_needed=1, **shape)
    assert np.array_equal(first, smooth[:1])
    with pytest.raises(TiffFormatError):
        decode_block(bytes(raw), compression=compression, predictor=1, **shape)


@pytest.mark.parametrize("compression", [LZW, DEFLATE, ZSTD])
def test_a_decompression_bomb_costs_no_more_than_the_block(compression):
    """256 MiB of zeros compress to a few hundred KiB; in a 64 x 64 block, every decoder
    stops at the 4 KiB the block holds (LZW kept inflating it all: 256 MiB and more)."""
    imagecodecs = pytest.importorskip("imagecodecs")
    zeros = bytes(256 * 2**20)
    if compression == LZW:
        bomb = imagecodecs.lzw_encode(zeros)
    elif compression == ZSTD:
        bomb = zstandard.ZstdCompressor().compress(zeros)
    else:
        bomb = zlib.compress(zeros, 9)
    del zeros
    assert len(bomb) < 2**20
    tracemalloc.start()
    try:
        block = decode_block(
            bomb,
            compression=compression,
            predictor=1,
            rows=64,
            cols=64,
            samples=1,
            dtype=np.dtype("i1"),
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert block.shape == (64, 64, 1) and not block.any()
    assert peak < 4 * 2**20  # the block, the stream's buffers: nowhere near 256 MiB
