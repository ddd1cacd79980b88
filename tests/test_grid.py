"""aef_grid and aefsql.grid against GDAL: each cell's pixel count, nodata count and mean
embedding equal numpy's over rasterio's reads of the pixels whose centres lie in the area,
grouped by the cell of each centre (floor of x/y for squares; h3.latlng_to_cell of every
centre's lon/lat, projected by pyproj, for H3), in both orientations, across the 12°E seam
(each location once, from aef_pixels' tiles); and equal to aef_zonal over the cells' polygons."""

import re
from pathlib import Path

import geopandas
import numpy as np
import pyarrow as pa
import pytest
import rasterio
import shapely
from gdal_fixtures import COLLECTION_TILES, Layout, collection_path, index_row, write_index
from gdal_fixtures import write_layout as write_gdal_layout
from helpers import block_ranges, block_reads, gdal_pixels, pixel_reads
from pyproj import CRS, Geod, Transformer

import aefsql
from aefsql import options
from aefsql.errors import AefsqlError

h3 = pytest.importorskip("h3")

NORTH_UP = Layout(south_up=False, width=301, height=259, block=128, west=300000.0)
SEAM_BOX = [11.99, 45.0, 12.01, 45.01]
COLUMNS = ["cell", "year", "pixels", "nodata_pixels", "embedding"]


@pytest.fixture(scope="module")
def north(tmp_path_factory):
    """A one-tile collection (2023) of a north-up, odd-sized layout: (index, file)."""
    folder = tmp_path_factory.mktemp("north_up_grid")
    path = "2023/33N/northup-0000000000-0000000000.tiff"
    written = write_gdal_layout(folder, NORTH_UP, seed=5, name=path)
    index = write_index(folder / "index.parquet", [index_row(1, 2023, path, NORTH_UP)])
    return str(index), written


def grid(con, area, extra: str) -> pa.Table:
    return con.sql(f"FROM aef_grid({area}{extra})").to_arrow_table()


def dequantized(values: np.ndarray) -> np.ndarray:
    """The publisher's de-quantization, written here apart from aefsql's."""
    v = values.astype(np.float64)
    return np.sign(v) * (np.abs(v) / 127.5) ** 2


def h3_cells(epsg: int, x, y, resolution: int) -> list[str]:
    lon, lat = Transformer.from_crs(epsg, 4326, always_xy=True).transform(x, y)
    return [h3.latlng_to_cell(b, a, resolution) for a, b in zip(lon, lat, strict=True)]


def square_cells(epsg: int, x, y, size: int) -> list[str]:
    cx, cy = np.floor(x / size).astype(int) * size, np.floor(y / size).astype(int) * size
    return [f"EPSG:{epsg}:{a}:{b}" for a, b in zip(cx.tolist(), cy.tolist(), strict=True)]


def numpy_grid(cells: list[str], values: np.ndarray) -> dict:
    """{cell: (pixels, nodata_pixels, mean or None)} of int8 (64, pixels) values."""
    cells = np.array(cells, dtype=object)
    nodata = (values == -128).any(axis=0)
    found = {}
    for name in sorted(set(cells.tolist())):
        mine = cells == name
        valid = mine & ~nodata
        mean = dequantized(values[:, valid]).mean(axis=1) if valid.any() else None
        found[name] = (int(mine.sum()), int((mine & nodata).sum()), mean)
    return found


def tile_pixels(path, box, level: int = 0):
    """(epsg, x, y, values (64, n)) of the pixels of the file (its `level`) whose centre lies
    inside the box (in the file's CRS), from rasterio."""
    with rasterio.open(path, **({"overview_level": level - 1} if level else {})) as ds:
        data, t, epsg = ds.read(), ds.transform, ds.crs.to_epsg()
    rows, cols = np.meshgrid(np.arange(data.shape[1]), np.arange(data.shape[2]), indexing="ij")
    x = t.c + (cols.ravel() + 0.5) * t.a
    y = t.f + (rows.ravel() + 0.5) * t.e
    west, south, east, north = box
    inside = (x > west) & (x < east) & (y > south) & (y < north)
    return epsg, x[inside], y[inside], data.reshape(64, -1)[:, inside]


def assert_grid(table: pa.Table, year: int, expected: dict) -> None:
    mine = table.filter(pa.compute.equal(table["year"], year))
    assert mine["cell"].to_pylist() == sorted(expected)
    for row in mine.to_pylist():
        pixels, nodata, mean = expected[row["cell"]]
        assert (row["pixels"], row["nodata_pixels"]) == (pixels, nodata), row["cell"]
        if mean is None:
            assert row["embedding"] is None
        else:
            assert np.allclose(row["embedding"], mean, rtol=1e-6, atol=1e-8), row["cell"]


def tile3_box(gdal_collection):
    """A UTM box in tile 3 (18S), over its nodata rectangle, edges between pixel centres and
    not on 250 m lines."""
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    return epsg, [x0 + 303.0, y0 + 217.0, x0 + 2811.0, y0 + 2433.0]


@pytest.mark.parametrize("cell", [250, "h3:9"])
def test_a_south_up_tile_equals_numpy(con, gdal_collection, cell):
    epsg, box = tile3_box(gdal_collection)
    table = grid(con, box, f", cell := {cell!r}, years := [2023, 2024], crs := {epsg}")
    assert table.column_names == COLUMNS
    assert table.schema.field("embedding").type.list_size == 64
    for year in (2023, 2024):
        path = gdal_collection.folder / collection_path(year, 3)
        code, x, y, values = tile_pixels(path, box)
        cells = square_cells(code, x, y, 250) if cell == 250 else h3_cells(code, x, y, 9)
        expected = numpy_grid(cells, values)
        assert len(expected) > 12 and any(n for _, n, _ in expected.values())
        assert any(m is None for *_, m in expected.values())  # a cell all nodata
        assert_grid(table, year, expected)


@pytest.mark.parametrize("cell", [700, "h3:8"])
def test_a_north_up_tile_equals_numpy(north, cell):
    index, path = north
    x0, y0, x1, y1 = NORTH_UP.bounds
    box = [x0 + 1234.0, y0 + 456.0, x1 - 3.0, y1 - 999.0]
    with aefsql.connect(catalog=index) as con:
        table = grid(con, box, f", cell := {cell!r}, years := 2023, crs := 32633")
    code, x, y, values = tile_pixels(path, box)
    cells = square_cells(code, x, y, 700) if cell == 700 else h3_cells(code, x, y, 8)
    assert_grid(table, 2023, numpy_grid(cells, values))


@pytest.mark.parametrize("cell", [500, "h3:8"])
def test_across_the_seam_each_location_once(con, cell):
    """Across 12°E the pixels are aef_pixels' (each location from the tile that owns it);
    square cells are each zone's own (keyed with its CRS), H3 cells span both zones."""
    table = grid(con, SEAM_BOX, f", cell := {cell!r}, years := [2023, 2024]")
    pixels = con.sql(
        f"SELECT year, path, row, col, x, y, crs, lon, lat FROM aef_pixels({SEAM_BOX}, "
        "years := [2023, 2024], bands := ['A00'])"
    ).to_arrow_table()
    assert set(pixels["crs"].to_pylist()) == {"EPSG:32632", "EPSG:32633"}
    for year in (2023, 2024):
        mine = pixels.filter(pa.compute.equal(pixels["year"], year))
        values = np.zeros((64, mine.num_rows), np.int8)
        for _, rows, read in gdal_pixels(mine):
            values[:, rows] = read
        x, y = mine["x"].to_numpy(), mine["y"].to_numpy()
        crs = np.array(mine["crs"].to_pylist())
        if cell == 500:
            cells = np.empty(mine.num_rows, dtype=object)
            for code in set(crs.tolist()):
                at = crs == code
                cells[at] = square_cells(int(code[5:]), x[at], y[at], 500)
            cells = cells.tolist()
        else:
            lon, lat = mine["lon"].to_numpy(), mine["lat"].to_numpy()
            cells = [h3.latlng_to_cell(b, a, 8) for a, b in zip(lon, lat, strict=True)]
        expected = numpy_grid(cells, values)
        assert_grid(table, year, expected)
        assert sum(p for p, _, _ in expected.values()) == mine.num_rows
    if cell == 500:
        zones = {c.rsplit(":", 2)[0] for c in table["cell"].to_pylist()}
        assert zones == {"EPSG:32632", "EPSG:32633"}


def great_circle_ring(cell: str, per_edge: int = 64) -> np.ndarray:
    """The H3 cell's boundary as a closed lon/lat ring, each edge densified along its great
    circle (H3's edges are great-circle arcs: straight lines between its vertices in lon/lat
    bend away from them by centimetres, which decides a few pixel centres)."""
    lat, lng = np.radians(np.array(h3.cell_to_boundary(cell))).T
    points = np.column_stack([np.cos(lat) * np.cos(lng), np.cos(lat) * np.sin(lng), np.sin(lat)])
    ring = []
    for a, b in zip(points, np.roll(points, -1, axis=0), strict=True):
        omega = np.arccos(np.clip(a @ b, -1, 1))
        t = np.linspace(0, 1, per_edge, endpoint=False)[:, None]
        ring.append((np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega))
    xyz = np.vstack(ring)
    lon = np.degrees(np.arctan2(xyz[:, 1], xyz[:, 0]))
    lat = np.degrees(np.arcsin(xyz[:, 2] / np.linalg.norm(xyz, axis=1)))
    ring = np.column_stack([lon, lat])
    return np.vstack([ring, ring[:1]])


def zonal_of(con, polygons: list[str], extra: str) -> pa.Table:
    con.register("__grid_cells", pa.table({"i": range(len(polygons)), "geom": polygons}))
    try:
        return con.sql(
            f"SELECT i, year, pixels, nodata_pixels, embedding FROM aef_zonal('__grid_cells'"
            f"{extra}) ORDER BY i, year"
        ).to_arrow_table()
    finally:
        con.unregister("__grid_cells")


def assert_equal_to_zonal(table: pa.Table, cells: list[str], zonal: pa.Table, years) -> None:
    by_cell = {(r["cell"], r["year"]): r for r in table.to_pylist()}
    for row in zonal.to_pylist():
        mine = by_cell[cells[row["i"]], row["year"]]
        assert row["pixels"] > 0
        got = (mine["pixels"], mine["nodata_pixels"], mine["embedding"])
        assert got == (row["pixels"], row["nodata_pixels"], row["embedding"]), cells[row["i"]]
    assert len(zonal) == len(cells) * len(years)


def test_each_block_is_read_once_for_all_cells(north, http_server):
    """The whole north-up tile over HTTP in H3 cells: every pixel block of the file is
    fetched once (the server's request log), and the cells are numpy's."""
    index, path = north
    folder = Path(index).parent.name
    log = http_server.log
    west, south, east, north_ = NORTH_UP.bounds
    box = [west + 1, south + 1, east - 1, north_ - 1]
    with aefsql.connect(catalog=f"{http_server.base_url}{folder}/index.parquet") as con:
        before = log.total
        table = grid(con, box, ", cell := 'h3:9', years := 2023, crs := 32633")
    reads = block_reads(block_ranges(path), sorted(pixel_reads(log, before, path.name)))
    assert reads.max() == 1 and reads.sum() == len(block_ranges(path))
    code, x, y, values = tile_pixels(path, box)
    assert_grid(table, 2023, numpy_grid(h3_cells(code, x, y, 9), values))


@pytest.mark.parametrize("cell", [1000, "h3:7"])
def test_level_one_is_the_overview_s_pixels(con, gdal_collection, cell):
    epsg, box = tile3_box(gdal_collection)
    table = grid(con, box, f", cell := {cell!r}, years := 2024, crs := {epsg}, level := 1")
    path = gdal_collection.folder / collection_path(2024, 3)
    code, x, y, values = tile_pixels(path, box, level=1)
    cells = square_cells(code, x, y, 1000) if cell == 1000 else h3_cells(code, x, y, 7)
    assert_grid(table, 2024, numpy_grid(cells, values))


def test_squares_equal_aef_zonal_over_their_polygons(con, gdal_collection):
    """An area of whole 400 m squares: every cell equals aef_zonal over its square, exactly
    (the same rule: the same float32 means)."""
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    box = [x0 + 400.0, y0 + 400.0, x0 + 2800.0, y0 + 2400.0]
    table = grid(con, box, f", cell := 400, years := [2023, 2024], crs := {epsg}")
    cells = sorted(set(table["cell"].to_pylist()))
    assert len(cells) == 6 * 5
    squares = []
    for name in cells:
        _, code, x, y = name.split(":")
        assert int(code) == epsg
        x, y = float(x), float(y)
        squares.append(
            f"POLYGON(({x} {y}, {x + 400} {y}, {x + 400} {y + 400}, {x} {y + 400}, {x} {y}))"
        )
    zonal = zonal_of(con, squares, f", years := [2023, 2024], crs := {epsg}")
    assert_equal_to_zonal(table, cells, zonal, (2023, 2024))


def test_h3_cells_equal_aef_zonal_over_their_polygons(con, gdal_collection):
    """H3 cells wholly inside the area (their densified boundaries inside the box): each
    equals aef_zonal over its boundary, exactly."""
    epsg, box = tile3_box(gdal_collection)
    table = grid(con, box, f", cell := 'h3:9', years := 2023, crs := {epsg}")
    to_utm = Transformer.from_crs(4326, epsg, always_xy=True)
    inside, rings = [], []
    for name in sorted(set(table["cell"].to_pylist())):
        ring = great_circle_ring(name)
        x, y = to_utm.transform(ring[:, 0], ring[:, 1])
        if x.min() > box[0] and x.max() < box[2] and y.min() > box[1] and y.max() < box[3]:
            inside.append(name)
            rings.append("POLYGON((" + ", ".join(f"{a!r} {b!r}" for a, b in ring.tolist()) + "))")
    assert len(inside) >= 5
    zonal = zonal_of(con, rings, ", years := 2023")
    assert_equal_to_zonal(table, inside, zonal, (2023,))


def test_python_grid_equals_sql(con, gdal_collection):
    epsg, box = tile3_box(gdal_collection)
    got = aefsql.grid(box, cell="h3:9", years=2023, crs=epsg, catalog=gdal_collection.index)
    assert got.equals(grid(con, box, f", cell := 'h3:9', years := 2023, crs := {epsg}"))
    got = aefsql.grid(box, cell=500.0, years=[2023], crs=epsg, catalog=gdal_collection.index)
    assert got.equals(grid(con, box, f", cell := 500, years := 2023, crs := {epsg}"))


@pytest.mark.parametrize(
    "cell, words",
    [
        ("'h3-7'", "cell := 'h3-7' is neither: pass cell := 'h3:7'"),
        ("'h3:16'", "cell := 'h3:16': an H3 resolution is 0 to 15"),
        ("'1000'", "cell := '1000': a size in metres is a number, as cell := 1000"),
        ("2.5", "cell := 2.5: a square cell is a whole number of metres"),
        ("0", "cell := 0: a square cell is a whole number of metres"),
        ("1e300", "cell := 1e\\+300: a square cell is a whole number of metres, 1 to 10,000,000"),
        ("10000001", "cell := 10000001: a square cell is a whole number of metres"),
        ("NULL", "pass cell := 'h3:7' (H3 cells of resolution 0-15) or cell := 1000"),
    ],
)
def test_a_misspelt_cell_is_refused_naming_the_parameter(con, cell, words):
    with pytest.raises(Exception, match=words.replace("(", r"\(").replace(")", r"\)")):
        grid(con, SEAM_BOX, f", cell := {cell}, years := 2023")


def test_python_says_cell_in_its_own_words(gdal_collection):
    with pytest.raises(AefsqlError, match="cell='h3-7' is neither: pass cell='h3:7'"):
        aefsql.grid(SEAM_BOX, cell="h3-7", years=2023, catalog=gdal_collection.index)


def test_h3_without_the_package_names_the_extra(con, gdal_collection, monkeypatch):
    real = options.importlib.util.find_spec
    monkeypatch.setattr(
        options.importlib.util, "find_spec", lambda name: None if name == "h3" else real(name)
    )
    hint = r"cell := 'h3:7' needs the h3 package: pip install 'aefsql\[h3\]'"
    with pytest.raises(Exception, match=hint):
        grid(con, SEAM_BOX, ", cell := 'h3:7', years := 2023")
    with pytest.raises(AefsqlError, match=hint.replace(" := ", "=")):
        aefsql.grid(SEAM_BOX, cell="h3:7", years=2023, catalog=gdal_collection.index)
    # Square cells need no h3.
    assert grid(con, SEAM_BOX, ", cell := 1000, years := 2023").num_rows > 0


# -- geometry := 'pixel' | 'point': the cell's outline or centre in lon/lat -----------------


def geoms(table: pa.Table) -> list:
    return [shapely.from_wkb(v) for v in table["geom"].to_pylist()]


def on_great_circle(a, b, points) -> np.ndarray:
    """Whether lon/lat `points` lie on the great-circle arc from a to b (lon/lat), within
    1e-9 rad, between them."""

    def xyz(lon, lat):
        lon, lat = np.radians(lon), np.radians(lat)
        return np.column_stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])

    a, b = xyz(*np.array([a]).T), xyz(*np.array([b]).T)
    p = xyz(points[:, 0], points[:, 1])
    normal = np.cross(a, b) / np.linalg.norm(np.cross(a, b))
    off = np.abs(p @ normal[0])
    between = (p @ a[0] > a[0] @ b[0] - 1e-12) & (p @ b[0] > a[0] @ b[0] - 1e-12)
    return (off < 1e-9) & between


@pytest.mark.parametrize("resolution", [7, 9])
def test_h3_geometry_is_h3_s_boundary_on_great_circles_and_its_centre(con, resolution):
    """'pixel': h3's cell_to_boundary vertices, in its order, and between two vertices points
    on the great-circle arc joining them, at most 640 m apart (a 10 m pixel footprint's rule);
    'point': h3's cell_to_latlng."""
    geod = Geod(ellps="WGS84")
    call = f", cell := 'h3:{resolution}', years := 2023"
    table = grid(con, SEAM_BOX, call + ", geometry := 'pixel'")
    assert table.column_names == [*COLUMNS, "geom"]
    plain = grid(con, SEAM_BOX, call)
    assert table.drop_columns(["geom"]).equals(plain)
    split = 0
    for name, shape in zip(table["cell"].to_pylist(), geoms(table), strict=True):
        assert shape.geom_type == "Polygon" and shape.exterior.is_ccw
        ring = np.array(shape.exterior.coords)
        corners = np.array(h3.cell_to_boundary(name))[:, ::-1]  # (lon, lat)
        at = [int(np.flatnonzero((ring == c).all(axis=1))[0]) for c in corners]
        assert at == sorted(at) and at[0] == 0 and (ring[-1] == ring[0]).all()
        for k, (start, stop) in enumerate(zip(at, [*at[1:], len(ring) - 1], strict=True)):
            inner = ring[start + 1 : stop]
            split += len(inner) > 0
            assert on_great_circle(corners[k], corners[(k + 1) % len(corners)], inner).all()
            steps = geod.line_lengths(ring[start : stop + 1, 0], ring[start : stop + 1, 1])
            assert max(steps) <= 640.0 * 1.001
    assert split > 0 if resolution == 7 else split == 0  # res 7: ~1.2 km edges
    points = geoms(grid(con, SEAM_BOX, call + ", geometry := 'point'"))
    for name, point in zip(table["cell"].to_pylist(), points, strict=True):
        lat, lon = h3.cell_to_latlng(name)
        assert (point.x, point.y) == (lon, lat)


def test_square_geometry_is_pyproj_s_projected_square_and_centre(con, gdal_collection):
    """A 1000 m square: its UTM corners, each edge in 2 segments (a vertex every 640 m at
    most), projected by pyproj; its centre projected."""
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    box = [x0 + 400.0, y0 + 400.0, x0 + 2800.0, y0 + 2400.0]
    call = f", cell := 1000, years := [2023, 2024], crs := {epsg}"
    table = grid(con, box, call + ", geometry := 'pixel'")
    centres = geoms(grid(con, box, call + ", geometry := 'point'"))
    to_lonlat = Transformer.from_crs(epsg, "OGC:CRS84", always_xy=True)
    t = np.array([0.0, 0.5])
    u = np.r_[t, [1, 1], 1 - t, [0, 0], 0.0]
    v = np.r_[[0, 0], t, [1, 1], 1 - t, 0.0]
    assert table.num_rows >= 8
    for name, shape, centre in zip(table["cell"].to_pylist(), geoms(table), centres, strict=True):
        _, code, x, y = name.split(":")
        assert int(code) == epsg
        lon, lat = to_lonlat.transform(float(x) + 1000 * u, float(y) + 1000 * v)
        assert np.allclose(np.array(shape.exterior.coords), np.column_stack([lon, lat]), 0, 1e-12)
        lon, lat = to_lonlat.transform(float(x) + 500, float(y) + 500)
        assert np.allclose([centre.x, centre.y], [lon, lat], 0, 1e-12)


def test_an_h3_cell_across_the_antimeridian_is_split_at_180():
    from aefsql.geometry.footprints import h3_geometries

    name = h3.latlng_to_cell(-16.5, 180.0, 5)
    assert np.ptp(np.array(h3.cell_to_boundary(name))[:, 1]) > 180
    (shape,) = [shapely.from_wkb(v) for v in h3_geometries("pixel", [name]).to_pylist()]
    assert shape.geom_type == "MultiPolygon" and len(shape.geoms) == 2
    west, east = sorted(shape.geoms, key=lambda g: g.bounds[0])
    assert west.bounds[0] == -180.0 and east.bounds[2] == 180.0
    lat, lon = h3.cell_to_latlng(name)
    assert shape.covers(shapely.Point(lon if lon <= 180 else lon - 360, lat))


def test_copy_writes_geoparquet_geopandas_reads_in_crs84(con, tmp_path):
    """COPY … (GEOPARQUET_VERSION 'V2'): GeoPandas reads the cells' outlines in OGC:CRS84,
    the same shapes as the query's, each holding its H3 centre."""
    call = f"FROM aef_grid({SEAM_BOX}, cell := 'h3:8', years := 2023, geometry := 'pixel')"
    out = tmp_path / "cells.parquet"
    con.sql(f"COPY ({call}) TO '{out}' (FORMAT parquet, GEOPARQUET_VERSION 'V2')")
    frame = geopandas.read_parquet(out)
    assert frame.crs.equals(CRS("OGC:CRS84")) and frame.geometry.name == "geom"
    table = con.sql(call).to_arrow_table()
    assert frame["cell"].tolist() == table["cell"].to_pylist() and len(frame) > 3
    assert [g.wkb for g in frame.geometry] == [g.wkb for g in geoms(table)]
    for name, shape in zip(frame["cell"], frame.geometry, strict=True):
        assert len(shape.exterior.coords) == 7  # 6 vertices, closed: ~0.5 km edges
        assert shape.contains(shapely.Point(*h3.cell_to_latlng(name)[::-1]))


def test_misspelt_geometry_is_refused_and_none_unless_asked(con, gdal_collection):
    """A misspelt value fails the query, naming the parameter; without geometry, no geom
    column and no geometry UDF in the plan (DuckDB never calls it)."""
    call = f"aef_grid({SEAM_BOX}, cell := 1000, years := 2023"

    def planned(extra: str) -> list[str]:
        plan = "".join(r[1] for r in con.sql(f"EXPLAIN FROM {call}{extra})").fetchall())
        return re.findall(r"\w*geom\w*", plan)

    with pytest.raises(Exception, match=r"geometry := 'points': geometry is 'point' .* or 'pixel'"):
        con.sql(f"DESCRIBE FROM {call}, geometry := 'points')").fetchall()
    assert "geom" not in grid(con, SEAM_BOX, ", cell := 1000, years := 2023").column_names
    assert not planned("")
    assert planned(", geometry := 'point'")
    described = con.sql(f"DESCRIBE FROM {call}, geometry := 'point')").fetchall()
    assert described[-1][:2] == ("geom", "GEOMETRY('OGC:CRS84')")
    with pytest.raises(AefsqlError, match=r"geometry='pt': geometry is 'point'"):
        aefsql.grid(SEAM_BOX, cell=1000, years=2023, geometry="pt", catalog=gdal_collection.index)


def test_python_geometry_equals_sql(con, gdal_collection):
    got = aefsql.grid(
        SEAM_BOX, cell="h3:8", years=2023, geometry="pixel", catalog=gdal_collection.index
    )
    expected = grid(con, SEAM_BOX, ", cell := 'h3:8', years := 2023, geometry := 'pixel'")
    assert got.column_names == expected.column_names
    assert got["geom"].to_pylist() == expected["geom"].to_pylist()


def test_squares_across_the_seam_are_each_projected_from_their_own_zone(con):
    """Across 12°E the squares of both zones: each centre from its own zone's CRS."""
    table = grid(con, SEAM_BOX, ", cell := 500, years := 2023, geometry := 'point'")
    zones = set()
    for name, point in zip(table["cell"].to_pylist(), geoms(table), strict=True):
        _, code, x, y = name.split(":")
        zones.add(int(code))
        to_lonlat = Transformer.from_crs(int(code), "OGC:CRS84", always_xy=True)
        lon, lat = to_lonlat.transform(float(x) + 250, float(y) + 250)
        assert np.allclose([point.x, point.y], [lon, lat], 0, 1e-12), name
    assert zones == {32632, 32633}
