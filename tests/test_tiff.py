"""The header parser against tifffile (an independent reader) on files tifffile wrote."""

import struct

import numpy as np
import pytest
import tifffile
from helpers import GEOKEYS_32633, geotags, write

from aefsql.errors import TiffFormatError
from aefsql.format.tiff import MissingBytes, SparseBytes, parse_header


def whole(path) -> SparseBytes:
    raw = path.read_bytes()
    data = SparseBytes(file_size=len(raw))
    data.add(0, raw)
    return data


CASES = {
    "planar_tiled_zlib_little": dict(
        planarconfig="separate", tile=(32, 48), compression="zlib", byteorder="<"
    ),
    "planar_tiled_zlib_big_endian": dict(
        planarconfig="separate", tile=(32, 48), compression="zlib", byteorder=">"
    ),
    "chunky_tiled_zstd_bigtiff": dict(
        planarconfig="contig", tile=(64, 64), compression="zstd", bigtiff=True
    ),
    "planar_strips_none": dict(planarconfig="separate", rowsperstrip=7),
    "planar_tiled_predictor2": dict(
        planarconfig="separate", tile=(32, 32), compression="zlib", predictor=True
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_header_fields_match_tifffile(tmp_path, case):
    options = CASES[case]
    shape = (100, 90, 5) if options["planarconfig"] == "contig" else (5, 100, 90)
    data = np.random.default_rng(1).integers(-128, 128, shape, dtype=np.int8)
    path = write(tmp_path / f"{case}.tif", data, **options)

    header = parse_header(whole(path))
    page = tifffile.TiffFile(path).pages[0]
    assert (header.width, header.height) == (page.imagewidth, page.imagelength) == (90, 100)
    assert header.samples_per_pixel == 5
    assert header.planar_separate == (page.planarconfig == 2)
    assert header.tiled == page.is_tiled
    if page.is_tiled:
        assert (header.block_width, header.block_height) == (page.tilewidth, page.tilelength)
    else:
        assert (header.block_width, header.block_height) == (90, page.rowsperstrip)
    assert header.compression == page.compression
    assert header.predictor == page.predictor
    assert header.block_offsets.tolist() == list(page.dataoffsets)
    assert header.block_byte_counts.tolist() == list(page.databytecounts)
    assert header.dtype.kind == "i" and header.dtype.itemsize == 1
    assert header.epsg == 32633
    assert header.nodata == -128.0
    t = header.transform
    assert (t.a, t.b, t.c, t.d, t.e, t.f) == (10.0, 0.0, 500000.0, 0.0, 10.0, 4000000.0)
    assert t.south_up


def test_pixel_scale_and_tiepoint_north_up(tmp_path):
    tags = [
        (33550, "d", 3, (30.0, 30.0, 0.0), True),
        (33922, "d", 6, (0.0, 0.0, 0.0, 300000.0, 6000000.0, 0.0), True),
        (34735, "H", 16, GEOKEYS_32633, True),
    ]
    path = write(
        tmp_path / "tiepoint.tif",
        np.zeros((4, 64, 64), np.int8),
        planarconfig="separate",
        tile=(32, 32),
        extratags=tags,
    )
    t = parse_header(whole(path)).transform
    assert (t.a, t.b, t.c, t.d, t.e, t.f) == (30.0, 0.0, 300000.0, 0.0, -30.0, 6000000.0)
    assert not t.south_up


def test_pixel_is_point_shifts_half_a_pixel(tmp_path):
    keys = (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 2, 3072, 0, 1, 32633)
    path = write(
        tmp_path / "point.tif",
        np.zeros((2, 32, 32), np.int8),
        planarconfig="separate",
        tile=(16, 16),
        extratags=geotags(geokeys=keys),
    )
    t = parse_header(whole(path)).transform
    assert (t.c, t.f) == (500000.0 - 5.0, 4000000.0 - 5.0)


def test_overview_first_is_skipped_for_full_resolution(tmp_path):
    """A file whose first IFD is a reduced-resolution image: the parser walks to the full one."""
    path = tmp_path / "overview_first.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(
            np.zeros((3, 16, 16), np.int8),
            photometric="minisblack",
            tile=(16, 16),
            planarconfig="separate",
            subfiletype=1,
            metadata=None,
        )
        tif.write(
            np.ones((3, 32, 48), np.int8),
            photometric="minisblack",
            tile=(16, 16),
            planarconfig="separate",
            metadata=None,
            extratags=geotags(),
        )
    header = parse_header(whole(path))
    assert (header.width, header.height) == (48, 32)


def test_missing_bytes_names_the_range_to_fetch(tmp_path):
    path = write(
        tmp_path / "f.tif", np.zeros((3, 64, 64), np.int8), planarconfig="separate", tile=(16, 16)
    )
    raw = path.read_bytes()
    data = SparseBytes()
    data.add(0, raw[:16])
    rounds = 0
    while True:
        try:
            header = parse_header(data)
            break
        except MissingBytes as missing:
            assert missing.offset + missing.length <= len(raw)
            data.add(missing.offset, raw[missing.offset : missing.offset + missing.length])
            rounds += 1
    assert rounds >= 2
    assert header.block_offsets.size == 3 * 16


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"", "shorter than a TIFF header"),
        (b"GIF89a" + b"\0" * 100, "not a TIFF file"),
        (b"II\x2c\x00" + b"\0" * 100, "not a TIFF file"),
        (b"II\x2b\x00\x04\x00" + b"\0" * 100, "BigTIFF with offset size 4"),
        (b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 0), "implausible IFD entry count"),
        (b"II*\x00" + struct.pack("<I", 5000), "past the end of the file"),
    ],
)
def test_bad_input_is_a_clean_error(raw, message):
    data = SparseBytes(file_size=len(raw))
    data.add(0, raw)
    with pytest.raises(TiffFormatError, match=message):
        parse_header(data)


def test_truncated_file_is_a_clean_error(tmp_path):
    path = write(
        tmp_path / "f.tif", np.zeros((64, 64, 64), np.int8), planarconfig="separate", tile=(16, 16)
    )
    raw = path.read_bytes()
    ifd_offset = struct.unpack("<I", raw[4:8])[0]
    data = SparseBytes(file_size=ifd_offset + 40)
    data.add(0, raw[: ifd_offset + 40])
    with pytest.raises(TiffFormatError, match="past the end of the file"):
        parse_header(data)


def test_ifd_loop_is_a_clean_error():
    # One IFD with one entry, whose next-IFD pointer points back at itself.
    entry = struct.pack("<HHII", 254, 4, 1, 1)  # NewSubfileType = reduced: keep walking
    raw = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + entry + struct.pack("<I", 8)
    data = SparseBytes(file_size=len(raw))
    data.add(0, raw)
    with pytest.raises(TiffFormatError, match="loops"):
        parse_header(data)
