"""Property-based fuzzing of the header parser: any bytes give a header or one clean error."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aefsql.errors import TiffFormatError
from aefsql.format.tiff import ImageHeader, SparseBytes, parse_header
from aefsql.writer import encode_aef_cog

pytestmark = pytest.mark.slow

DATA = np.random.default_rng(3).integers(-127, 128, (64, 40, 48), dtype=np.int8)
VALID = {
    bigtiff: encode_aef_cog(
        DATA, epsg=32633, transform=(10, 0, 5e5, 0, 10, 4e6), block_size=16, bigtiff=bigtiff
    )
    for bigtiff in (False, True)
}
HEADER_END = {k: min(64 * 1024, len(v)) for k, v in VALID.items()}


def parse(raw: bytes):
    data = SparseBytes(file_size=len(raw))
    data.add(0, raw)
    return parse_header(data)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bigtiff=st.booleans(),
    edits=st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), min_size=1, max_size=12),
    cut=st.one_of(st.none(), st.integers(0, 8192)),
)
def test_mutated_headers_parse_or_fail_cleanly(bigtiff, edits, cut):
    raw = bytearray(VALID[bigtiff])
    for position, value in edits:
        raw[position % HEADER_END[bigtiff]] = value
    if cut is not None:
        raw = raw[:cut]
    try:
        header = parse(bytes(raw))
    except TiffFormatError:
        return
    assert isinstance(header, ImageHeader)
    assert header.width > 0 and header.height > 0 and header.block_offsets.size > 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_parse_or_fail_cleanly(raw):
    try:
        parse(b"II*\x00" + raw)
    except TiffFormatError:
        pass
