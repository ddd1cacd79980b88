"""Property-based fuzzing of the block decoders: any bytes, in any codec, give a block of
the shape asked for or one clean error (TiffFormatError), never another exception. (The
memory bound is test_codecs.py's decompression-bomb test.)"""

import zlib

import imagecodecs
import numpy as np
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aefsql.codecs import DEFLATE, LZW, NONE, ZSTD, decode_block
from aefsql.errors import TiffFormatError

BLOCK = np.random.default_rng(5).integers(-128, 128, (16, 24, 1), dtype=np.int8)
SMOOTH = np.repeat(np.arange(16, dtype=np.int8), 24).reshape(16, 24, 1)
ENCODERS = {
    NONE: lambda raw: raw,
    DEFLATE: zlib.compress,
    ZSTD: lambda raw: zstandard.ZstdCompressor().compress(raw),
    LZW: imagecodecs.lzw_encode,
}


@settings(max_examples=1200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    codec=st.sampled_from(sorted(ENCODERS)),
    predictor=st.sampled_from([1, 2]),
    smooth=st.booleans(),
    edits=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=8),
    cut=st.one_of(st.none(), st.integers(0, 600)),
    rows_needed=st.one_of(st.none(), st.integers(1, 16)),
)
def test_mutated_blocks_decode_or_fail_cleanly(codec, predictor, smooth, edits, cut, rows_needed):
    source = SMOOTH if smooth else BLOCK
    raw = bytearray(ENCODERS[codec](source.tobytes()))
    for position, value in edits:
        if raw:
            raw[position % len(raw)] = value
    if cut is not None:
        raw = raw[:cut]
    try:
        block = decode_block(
            bytes(raw),
            compression=codec,
            predictor=predictor,
            rows=16,
            cols=24,
            samples=1,
            dtype=np.dtype("i1"),
            rows_needed=rows_needed,
        )
    except TiffFormatError:
        return
    assert block.shape == ((rows_needed or 16), 24, 1) and block.dtype == np.int8
    if not edits and cut is None and predictor == 1:  # untouched: exactly the block
        assert np.array_equal(block, source[: rows_needed or 16])


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=4096), codec=st.sampled_from(sorted(ENCODERS)))
def test_random_bytes_decode_or_fail_cleanly(data, codec):
    try:
        block = decode_block(
            data,
            compression=codec,
            predictor=1,
            rows=8,
            cols=8,
            samples=1,
            dtype=np.dtype("i1"),
        )
    except TiffFormatError:
        return
    assert block.shape == (8, 8, 1)
