"""aefsql.write_map and `aefsql map`: Cloud-Optimized GeoTIFFs that rasterio opens where they
belong (CRS, transform, nodata, dtype), whose values are the SQL results placed by x, y
(aef_similarity, aef_change, aef_pixels) and numpy's over rasterio's reads of the GDAL-written
files, for south-up and north-up tiles; valid COGs by rio-cogeo; and picture's PNG
georeferenced beside it (world file and .aux.xml)."""

import shlex
import warnings

import numpy as np
import pytest
import rasterio
import shapely
from gdal_fixtures import (
    COLLECTION_TILES,
    PIXEL,
    Layout,
    collection_path,
    index_row,
    to_lonlat,
    write_index,
    write_layout,
)
from helpers import README, blocks, readme_python
from rasterio.transform import Affine, rowcol, xy

import aefsql
from aefsql.cli import main
from aefsql.demo import write_demo_collection
from aefsql.errors import AefsqlError
from aefsql.kernels.pictures import pca_rgb

cogeo = pytest.importorskip("rio_cogeo.cogeo")

YEARS = (2023, 2024)
NORTH_UP = Layout(south_up=False, width=301, height=259, block=128, west=300000.0)


@pytest.fixture(scope="module")
def north_up(tmp_path_factory):
    """A one-tile, two-year collection of a north-up, odd-sized layout: (index, {year: file})."""
    folder = tmp_path_factory.mktemp("north_up_maps")
    files, rows = {}, []
    for year in YEARS:
        name = f"{year}/33N/northup-0000000000-0000000000.tiff"
        files[year] = write_layout(folder, NORTH_UP, seed=year + 5, name=name)
        rows.append(index_row(len(rows) + 1, year, name, NORTH_UP))
    return str(write_index(folder / "index.parquet", rows)), files


def whole_tile_south_up(gdal_collection):
    """(index, {year: file}, EPSG, box): the whole of tile 2 (south-up, 300 x 260 pixels:
    more than a block, so the map has an overview; all of it east of 12°E, its own zone's)."""
    _, epsg, west, south = COLLECTION_TILES[2]
    files = {y: gdal_collection.folder / collection_path(y, 2) for y in YEARS}
    box = [west, south, west + 300 * PIXEL, south + 260 * PIXEL]
    return gdal_collection.index, files, epsg, box


def whole_tile_north_up(north_up):
    index, files = north_up
    west, south, east, north = NORTH_UP.bounds
    return index, files, NORTH_UP.epsg, [west, south, east, north]


@pytest.fixture(params=["south_up", "north_up"])
def tile(request, gdal_collection, north_up):
    if request.param == "south_up":
        return whole_tile_south_up(gdal_collection)
    return whole_tile_north_up(north_up)


def opened(path):
    """(the file's values, its profile) as rasterio reads them; the COG validated."""
    valid, errors, warnings = cogeo.cog_validate(str(path), strict=True, quiet=True)
    assert valid, (errors, warnings)
    with rasterio.open(path) as ds:
        return ds.read(), ds.profile | {"colorinterp": ds.colorinterp, "names": ds.descriptions}


def source_values(file, transform: Affine, height: int, width: int, level=0) -> np.ndarray:
    """int8 (bands, height, width): rasterio's values of `file` (its overview `level`) at the
    centre of each pixel of the grid (`transform`, north-up): whatever the file's row order,
    each from its place."""
    rows, cols = np.mgrid[0:height, 0:width]
    xs, ys = xy(transform, rows.ravel(), cols.ravel())
    with rasterio.open(file, **({"overview_level": level - 1} if level else {})) as ds:
        r, c = rowcol(ds.transform, xs, ys)
        return ds.read()[:, np.asarray(r), np.asarray(c)].reshape(-1, height, width)


def numpy_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float64 cosine over axis 0 of de-quantized int8 a and b (b may be one vector); NaN
    where any band of either is -128."""
    a = a.astype(np.float64)
    b = np.asarray(b, np.float64)
    if b.ndim == 1:
        b = np.broadcast_to(b.reshape(-1, *[1] * (a.ndim - 1)), a.shape)
    da, db = np.sign(a) * (np.abs(a) / 127.5) ** 2, np.sign(b) * (np.abs(b) / 127.5) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = (da * db).sum(0) / np.sqrt((da * da).sum(0) * (db * db).sum(0))
    cosine[(a == -128).any(0) | (b == -128).any(0)] = np.nan
    return cosine


def placed(rows, transform: Affine, height: int, width: int, column: str) -> np.ndarray:
    """float32 (height, width): a SQL result's `column` placed by its x, y; NaN where none."""
    out = np.full((height, width), np.nan, np.float32)
    r, c = (np.asarray(v) for v in rowcol(transform, np.asarray(rows["x"]), np.asarray(rows["y"])))
    assert ((r >= 0) & (r < height) & (c >= 0) & (c < width)).all()
    assert len(set(zip(r.tolist(), c.tolist(), strict=True))) == len(r)  # one row a pixel
    values = rows[column].to_numpy(zero_copy_only=False)
    out[r, c] = np.where(values == None, np.nan, values).astype(np.float32)  # noqa: E711
    return out


def assert_same_cosines(got: np.ndarray, expected: np.ndarray) -> None:
    """The same NULLs (NaN) and the same float32 cosines, but for the last bit: the kernel's
    BLAS products over pieces of other lengths may round a few pixels one ulp apart."""
    assert np.array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1.2e-7)


def check_grid(profile, epsg: int, box, width: int, height: int) -> Affine:
    """The map's georeferencing: the tile's CRS, north-up 10 m pixels on the tile grid over
    the box."""
    west, _, _, north = box
    assert profile["crs"].to_epsg() == epsg
    assert profile["transform"] == Affine(PIXEL, 0, west, 0, -PIXEL, north)
    assert (profile["width"], profile["height"]) == (width, height)
    assert profile["tiled"] and profile["compress"] == "deflate"
    return profile["transform"]


def test_similarity_map_is_aef_similarity_placed_by_xy(tile, tmp_path):
    index, files, epsg, box = tile
    with aefsql.connect(catalog=index) as con:
        x, y = box[0] + 1005.0, box[1] + 1505.0
        lon, lat = (float(v) for v in to_lonlat(epsg, x, y))
        sql = f"SELECT aef_vector(aef_embedding({lon}, {lat}, 2023))"
        reference = con.execute(sql).fetchall()[0][0]
        rows = con.sql(
            f"SELECT x, y, similarity FROM aef_similarity({box}, ?::FLOAT[64], years := 2023, "
            f"crs := {epsg})",
            params=[reference],
        ).to_arrow_table()
    path = tmp_path / "similar.tif"
    written = aefsql.write_map(
        box, 2023, path, kind="similarity", reference=reference, crs=epsg, catalog=index
    )
    values, profile = opened(path)
    _, height, width = values.shape
    transform = check_grid(profile, epsg, box, width, height)
    assert values.dtype == np.float32 and np.isnan(profile["nodata"])
    assert profile["names"] == ("similarity",) and profile["count"] == 1
    assert rows.num_rows == width * height  # a box on the pixel grid: every pixel a row
    expected = placed(rows, transform, height, width, "similarity")
    assert_same_cosines(values[0], expected)
    assert np.array_equal(written.values[0], values[0], equal_nan=True)
    # numpy over rasterio's values, and the same map from the place itself (1.0 there)
    source = source_values(files[2023], transform, height, width)
    r, c = rowcol(transform, x, y)
    np.testing.assert_allclose(values[0], numpy_cosine(source, source[:, r, c]), atol=2e-6)
    assert np.isnan(values[0]).sum() > 4000  # the fixtures' nodata rectangle, and more
    by_place = aefsql.write_map(
        box,
        2023,
        tmp_path / "p.tif",
        kind="similarity",
        reference=(lon, lat),
        crs=epsg,
        catalog=index,
    )
    assert by_place.values[0, r, c] == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(by_place.values, values, atol=1e-6)


def test_change_map_is_aef_change_placed_by_xy(tile, tmp_path):
    index, files, epsg, box = tile
    with aefsql.connect(catalog=index) as con:
        rows = con.sql(
            f"SELECT x, y, similarity FROM aef_change({box}, years := [2023, 2024], crs := {epsg})"
        ).to_arrow_table()
    path = tmp_path / "change.tif"
    aefsql.write_map(box, [2023, 2024], path, kind="change", crs=epsg, catalog=index)
    values, profile = opened(path)
    _, height, width = values.shape
    transform = check_grid(profile, epsg, box, width, height)
    assert values.dtype == np.float32 and np.isnan(profile["nodata"])
    assert profile["names"] == ("similarity 2023-2024",)
    assert_same_cosines(values[0], placed(rows, transform, height, width, "similarity"))
    before, after = (source_values(files[y], transform, height, width) for y in YEARS)
    np.testing.assert_allclose(values[0], numpy_cosine(before, after), atol=2e-6)


def test_bands_map_is_aef_pixels_placed_by_xy(tile, tmp_path):
    index, files, epsg, box = tile
    with aefsql.connect(catalog=index) as con:
        rows = con.sql(
            f"SELECT x, y, A03, A40 FROM aef_pixels({box}, years := 2023, crs := {epsg}, "
            "bands := ['A03', 'A40'])"
        ).to_arrow_table()
    path = tmp_path / "bands.tif"
    aefsql.write_map(box, 2023, path, kind="bands", bands=["A03", "A40"], crs=epsg, catalog=index)
    values, profile = opened(path)
    _, height, width = values.shape
    transform = check_grid(profile, epsg, box, width, height)
    assert values.dtype == np.int8 and profile["nodata"] == -128
    assert profile["names"] == ("A03", "A40")
    for k, band in enumerate(["A03", "A40"]):
        expected = placed(rows, transform, height, width, band)
        assert np.array_equal(values[k], np.where(np.isnan(expected), -128, expected))
    source = source_values(files[2023], transform, height, width)
    assert np.array_equal(values, source[[3, 40]])


def test_bands_map_at_level_is_the_files_overview(tile, tmp_path):
    index, files, epsg, box = tile
    path = tmp_path / "coarse.tif"
    aefsql.write_map(box, 2023, path, kind="bands", level=1, crs=epsg, catalog=index)
    values, profile = opened(path)
    _, height, width = values.shape
    with rasterio.open(files[2023], overview_level=0) as ds:  # 2 x 10 m, or near (odd sizes)
        a, e = ds.transform.a, abs(ds.transform.e)
    west, _, _, north = box
    assert profile["transform"] == Affine(a, 0, west, 0, -e, north)
    assert np.array_equal(
        values, source_values(files[2023], profile["transform"], height, width, 1)
    )


def test_pca_map_is_picture_colours_with_alpha(tile, tmp_path):
    index, files, epsg, box = tile
    path = tmp_path / "pca.tif"
    aefsql.write_map(box, 2023, path, kind="pca", crs=epsg, catalog=index)
    values, profile = opened(path)
    _, height, width = values.shape
    transform = check_grid(profile, epsg, box, width, height)
    assert values.dtype == np.uint8 and profile["nodata"] is None
    assert [c.name for c in profile["colorinterp"]] == ["red", "green", "blue", "alpha"]
    rgba = pca_rgb(source_values(files[2023], transform, height, width))
    assert np.array_equal(np.moveaxis(values, 0, -1), rgba)
    assert (values[3] == 0).sum() > 4000 and set(np.unique(values[3])) == {0, 255}


def test_overview_is_the_mean_of_valid_pixels(tile, tmp_path):
    """A map larger than a block has an overview: each cell the mean of its valid pixels."""
    index, _, epsg, box = tile
    path = tmp_path / "change.tif"
    written = aefsql.write_map(box, [2023, 2024], path, kind="change", crs=epsg, catalog=index)
    with rasterio.open(path) as ds:
        assert ds.overviews(1) == [2]
    with rasterio.open(path, overview_level=0) as ds:
        overview = ds.read(1)
    full = written.values[0]
    height, width = full.shape
    padded = np.full((-(-height // 2) * 2, -(-width // 2) * 2), np.nan, np.float32)
    padded[:height, :width] = full
    cells = padded.reshape(padded.shape[0] // 2, 2, padded.shape[1] // 2, 2)
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning, match="empty slice"):
        expected = np.nanmean(cells.astype(np.float64), axis=(1, 3))
    np.testing.assert_allclose(overview, expected, atol=1e-6)
    assert np.array_equal(np.isnan(overview), np.isnan(expected))


def test_an_area_across_12e_with_one_zones_tiles_gets_no_warning(gdal_collection, tmp_path):
    """Whether the map spans zones is what the tiles owning its pixels say, not the area's
    corners: this box crosses 12°E, but only tile 2 (33N) holds any of it."""
    area = [11.99, 45.015, 12.03, 45.02]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        written = aefsql.write_map(
            area,
            2023,
            tmp_path / "one.tif",
            kind="bands",
            bands=["A00"],
            catalog=gdal_collection.index,
        )
    assert written.grid.epsg == 32633 and (written.values != -128).any()


def test_across_zones_the_map_is_in_the_zone_of_most_and_says_so(gdal_collection, tmp_path):
    """Tiles 0 (32N) and 1 (33N) meet at 12°E: one CRS, read_area's, named in a warning."""
    pytest.importorskip("xarray")
    area = [11.99, 45.0, 12.01, 45.01]
    path = tmp_path / "seam.tif"
    with pytest.warns(UserWarning, match=r"spans UTM zones 32N, 33N: .*pass target_crs"):
        written = aefsql.write_map(
            area, 2023, path, kind="bands", bands=["A00"], catalog=gdal_collection.index
        )
    cube = aefsql.read_area(area, 2023, bands=["A00"], catalog=gdal_collection.index)
    values, profile = opened(path)
    assert (
        profile["crs"].to_epsg()
        == written.grid.epsg
        == int(cube.spatial_ref.attrs["crs_wkt"].rsplit('"EPSG",', 1)[1].split("]")[0])
    )
    assert np.array_equal(values, cube.values[0])
    chosen = aefsql.write_map(
        area,
        2023,
        path,
        kind="bands",
        bands=["A00"],
        target_crs=32632,
        catalog=gdal_collection.index,
    )
    assert chosen.grid.epsg == 32632
    with rasterio.open(path) as ds:
        assert ds.crs.to_epsg() == 32632


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kind": "simlarity"}, "kind 'simlarity' is not a map: one of 'similarity', 'change'"),
        ({"kind": "change"}, "a change map compares years: pass two or more"),
        ({"kind": "similarity"}, "a similarity map needs reference=: a place"),
        ({"kind": "pca", "reference": (1, 2)}, "reference= is for a similarity map"),
        ({"kind": "change", "bands": ["A00"]}, "compares all 64 bands: pass no bands"),
        ({"kind": "bands", "compression": "lzw"}, "compression 'lzw': one of 'zstd', 'deflate'"),
        (
            {"kind": "pca", "bands": ["A00", "A01"]},
            r"bands=\['A00', 'A01'\]: a PCA picture needs 3 bands or more",
        ),
    ],
)
def test_refusals_name_the_fix(gdal_collection, tmp_path, kwargs, message):
    year = [2023, 2024] if kwargs.get("bands") else 2023
    with pytest.raises(AefsqlError, match=message):
        aefsql.write_map(
            [1, 1, 2, 2], year, tmp_path / "x.tif", catalog=gdal_collection.index, **kwargs
        )
    with pytest.raises(TypeError, match="refernce"):
        aefsql.write_map([1, 1, 2, 2], 2023, tmp_path / "x.tif", kind="pca", refernce=1)


def test_cli_map_writes_the_same_file(gdal_collection, tmp_path, capsys):
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    box = [x0 + 800, y0 + 200, x0 + 2000, y0 + 2200]
    lon, lat = (float(v) for v in to_lonlat(epsg, x0 + 1005, y0 + 1505))
    path = tmp_path / "similar.tif"
    code = main(
        [
            "map",
            "--kind",
            "similarity",
            "--bbox",
            ",".join(map(str, box)),
            "--crs",
            f"EPSG:{epsg}",
            "--year",
            "2023",
            f"--similar-to={lon},{lat}",  # '=': the longitude is negative
            "-o",
            str(path),
            "--catalog",
            gdal_collection.index,
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and f"wrote {path}: similarity, 120 x 200 pixels, EPSG:{epsg}" in out
    python = aefsql.write_map(
        box,
        2023,
        tmp_path / "py.tif",
        kind="similarity",
        reference=(lon, lat),
        crs=epsg,
        catalog=gdal_collection.index,
    )
    values, _ = opened(path)
    assert np.array_equal(values, python.values, equal_nan=True)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--kind", "simlarity"], "invalid choice: 'simlarity' (choose from"),
        (["--kind", "pca", "--colour", "red"], "unknown option --colour"),
    ],
)
def test_cli_map_refuses_unknown_kind_and_options(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        main(["map", "--bbox", "1,1,2,2", "--year", "2023", "-o", str(tmp_path / "x.tif"), *argv])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_picture_png_is_georeferenced(gdal_collection, tmp_path):
    """rasterio opens picture's PNG where it belongs: its world file and .aux.xml."""
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    box = [x0 + 800, y0 + 200, x0 + 2000, y0 + 2200]
    path = tmp_path / "area.png"
    drawn = aefsql.picture(box, 2023, path, crs=epsg, catalog=gdal_collection.index)
    assert (tmp_path / "area.pgw").exists() and (tmp_path / "area.png.aux.xml").exists()
    with rasterio.open(path) as ds:
        assert ds.crs.to_epsg() == epsg
        assert ds.transform == Affine(PIXEL, 0, x0 + 800, 0, -PIXEL, y0 + 2200)
        assert np.array_equal(np.moveaxis(ds.read(), 0, -1), drawn.rgba)
    (tmp_path / "area.png.aux.xml").unlink()  # the world file alone places it too
    with rasterio.open(path) as ds:
        assert ds.transform == Affine(PIXEL, 0, x0 + 800, 0, -PIXEL, y0 + 2200)
    # Another suffix: the world file is `.wld` in place of it (GDAL does not look for
    # `area.img.wld`).
    other = tmp_path / "area.img"
    drawn.save(other)
    (tmp_path / "area.img.aux.xml").unlink()
    assert (tmp_path / "area.wld").exists()
    with rasterio.open(other) as ds:
        assert ds.transform == Affine(PIXEL, 0, x0 + 800, 0, -PIXEL, y0 + 2200)


def test_readme_maps_example_runs(tmp_path, monkeypatch, capsys):
    """The README's worked example, Python and shell, on the demo collection: valid COGs of
    the kinds it names, in zone 33N, with the nodata patch nodata."""
    index = write_demo_collection(tmp_path / "demo")
    monkeypatch.setenv("AEFSQL_CATALOG", str(index))
    monkeypatch.chdir(tmp_path)
    exec(readme_python("write_map("), {})
    shell = next(b for b in blocks(README, "sh") if "aefsql map --kind similarity" in b)
    for command in shell.splitlines():
        assert main(shlex.split(command, comments=True)[1:]) == 0, capsys.readouterr().err
    for name, dtype in [
        ("similar.tif", "float32"),
        ("change.tif", "float32"),
        ("pca.tif", "uint8"),
        ("bands.tif", "int8"),
    ]:
        values, profile = opened(tmp_path / name)
        assert profile["crs"].to_epsg() == 32633 and profile["dtype"] == dtype
        nodata = np.isnan(values) if dtype == "float32" else values == profile["nodata"]
        if dtype == "uint8":
            nodata = values[3:] == 0
        assert 0.01 < nodata.any(axis=0).mean() < 0.5  # the nodata patch, and only it


def test_cli_map_names_its_own_flag_for_the_reference(gdal_collection, tmp_path, capsys):
    """(It said "needs a reference: …", not which flag gives one.)"""
    code = main(
        [
            "map",
            "--kind",
            "similarity",
            "--bbox",
            "12.0,45.0,12.01,45.01",
            "--year",
            "2023",
            "-o",
            str(tmp_path / "x.tif"),
            "--catalog",
            gdal_collection.index,
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "a similarity map needs --similar-to: a place (lon, lat)" in err


def test_an_area_as_wkt_is_the_same_map_as_its_wkb(gdal_collection, tmp_path):
    """write_map (and read_area, picture) take WKT as aefsql.export and the SQL functions do
    (it said "a box is [west, south, east, north] in numbers, not 'POLYGON(…)'")."""
    shape = shapely.Polygon([(12.001, 45.001), (12.006, 45.001), (12.004, 45.006)])
    paths = [tmp_path / "wkt.tif", tmp_path / "wkb.tif"]
    for area, path in zip([shape.wkt, shape.wkb], paths, strict=True):
        aefsql.write_map(
            area, 2023, path, kind="bands", bands=["A00"], catalog=gdal_collection.index
        )
    (a, _), (b, _) = (opened(p) for p in paths)
    assert np.array_equal(a, b) and (a != -128).sum() > 100
    with pytest.raises(AefsqlError, match=r"area: WKT .*: a '\(' is never closed"):
        aefsql.write_map(
            "POLYGON((12 45, 12.1 45",
            2023,
            paths[0],
            kind="bands",
            bands=["A00"],
            catalog=gdal_collection.index,
        )


def test_an_area_smaller_than_a_pixel_maps_the_pixel_under_its_centroid(gdal_collection, tmp_path):
    """As aef_pixels gives it (it was refused: "the area holds no pixel centre")."""
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    box = [x0 + 1001.0, y0 + 1001.0, x0 + 1003.0, y0 + 1003.0]
    path = tmp_path / "one.tif"
    aefsql.write_map(
        box, 2023, path, kind="bands", bands=["A00", "A07"], crs=epsg, catalog=gdal_collection.index
    )
    values, profile = opened(path)
    with aefsql.connect(catalog=gdal_collection.index) as con:
        ((a00, a07, x, y),) = con.sql(
            f"SELECT A00, A07, x, y FROM aef_pixels({box}, years := 2023, crs := {epsg})"
        ).fetchall()
    assert values.shape == (2, 1, 1) and values[:, 0, 0].tolist() == [a00, a07]
    assert xy(profile["transform"], 0, 0) == (x, y)
