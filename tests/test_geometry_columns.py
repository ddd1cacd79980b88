"""geometry := 'point' | 'pixel': the `geom GEOMETRY('OGC:CRS84')` column of aef_pixels,
aef_similarity, aef_change, aef_sample_points and aef_chips (and their Python twins),
against rasterio's transforms projected by pyproj, on GDAL-written files of both orientations,
across the 12°E seam and the antimeridian; and the GeoParquet a COPY of it writes, as
GeoPandas reads it."""

from __future__ import annotations

import math
import re

import geopandas
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio
import shapely
from gdal_fixtures import Layout, footprint_lonlat, index_row, write_index, write_layout
from helpers import opened, tile_points
from pyproj import CRS, Transformer

import aefsql
from aefsql.duck.udfs import SessionUdfs
from aefsql.geometry.footprints import SEGMENT_PIXELS

SEAM_BOX = "[11.995, 44.995, 12.005, 45.005]"  # tiles 0 (32N) and 1 (33N), both sides of 12°E
FUNCTIONS = ["aef_pixels", "aef_similarity", "aef_change", "aef_sample_points", "aef_chips"]
# Two files of one zone, each on its own grid: north-up (odd size: its overviews are not
# exactly 2x coarser) and south-up, as AEF publishes.
NORTH_UP = Layout(south_up=False, width=301, height=259, block=128, west=300000.0)
SOUTH_UP = Layout(width=301, height=259, block=128, west=304000.0)


def lonlat_of(epsg: int, x, y):
    return Transformer.from_crs(epsg, 4326, always_xy=True).transform(
        np.asarray(x, float), np.asarray(y, float)
    )


def expected_pixels(table: pa.Table, kind: str, level: int = 0) -> list:
    """rasterio's pixel (path, row, col) at `level`, projected by pyproj: its centre, or its
    four corners as a polygon."""
    out = [None] * table.num_rows
    paths = np.asarray(table["path"].to_pylist(), object)
    rows, cols = table["row"].to_numpy(), table["col"].to_numpy()
    for path in sorted(set(paths.tolist())):
        mine = np.flatnonzero(paths == path)
        with opened(path, level) as ds:
            epsg = ds.crs.to_epsg()
            if kind == "point":
                x, y = rasterio.transform.xy(ds.transform, rows[mine], cols[mine])
                lon, lat = lonlat_of(epsg, x, y)
                shapes = shapely.points(lon, lat)
            else:
                corners = [(0, 0), (0, 1), (1, 1), (1, 0)]  # (drow, dcol) round the pixel
                xy = [
                    rasterio.transform.xy(
                        ds.transform, rows[mine] + dr, cols[mine] + dc, offset="ul"
                    )
                    for dr, dc in corners
                ]
                ring = [lonlat_of(epsg, x, y) for x, y in xy]
                shapes = [
                    shapely.Polygon([(ring[k][0][i], ring[k][1][i]) for k in range(4)])
                    for i in range(mine.size)
                ]
        for i, shape in zip(mine.tolist(), shapes, strict=True):
            out[i] = shape
    return out


def assert_same_shapes(got: list, expected: list, tolerance=1e-9) -> None:
    """Equal to within `tolerance` degrees (~0.1 mm), whatever the ring's start and
    direction; every polygon counter-clockwise, as GeoParquet recommends."""
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert shapely.equals_exact(shapely.normalize(a), shapely.normalize(b), tolerance), (a, b)
        for polygon in getattr(a, "geoms", [a]):
            if polygon.geom_type == "Polygon":
                assert polygon.exterior.is_ccw


def shapes(table: pa.Table, column="geom") -> list:
    values = table[column].combine_chunks()
    if isinstance(values, pa.ExtensionArray):
        values = values.storage
    return list(shapely.from_wkb(values.to_pylist()))


def wkb_pixels(con, area, extra="", **kw):
    return con.sql(
        "SELECT * REPLACE (ST_AsWKB(geom) AS geom) "
        f"FROM aef_pixels({area}{extra}) ORDER BY path, row, col"
    ).to_arrow_table()


@pytest.fixture(scope="module")
def two_orientations(tmp_path_factory):
    """A catalog of a north-up and a south-up file of 33N (2023), and their paths."""
    folder = tmp_path_factory.mktemp("orientations")
    rows, paths = [], []
    for k, layout in enumerate((NORTH_UP, SOUTH_UP)):
        name = f"2023/33N/tile{k}.tiff"
        paths.append(write_layout(folder, layout, seed=k, name=name))
        rows.append(index_row(k + 1, 2023, name, layout))
    return write_index(folder / "index.parquet", rows), paths


@pytest.fixture(scope="module")
def antimeridian(tmp_path_factory):
    """Two tiles meeting at 180° near Fiji (UTM 60S west of it, 1S east, each overhanging
    it), 2023: the index."""
    folder = tmp_path_factory.mktemp("antimeridian_geometry")
    rows = []
    for k, (epsg, lon) in enumerate([(32760, 179.99), (32701, -179.99)]):
        x, y = (
            v[0] for v in Transformer.from_crs(4326, epsg, always_xy=True).transform([lon], [-16.0])
        )
        west, south = float(np.round(x / 10) * 10 - 1500), float(np.round(y / 10) * 10 - 1300)
        layout = Layout(epsg=epsg, width=300, height=260, block=128, west=west, south=south)
        path = f"2023/{epsg % 100}S/tile{k}.tiff"
        write_layout(folder, layout, seed=k, name=path)
        row = index_row(len(rows) + 1, 2023, path, layout)
        lon_edge, _ = footprint_lonlat(epsg, layout.bounds)
        row["wgs84_west"] = float(lon_edge[lon_edge > 0].min())  # west > east: across 180°
        row["wgs84_east"] = float(lon_edge[lon_edge < 0].max())
        rows.append(row)
    return write_index(folder / "index.parquet", rows)


@pytest.mark.parametrize("kind", ["point", "pixel"])
def test_pixels_across_the_seam_equal_rasterio(con, kind):
    """Both zones' pixels: the centre or footprint of rasterio's pixel, projected by pyproj."""
    table = wkb_pixels(con, SEAM_BOX, f", year := 2023, geometry := '{kind}'")
    assert set(table["crs"].to_pylist()) == {"EPSG:32632", "EPSG:32633"}
    assert_same_shapes(shapes(table), expected_pixels(table, kind))
    if kind == "point":  # the very points lon/lat give
        got = shapes(table)
        assert np.array_equal(shapely.get_x(got), table["lon"].to_numpy())
        assert np.array_equal(shapely.get_y(got), table["lat"].to_numpy())


@pytest.mark.parametrize("function", ["aef_pixels", "aef_similarity", "aef_change"])
def test_points_and_lonlat_are_projected_once(gdal_collection, monkeypatch, function):
    """geometry := 'point' is the point lon/lat give, projected once for the three; a query
    reading neither, and 'pixel' alone, project no centre."""
    projected = []
    udf = SessionUdfs.pixel_lonlat

    def counted(self, x, y, crs):
        projected.append(len(x))
        return udf(self, x, y, crs)

    monkeypatch.setattr(SessionUdfs, "pixel_lonlat", counted)
    call = calls(function, "point").replace("misspelt_points", "x")
    with aefsql.connect(catalog=gdal_collection.index) as con:
        rows = len(con.sql(f"SELECT lon, lat, geom FROM {call}").fetchall())
        assert sum(projected) == rows > 1000
        projected.clear()
        con.sql(f"SELECT x, geom FROM {calls(function, 'pixel')}").fetchall()
        con.sql(f"SELECT x FROM {calls(function, None)}").fetchall()
        assert projected == []


@pytest.mark.parametrize("level", [0, 1])
def test_both_orientations_and_overviews_equal_rasterio(two_orientations, level):
    """North-up and south-up files, and an overview whose pixel is not exactly 20 m."""
    index, paths = two_orientations
    west, south, east, north = NORTH_UP.bounds[0] + 500, NORTH_UP.bounds[1] + 500, 306000, 0
    north = NORTH_UP.bounds[3] - 500
    box = f"[{west}, {south}, {east + 1000}, {north}]"
    with aefsql.connect(catalog=str(index)) as con:
        table = wkb_pixels(
            con, box, f", year := 2023, crs := 32633, level := {level}, geometry := 'pixel'"
        )
    assert set(table["path"].to_pylist()) == {str(p) for p in paths}
    assert_same_shapes(shapes(table), expected_pixels(table, "pixel", level))


def test_footprints_across_the_antimeridian_are_split(antimeridian):
    """A pixel across 180° comes back as the MultiPolygon of its two sides, in [-180, 180];
    put together again they are rasterio's pixel."""
    box = "[179.99, -16.001, -179.99, -15.999]"
    with aefsql.connect(catalog=str(antimeridian)) as con:
        table = wkb_pixels(con, box, ", year := 2023, geometry := 'pixel'")
    got, expected = shapes(table), expected_pixels(table, "pixel")
    split = [i for i, g in enumerate(got) if g.geom_type == "MultiPolygon"]
    assert split and len(split) < len(got)
    whole = [i for i in range(len(got)) if i not in set(split)]
    assert_same_shapes([got[i] for i in whole], [expected[i] for i in whole])
    for i in split:
        assert shapely.bounds(got[i])[0] >= -180 and shapely.bounds(got[i])[2] <= 180
        west, east = sorted(got[i].geoms, key=lambda p: -p.centroid.x)
        joined = shapely.union(west, shapely.affinity.translate(east, 360.0)).normalize()
        unwrapped = shapely.Polygon(
            [(x + 360.0 if x < 0 else x, y) for x, y in expected[i].exterior.coords]
        )
        assert math.isclose(joined.area, unwrapped.area, rel_tol=1e-6)
        assert shapely.symmetric_difference(joined, unwrapped).area < 1e-9 * unwrapped.area


def test_similarity_and_change_give_aef_pixels_geometry(con):
    """Same locations, same geometry, in SQL and from the Python twins."""
    pixels = con.sql(
        f"SELECT location, ST_AsWKB(geom) AS geom FROM aef_pixels({SEAM_BOX}, year := 2023, "
        "geometry := 'pixel') ORDER BY location"
    ).to_arrow_table()
    reference = [0.1] * 64
    similar = con.sql(
        f"SELECT location, ST_AsWKB(geom) AS geom FROM aef_similarity({SEAM_BOX}, "
        f"{reference}::FLOAT[64], year := 2023, geometry := 'pixel') ORDER BY location"
    ).to_arrow_table()
    changed = con.sql(
        f"SELECT location, ST_AsWKB(geom) AS geom FROM aef_change({SEAM_BOX}, "
        "years := [2023, 2024], geometry := 'pixel') ORDER BY location"
    ).to_arrow_table()
    assert similar.equals(pixels) and changed.equals(pixels)


def test_python_twins_equal_sql(con, gdal_collection):
    box = [11.995, 44.995, 12.005, 45.005]
    options = {"catalog": gdal_collection.index}
    for kind in ("point", "pixel"):
        sql = con.sql(
            f"SELECT location, geom FROM aef_similarity({SEAM_BOX}, {[0.1] * 64}::FLOAT[64], "
            f"year := 2023, geometry := '{kind}') ORDER BY location"
        ).to_arrow_table()
        ours = aefsql.similarity(box, [0.1] * 64, years=2023, geometry=kind, **options)
        ours = ours.take(pa.compute.sort_indices(ours["location"]))
        assert shapes(ours) == shapes(sql)
        assert geopandas.GeoDataFrame.from_arrow(ours.select(["geom"])).crs.equals("OGC:CRS84")
        changed = aefsql.change(box, years=[2023, 2024], geometry=kind, **options)
        changed = changed.take(pa.compute.sort_indices(changed["location"]))
        assert shapes(changed) == shapes(sql)


@pytest.mark.parametrize("kind", ["point", "pixel"])
def test_sample_points_geometry_is_the_pixel_sampled(con, gdal_collection, kind):
    """The pixel rasterio finds under each point (tile 2, one zone), NULL outside any tile;
    aefsql.sample_points gives the same."""
    lon, lat, x, y = tile_points(2, 40, seed=3)
    points = pa.table({"lon": np.r_[lon, 0.0], "lat": np.r_[lat, 0.0]})
    con.register("geometry_points", points)
    table = con.sql(
        "SELECT * EXCLUDE (geom), ST_AsWKB(geom) AS geom FROM aef_sample_points("
        f"'geometry_points', years := [2023, 2024], bands := ['A00'], geometry := '{kind}')"
    ).to_arrow_table()
    got = shapes(table)
    assert got[-2:] == [None, None]  # (0, 0): in no tile, either year
    path = gdal_collection.folder / "2023/33N/tile2-0000000000-0000000000.tiff"
    with rasterio.open(path) as ds:
        rows, cols = rasterio.transform.rowcol(ds.transform, x, y)
    located = pa.table(
        {"path": [str(path)] * len(rows), "row": np.asarray(rows), "col": np.asarray(cols)}
    )
    expected = expected_pixels(located, kind)
    assert_same_shapes(got[0:-2:2], expected)  # 2023
    assert [g.wkb for g in got[1:-2:2]] == [g.wkb for g in got[0:-2:2]]  # 2024: same grid
    python = aefsql.sample_points(
        points, years=[2023, 2024], bands=["A00"], geometry=kind, catalog=gdal_collection.index
    )
    assert shapes(python) == got
    assert python.column_names == [c for c in table.column_names]


@pytest.mark.parametrize("size", [4, 5, 130])
def test_chip_footprints_equal_rasterio(con, gdal_collection, size):
    """The chip's outline (a vertex every SEGMENT_PIXELS pixels of an edge), from rasterio's
    pixel under the point: the chip holds it at row and column size // 2; 'point' is that
    pixel's centre."""
    lon, lat, x, y = tile_points(2, 6, seed=5)  # (east of 12°E: in 33N's own zone)
    con.register("chip_points", pa.table({"lon": lon, "lat": lat}))
    path = gdal_collection.folder / "2023/33N/tile2-0000000000-0000000000.tiff"
    got = {}
    for kind in ("point", "pixel"):
        table = con.sql(
            f"SELECT ST_AsWKB(geom) AS geom FROM aef_chips('chip_points', size := {size}, "
            f"year := 2023, bands := ['A00'], geometry := '{kind}')"
        ).to_arrow_table()
        got[kind] = shapes(table)
    segments = -(-size // SEGMENT_PIXELS)
    with rasterio.open(path) as ds:
        rows, cols = rasterio.transform.rowcol(ds.transform, x, y)
        cx, cy = rasterio.transform.xy(ds.transform, rows, cols)
    centres = shapely.points(*lonlat_of(32633, cx, cy))
    assert_same_shapes(got["point"], list(centres))
    for i in range(len(lon)):
        west, north = cx[i] - 5 - 10 * (size // 2), cy[i] + 5 + 10 * (size // 2)
        east, south = west + 10 * size, north - 10 * size
        t = np.arange(segments) / segments
        ring_x = np.r_[
            west + t * (east - west),
            [east] * segments,
            east - t * (east - west),
            [west] * segments,
            west,
        ]
        ring_y = np.r_[
            [south] * segments,
            south + t * (north - south),
            [north] * segments,
            north - t * (north - south),
            south,
        ]
        expected = shapely.Polygon(np.column_stack(lonlat_of(32633, ring_x, ring_y)))
        assert len(got["pixel"][i].exterior.coords) == 4 * segments + 1
        assert_same_shapes([got["pixel"][i]], [expected])


def test_copy_writes_geoparquet_geopandas_reads(con, tmp_path):
    """COPY … (GEOPARQUET_VERSION 'V2'): Parquet's GEOMETRY type with the CRS, `geo` 2.0.0
    metadata; GeoPandas reads lon/lat (EPSG:4326 axis order aside) and the same points."""
    for kind, types in (("point", ["Point"]), ("pixel", ["Polygon"])):
        out = tmp_path / f"{kind}.parquet"
        con.sql(
            f"COPY (FROM aef_pixels({SEAM_BOX}, year := 2023, bands := ['A00'], "
            f"geometry := '{kind}')) TO '{out}' (FORMAT parquet, GEOPARQUET_VERSION 'V2')"
        )
        frame = geopandas.read_parquet(out)
        assert frame.crs.equals(CRS("OGC:CRS84"))
        assert frame.crs.equals(CRS("EPSG:4326"), ignore_axis_order=True)
        assert frame.geometry.name == "geom"
        meta = pq.read_metadata(out).metadata[b"geo"]
        assert b'"version":"2.0.0"' in meta and str(types).replace("'", '"').encode() in meta
        assert "Geometry(crs=" in str(pq.ParquetFile(out).schema)
        table = con.sql(
            f"SELECT lon, lat, path, row, col FROM aef_pixels({SEAM_BOX}, year := 2023, "
            "bands := ['A00'])"
        ).to_arrow_table()
        order = np.lexsort((frame["col"], frame["row"], frame["path"]))
        mine = np.lexsort(
            (
                table["col"].to_numpy(),
                table["row"].to_numpy(),
                np.asarray(table["path"].to_pylist()),
            )
        )
        if kind == "point":
            assert np.array_equal(frame.geometry.x.to_numpy()[order], table["lon"].to_numpy()[mine])
            assert np.array_equal(frame.geometry.y.to_numpy()[order], table["lat"].to_numpy()[mine])
        else:
            inside = shapely.contains_xy(
                frame.geometry.values[order],
                table["lon"].to_numpy()[mine],
                table["lat"].to_numpy()[mine],
            )
            assert inside.all()


def test_pyogrio_reads_the_copy_where_gdal_has_parquet(con, tmp_path):
    pyogrio = pytest.importorskip("pyogrio")
    if "Parquet" not in pyogrio.list_drivers():
        pytest.skip("this GDAL (pyogrio's wheel) has no Parquet driver")
    out = tmp_path / "points.parquet"
    con.sql(
        f"COPY (FROM aef_pixels({SEAM_BOX}, year := 2023, bands := ['A00'], "
        f"geometry := 'point')) TO '{out}' (FORMAT parquet, GEOPARQUET_VERSION 'V2')"
    )
    frame = pyogrio.read_dataframe(out)
    assert frame.crs.equals(CRS("EPSG:4326"), ignore_axis_order=True)


def plan(con, call: str) -> str:
    return "".join(row[1] for row in con.sql(f"EXPLAIN FROM {call}").fetchall())


def calls(function: str, geometry: str | None) -> str:
    given = "" if geometry is None else f", geometry := '{geometry}'"
    if function in ("aef_sample_points", "aef_chips"):
        return f"{function}('misspelt_points', year := 2023{given})"
    if function == "aef_similarity":
        return f"aef_similarity({SEAM_BOX}, {[0.1] * 64}::FLOAT[64], year := 2023{given})"
    if function == "aef_change":
        return f"aef_change({SEAM_BOX}, years := [2023, 2024]{given})"
    return f"aef_pixels({SEAM_BOX}, year := 2023{given})"


@pytest.mark.parametrize("function", FUNCTIONS)
def test_misspelt_geometry_is_refused_and_none_unless_asked(con, function):
    """A misspelt value fails the query (an empty one too: it is checked while binding),
    naming the parameter and the values it takes; without geometry, no geom column and no
    geometry UDF in the plan (DuckDB never calls it)."""
    con.register("misspelt_points", pa.table({"lon": [12.0], "lat": [45.0]}))
    with pytest.raises(Exception, match=r"geometry := 'points': geometry is 'point' .* or 'pixel'"):
        con.sql(f"DESCRIBE FROM {calls(function, 'points')}").fetchall()
    with pytest.raises(Exception, match=r"geometry := 'Pixel'"):
        con.sql(f"SELECT count(*) FROM {calls(function, 'Pixel')} WHERE false").fetchall()
    columns = [r[0] for r in con.sql(f"DESCRIBE FROM {calls(function, None)}").fetchall()]
    assert "geom" not in columns
    # The plan names no geom (DuckDB never calls the UDF), until one is asked for.
    assert not re.findall(r"\w*geom\w*", plan(con, calls(function, None)))
    assert re.findall(r"\w*geom\w*", plan(con, calls(function, "point")))
    described = con.sql(f"DESCRIBE FROM {calls(function, 'point')}").fetchall()
    assert described[-1][:2] == ("geom", "GEOMETRY('OGC:CRS84')")


def test_python_refuses_a_misspelt_geometry(gdal_collection):
    box = [11.995, 44.995, 12.005, 45.005]
    with pytest.raises(aefsql.AefsqlError, match=r"geometry='pt': geometry is 'point'"):
        aefsql.similarity(box, [0.1] * 64, years=2023, geometry="pt", catalog=gdal_collection.index)
    with pytest.raises(aefsql.AefsqlError, match=r"geometry='pt'"):
        aefsql.change(box, years=[2023, 2024], geometry="pt", catalog=gdal_collection.index)
    points = pa.table({"lon": [12.0], "lat": [45.0]})
    with pytest.raises(aefsql.AefsqlError, match=r"geometry='pt'"):
        aefsql.sample_points(points, years=2023, geometry="pt", catalog=gdal_collection.index)


@pytest.mark.parametrize("function", ["aef_sample_points", "aef_chips"])
def test_an_input_geom_column_passes_unless_geometry_is_asked(con, function):
    con.register("geom_points", pa.table({"lon": [12.0], "lat": [45.0], "geom": ["mine"]}))
    table = con.sql(f"FROM {function}('geom_points', year := 2023)").to_arrow_table()
    assert table["geom"].to_pylist() == ["mine"]
    with pytest.raises(Exception, match=f"already has column.*geom, which {function} adds"):
        con.sql(f"FROM {function}('geom_points', year := 2023, geometry := 'point')").fetchall()
