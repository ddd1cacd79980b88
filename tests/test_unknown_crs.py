"""A file whose GeoKeys name an EPSG code PROJ does not know is a per-file failure like any
other: named, and covered by `on_error := 'null'` (it used to escape as pyproj's raw
CRSError, naming no file, whatever on_error said)."""

import shutil
import struct

import numpy as np
import pytest
import rasterio
import tifffile
from helpers import tile_points
from pyproj import CRS
from pyproj.exceptions import CRSError

import aefsql

UNKNOWN_EPSG = 32799  # in the UTM range's gap: no CRS (32767 is GeoTIFF's "user-defined")
PROJECTED_CS_TYPE = 3072  # the GeoKey naming a projected CRS by EPSG code
BROKEN = "2023/18S/tile3-0000000000-0000000000.tiff"


def patch_epsg(path, code: int) -> None:
    """Rewrite, in place, the ProjectedCSTypeGeoKey of every IFD that has GeoKeys."""
    with tifffile.TiffFile(path) as tif:
        order = tif.byteorder
        places = []
        for page in tif.pages:
            tag = page.tags.get(34735)  # GeoKeyDirectoryTag: shorts, 4 per key after 4
            if tag is None:
                continue
            keys = tag.value
            for i in range(1, keys[3] + 1):
                if keys[4 * i] == PROJECTED_CS_TYPE and keys[4 * i + 1] == 0:
                    places.append(tag.valueoffset + 2 * (4 * i + 3))
    assert places, "no ProjectedCSTypeGeoKey to patch"
    with open(path, "r+b") as f:
        for place in places:
            f.seek(place)
            f.write(struct.pack(order + "H", code))


@pytest.fixture(scope="module")
def broken_collection(gdal_collection, tmp_path_factory):
    """The collection with tile 3's 2023 file in EPSG:32799 (the others linked, not copied)."""
    folder = tmp_path_factory.mktemp("unknown-crs")
    shutil.copy(gdal_collection.folder / "index.parquet", folder / "index.parquet")
    for tile in gdal_collection.folder.rglob("*.tiff"):
        relative = tile.relative_to(gdal_collection.folder)
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        if relative.as_posix() == BROKEN:
            shutil.copy(tile, folder / relative)
        else:
            (folder / relative).symlink_to(tile)
    patch_epsg(folder / BROKEN, UNKNOWN_EPSG)
    return folder


def test_the_patched_file_names_a_code_proj_does_not_know(broken_collection):
    """The fixture, checked with GDAL and PROJ: the GeoKey now says 32799, which no CRS is."""
    with pytest.raises(CRSError):
        CRS.from_epsg(UNKNOWN_EPSG)
    with tifffile.TiffFile(broken_collection / BROKEN) as tif:
        assert tif.pages[0].geotiff_tags["ProjectedCSTypeGeoKey"] == UNKNOWN_EPSG
    with rasterio.open(broken_collection / BROKEN) as ds:  # the pixels are untouched
        assert ds.read(1).shape == ds.shape


def points_of_tiles_3_and_1():
    lon3, lat3, _, _ = tile_points(3, 4, seed=21)
    lon1, lat1, _, _ = tile_points(1, 4, seed=22)
    return np.concatenate([lon3, lon1]), np.concatenate([lat3, lat1]), None


def sampled(catalog: str, lon, lat, on_error: str = "null") -> list:
    con = aefsql.connect(catalog=catalog)
    try:
        con.execute("CREATE TABLE pts AS SELECT unnest(?) AS lon, unnest(?) AS lat", [lon, lat])
        return con.execute(
            "SELECT * EXCLUDE (lon, lat) FROM aef_sample_points('pts', years := 2023, "
            f"on_error := '{on_error}')"
        ).fetchall()
    finally:
        con.close()


def test_on_error_null_gives_the_rows_of_that_file_null_and_its_name(
    broken_collection, gdal_collection
):
    lon, lat, _ = points_of_tiles_3_and_1()
    rows = sampled(str(broken_collection / "index.parquet"), lon, lat)
    assert len(rows) == 8  # none lost
    for row in rows[:4]:  # tile 3's rows: NULL bands, the file and the reason named
        *bands, error = row[1:]
        assert bands == [None] * 64
        assert BROKEN in error and "EPSG:32799" in error and "PROJ" in error
    # Tile 1's rows are as the untouched collection gives them (test_sampling checks those
    # against GDAL), without an error.
    untouched = sampled(gdal_collection.index, lon, lat)
    assert [r[:65] for r in rows[4:]] == [r[:65] for r in untouched[4:]]
    assert all(r[-1] is None for r in rows[4:])
    assert all(any(v is not None for v in r[1:65]) for r in rows[4:])


def test_by_default_the_query_fails_naming_the_file(broken_collection):
    lon, lat, _ = points_of_tiles_3_and_1()
    con = aefsql.connect(catalog=str(broken_collection / "index.parquet"))
    try:
        with pytest.raises(Exception, match=r"tile3-.*EPSG:32799.*PROJ") as error:
            con.execute("SELECT aef_embedding(?, ?, 2023)", [lon[0], lat[0]]).fetchall()
    finally:
        con.close()
    assert "CRSError" not in str(error.value)
