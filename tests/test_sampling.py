"""The sampler on layouts GDAL does not write (tifffile writes them): big-endian, strips,
uncompressed, chunky; plus files the sampler must refuse clearly."""

import numpy as np
import pytest
import tifffile
from helpers import GEOKEYS_32633, geotags, pixel_lonlat, write

from aefsql.errors import TiffFormatError
from aefsql.kernels import points
from aefsql.kernels.engine import BlockEngine
from aefsql.storage.store import ByteStore

ROWS, COLS, BANDS = 100, 90, 6


def all_pixels():
    rows, cols = np.divmod(np.arange(ROWS * COLS), COLS)
    return rows, cols


LAYOUTS = {
    "big_endian_planar_tiled_zlib": dict(
        planarconfig="separate", tile=(32, 32), compression="zlib", byteorder=">"
    ),
    "planar_strips_uncompressed": dict(planarconfig="separate", rowsperstrip=9),
    "chunky_strips_zstd": dict(planarconfig="contig", rowsperstrip=16, compression="zstd"),
    "chunky_tiled_predictor2_bigtiff": dict(
        planarconfig="contig", tile=(48, 32), compression="zlib", predictor=True, bigtiff=True
    ),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_pixel_matches_what_tifffile_wrote(tmp_path, layout):
    options = LAYOUTS[layout]
    data = np.random.default_rng(5).integers(-128, 128, (BANDS, ROWS, COLS), dtype=np.int8)
    stored = np.moveaxis(data, 0, -1) if options["planarconfig"] == "contig" else data
    path = write(tmp_path / f"{layout}.tif", stored, **options)
    assert np.array_equal(np.asarray(tifffile.imread(path)), stored)

    rows, cols = all_pixels()
    lon, lat = pixel_lonlat(rows, cols)
    samples = points.sample(
        BlockEngine(ByteStore()), [str(path)] * rows.size, lon, lat, list(range(BANDS))
    )
    expected = data[:, rows, cols].T
    assert samples.covered.all()
    assert np.array_equal(samples.values, expected)
    assert np.array_equal(samples.valid, expected != -128)


def test_bands_beyond_the_file_are_null(tmp_path):
    data = np.ones((2, 32, 32), np.int8)
    path = write(tmp_path / "two.tif", data, planarconfig="separate", tile=(16, 16))
    lon, lat = pixel_lonlat(np.array([3]), np.array([4]))
    samples = points.sample(BlockEngine(ByteStore()), [str(path)], lon, lat, [0, 1, 2, 63])
    assert samples.covered.tolist() == [True]
    assert samples.valid.tolist() == [[True, True, False, False]]


def test_points_outside_the_raster_are_not_covered(tmp_path):
    path = write(
        tmp_path / "f.tif", np.ones((2, 32, 32), np.int8), planarconfig="separate", tile=(16, 16)
    )
    rows = np.array([-1, 0, 31, 32, 5, 5])
    cols = np.array([5, 0, 31, 5, -1, 32])
    lon, lat = pixel_lonlat(rows, cols)
    lon = np.r_[lon, np.nan, 200.0]
    lat = np.r_[lat, 10.0, 10.0]
    samples = points.sample(BlockEngine(ByteStore()), [str(path)] * lon.size, lon, lat, [0])
    assert samples.covered.tolist() == [False, True, True, False, False, False, False, False]


@pytest.mark.parametrize(
    "tags, data, message",
    [
        (
            geotags(matrix=(10.0, 2.0, 0, 500000.0, 1.0, 10.0, 0, 4e6, 0, 0, 0, 0, 0, 0, 0, 1)),
            np.ones((2, 16, 16), np.int8),
            "rotated or sheared",
        ),
        (
            [(34264, "d", 16, (10.0, 0, 0, 5e5, 0, 10.0, 0, 4e6, 0, 0, 0, 0, 0, 0, 0, 1), True)],
            np.ones((2, 16, 16), np.int8),
            "names no EPSG code",
        ),
        (
            [(34735, "H", 16, GEOKEYS_32633, True)],
            np.ones((2, 16, 16), np.int8),
            "no georeferencing",
        ),
        (geotags(), np.ones((2, 16, 16), np.uint16), "samples are uint16, expected int8"),
    ],
)
def test_unusable_files_are_refused_clearly(tmp_path, tags, data, message):
    path = write(tmp_path / "bad.tif", data, planarconfig="separate", tile=(16, 16), extratags=tags)
    lon, lat = pixel_lonlat(np.array([1]), np.array([1]))
    with pytest.raises(TiffFormatError, match=message) as error:
        points.sample(BlockEngine(ByteStore()), [str(path)], lon, lat, [0])
    assert "bad.tif" in str(error.value)
