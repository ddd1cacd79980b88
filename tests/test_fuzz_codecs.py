"""Property-based fuzzing of the block decoders: any bytes, in any codec, give a block of
the shape asked for or one clean error (TiffFormatError), never another exception. (The
memory bound is test_codecs.py's decompression-bomb test.) Findings of the longer atheris
runs (fuzz/fuzz_codecs.py) are pinned at the end."""

import subprocess
import sys
import textwrap
import zlib

import imagecodecs
import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aefsql.errors import TiffFormatError
from aefsql.format.codecs import DEFLATE, LZW, NONE, ZSTD, decode_block

pytestmark = pytest.mark.slow

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


def lzw_9bit(codes: list[int]) -> bytes:
    """9-bit codes, MSB first (TIFF LZW before its table grows past 510 entries)."""
    bits = "".join(format(code, "09b") for code in codes)
    bits += "0" * (-len(bits) % 8)
    return int(bits, 2).to_bytes(len(bits) // 8, "big")


# Clear, then code 300 (not a literal: the table holds none but them after a Clear), then
# literals. imagecodecs' decoder took 300 for a table entry it had not written in this call
# and copied from wherever its uninitialised memory pointed (atheris, 2026-12-02).
CODE_300_AFTER_CLEAR = lzw_9bit([256, 300] + [65] * 8 + [257])


def decode_lzw_row(raw: bytes) -> np.ndarray:
    return decode_block(
        raw, compression=LZW, predictor=1, rows=1, cols=8, samples=1, dtype=np.dtype("u1")
    )


def test_a_table_code_right_after_a_clear_is_refused():
    with pytest.raises(TiffFormatError, match="code 300 follows a Clear code"):
        decode_lzw_row(CODE_300_AFTER_CLEAR)
    with pytest.raises(TiffFormatError, match="code 300 follows a Clear code"):  # a later Clear
        decode_lzw_row(lzw_9bit([256, 65, 66, 256, 300] + [65] * 8 + [257]))
    # Literals after every Clear (and Clears in a row) decode.
    row = decode_lzw_row(lzw_9bit([256, 256, 65, 66, 256, 67] + [68] * 5 + [257]))
    assert bytes(row.ravel()) == b"ABCDDDDD"


def test_a_table_code_right_after_a_clear_does_not_crash_on_a_dirty_heap():
    """The crash needs the freed memory imagecodecs' table reuses to hold pointers: free a
    block of the table's size full of them first, as a long-running process has."""
    script = textwrap.dedent(
        f"""
        import ctypes
        import numpy as np
        from aefsql.format.codecs import LZW, decode_block
        from aefsql.errors import TiffFormatError

        libc = ctypes.CDLL(None)
        libc.malloc.restype = ctypes.c_void_p
        size = 32 + 16 * 5120  # imagecodecs' LZW handle and table
        for _ in range(4):
            block = libc.malloc(size)
            words = (ctypes.c_int64 * (size // 8)).from_address(block)
            words[:] = [0x10, 1000] * (size // 16)  # entries: a bad pointer, a length
            libc.free(ctypes.c_void_p(block))
            try:
                decode_block({CODE_300_AFTER_CLEAR!r}, compression=LZW, predictor=1, rows=1,
                             cols=8, samples=1, dtype=np.dtype("u1"))
            except TiffFormatError:
                print("refused")
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-2000:]  # was -11 (SIGSEGV)
    assert run.stdout.split() == ["refused"] * 4
