"""The Python entry points' own surface (issue 21): every option named in the signature
(an unknown keyword is a TypeError, storage options are one `storage_options=` mapping),
`level` in read_area and picture, and errors phrased in Python's syntax."""

import inspect

import numpy as np
import pyarrow as pa
import pytest
import rasterio
from gdal_fixtures import COLLECTION_TILES, collection_path
from helpers import readme_python, star
from pyproj import Transformer
from rasterio.transform import rowcol

import aefsql
from aefsql import api
from aefsql.duck import registration
from aefsql.duck import udfs as duck
from aefsql.errors import AefsqlError
from aefsql.geometry.geo import polygon_wkb
from aefsql.kernels import maps, pictures, rasters
from aefsql.session import open_session

# -- unknown keywords -------------------------------------------------------------------


def entry_points():
    """(name, a call with a misspelt keyword) of every Python entry point."""
    box = [-77.05, -12.05, -77.04, -12.04]
    points = pa.table({"lon": [-77.04], "lat": [-12.04]})
    return [
        ("connect", lambda **kw: aefsql.connect(**kw)),
        ("register", lambda **kw: aefsql.register(__import__("duckdb").connect(), **kw)),
        ("open_session", lambda **kw: open_session(**kw)),
        ("sample_points", lambda **kw: aefsql.sample_points(points, years=2024, **kw)),
        ("write_headers", lambda **kw: aefsql.write_headers("x.parquet", **kw)),
        ("read_area", lambda **kw: aefsql.read_area(box, 2024, **kw)),
        ("picture", lambda **kw: aefsql.picture(box, 2024, **kw)),
        ("write_map", lambda **kw: aefsql.write_map(box, 2024, "x.tif", kind="pca", **kw)),
        ("zonal", lambda **kw: aefsql.zonal(points, years=2024, **kw)),
        ("similarity", lambda **kw: aefsql.similarity(box, [0.1] * 64, years=2024, **kw)),
        ("change", lambda **kw: aefsql.change(box, years=[2023, 2024], **kw)),
        ("grid", lambda **kw: aefsql.grid(box, cell=1000, years=2024, **kw)),
        ("export", lambda **kw: aefsql.export(box, "x.parquet", years=2024, **kw)),
    ]


@pytest.mark.parametrize(
    "name, call", entry_points(), ids=lambda v: v if isinstance(v, str) else ""
)
@pytest.mark.parametrize("keyword", ["cache_dri", "endpoint_url"])
def test_unknown_keywords_are_refused(gdal_collection, name, call, keyword):
    """A misspelt option, or a storage option passed loose, was silently taken for a storage
    option (and dropped for a local catalog)."""
    with pytest.raises(TypeError, match=keyword):
        call(catalog=gdal_collection.index, **{keyword: "x"})


@pytest.mark.parametrize(
    "name",
    [
        "registration.connect",
        "registration.register",
        "session.open_session",
        "api.sample_points",
        "api.write_headers",
        "api.build_collection",
        "api.zonal",
        "api.similarity",
        "api.change",
        "api.grid",
        "api.export",
        "rasters.read_area",
        "pictures.picture",
        "maps.write_map",
    ],
)
def test_options_are_named_in_signature_and_docstring(name):
    module, attribute = name.split(".")
    modules = {
        "registration": registration,
        "duck": duck,
        "session": aefsql.session,
        "api": api,
        "rasters": rasters,
        "pictures": pictures,
        "maps": maps,
    }
    function = getattr(modules[module], attribute)
    parameters = inspect.signature(function).parameters
    assert not any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    assert "storage_options" in parameters
    for name, parameter in parameters.items():
        if parameter.kind is parameter.KEYWORD_ONLY:
            assert f"`{name}" in inspect.getdoc(function) or name in _documented_by_reference(
                function
            ), f"{function.__name__}: {name} is not documented"


def _documented_by_reference(function) -> str:
    """A docstring that sends the reader to another function's for its options."""
    doc = inspect.getdoc(function)
    for other in (registration.register, rasters.read_area, api.sample_points):
        if f"`{other.__name__}`" in doc or f"aefsql.{other.__name__}" in doc:
            return inspect.getdoc(other)
    return ""


# -- level ------------------------------------------------------------------------------


@pytest.mark.parametrize("level", [1, 2])
def test_read_area_at_level_equals_gdal_overview(gdal_collection, level):
    """read_area(level=k) is the k-th overview: every output pixel equals the overview pixel
    under its centre (rasterio's overview_level k - 1); it returned full resolution."""
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    box = [x0 + 505, y0 + 415, x0 + 2495, y0 + 2185]
    got = aefsql.read_area(box, 2023, crs=epsg, level=level, catalog=gdal_collection.index)
    path = gdal_collection.folder / collection_path(2023, 3)
    with rasterio.open(path, overview_level=level - 1) as ds:
        expected_data, transform = ds.read(), ds.transform
    size = 10.0 * 2**level
    assert got.x.values[1] - got.x.values[0] == size
    xs, ys = np.meshgrid(got.x.values, got.y.values)
    rows, cols = rowcol(transform, xs.ravel(), ys.ravel())
    expected = expected_data[:, np.asarray(rows), np.asarray(cols)]
    values = got.values[0].reshape(64, -1)
    assert values.shape[1] > 100 // 4 ** (level - 1)
    assert np.array_equal(values, expected)


def test_picture_at_level_is_the_overview_picture(gdal_collection, tmp_path):
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    box = [x0 + 505, y0 + 415, x0 + 2495, y0 + 2185]
    full = aefsql.picture(box, 2023, crs=epsg, catalog=gdal_collection.index)
    coarse = aefsql.picture(box, 2023, crs=epsg, level=1, catalog=gdal_collection.index)
    assert coarse.grid.transform.a == 2 * full.grid.transform.a == 20.0
    area = aefsql.read_area(box, 2023, crs=epsg, level=1, catalog=gdal_collection.index)
    assert np.array_equal(coarse.rgba, pictures.pca_rgb(area.values[0]))


# -- aefsql.zonal -------------------------------------------------------------------------


def zonal_polygons():
    """Polygons in tile 3 (18S) and one across tiles 1/2 (33N), in lon/lat, with a NULL and
    an uncovered one; extra columns of several Arrow types."""
    rings = []
    for k, (cx, cy, r) in enumerate([(1500, 1300, 700), (900, 900, 400), (2200, 1800, 300)]):
        _, epsg, x0, y0 = COLLECTION_TILES[3]
        ring = star(x0 + cx, y0 + cy, r, seed=k)
        lon, lat = Transformer.from_crs(epsg, 4326, always_xy=True).transform(*ring.T)
        rings.append(np.column_stack([lon, lat]))
    rings.append(np.array([[-30.0, 30.0], [-29.99, 30.0], [-29.99, 30.01], [-30.0, 30.0]]))
    return rings


def test_zonal_of_a_geodataframe_equals_sql_aef_zonal(gdal_collection):
    """aefsql.zonal did not exist (the name was an internal module): a GeoPandas user had to
    register the frame and write SQL. Same rows and values as aef_zonal, input columns kept
    with their types."""
    gpd = pytest.importorskip("geopandas")
    shapely = pytest.importorskip("shapely")
    rings = zonal_polygons()
    frame = gpd.GeoDataFrame(
        {
            "field": ["a", "b", "c", "sea"],
            "code": pa.array([1, 2, 3, 4], pa.int8()).to_pandas(),
        },
        geometry=[shapely.Polygon(r) for r in rings],
        crs="EPSG:4326",
    )
    got = aefsql.zonal(frame, years=[2024, 2023], catalog=gdal_collection.index)
    con = aefsql.connect(catalog=gdal_collection.index)
    try:
        wkb = [shapely.to_wkb(g) for g in frame.geometry]
        con.register("polys", pa.table({"field": frame["field"].tolist(), "geom": wkb}))
        expected = con.sql(
            "SELECT * FROM aef_zonal('polys', years := [2023, 2024])"
        ).to_arrow_table()
    finally:
        con.close()
    assert got.column_names == [
        "field",
        "code",
        "geometry",
        "year",
        "pixels",
        "nodata_pixels",
        "centroid_pixel",
        "embedding",
    ]
    assert got.schema.field("code").type == pa.int8()
    assert got["field"].to_pylist() == expected["field"].to_pylist()
    for name in ("year", "pixels", "nodata_pixels", "centroid_pixel", "embedding"):
        assert got[name].to_pylist() == expected[name].to_pylist(), name
    assert min(got["pixels"].to_pylist()[:6]) > 100 and got["embedding"][7].as_py() is None


def test_zonal_of_arrow_in_a_projected_crs_and_at_a_level(gdal_collection):
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    ring = star(x0 + 1500, y0 + 1300, 900, seed=4)
    table = pa.table({"id": [7], "shape": [polygon_wkb(*ring.T)]})
    got = aefsql.zonal(
        table,
        years=2023,
        geometry_column="shape",
        crs=epsg,
        level=1,
        catalog=gdal_collection.index,
    )
    con = aefsql.connect(catalog=gdal_collection.index)
    try:
        con.register("t", table)
        expected = con.sql(
            f"SELECT pixels, embedding FROM aef_zonal('t', years := 2023, "
            f"geometry_column := 'shape', crs := {epsg}, level := 1)"
        ).fetchall()
    finally:
        con.close()
    rows = got.select(["pixels", "embedding"]).to_pylist()
    assert [(r["pixels"], r["embedding"]) for r in rows] == [(p, list(e)) for p, e in expected]
    with pytest.raises(TypeError, match="x_column"):
        aefsql.zonal(table, years=2023, x_column="x", catalog=gdal_collection.index)
    with pytest.raises(AefsqlError, match="no column 'geom'"):
        aefsql.zonal(table, years=2023, catalog=gdal_collection.index)


# -- errors in each host's syntax -------------------------------------------------------


def python_calls(catalog):
    points = pa.table({"lon": [-77.04], "lat": [-12.04]})
    box = [-77.05, -12.05, -77.04, -12.04]
    return {
        "sample_points": lambda **kw: aefsql.sample_points(points, catalog=catalog, **kw),
        "zonal": lambda **kw: aefsql.zonal(pa.table({"geom": [b""]}), catalog=catalog, **kw),
        "read_area": lambda **kw: aefsql.read_area(
            box, kw.pop("years", None), catalog=catalog, **kw
        ),
        "picture": lambda **kw: aefsql.picture(box, kw.pop("years", None), catalog=catalog, **kw),
        "write_headers": lambda **kw: aefsql.write_headers(
            "/nonexistent/c.parquet", catalog=catalog, **kw
        ),
    }


@pytest.mark.parametrize(
    "name", ["sample_points", "zonal", "read_area", "picture", "write_headers"]
)
def test_python_errors_speak_python(gdal_collection, name):
    """`pass years := 2024` came out of Python calls: the same message, in Python's syntax."""
    call = python_calls(gdal_collection.index)[name]
    if name in ("sample_points", "zonal"):
        with pytest.raises(AefsqlError) as error:
            call()
        assert str(error.value) == "pass years=2024 or years=[2023, 2024]: AEF has one image a year"
    with pytest.raises(AefsqlError) as error:
        call(years=[])
    assert str(error.value) == "years names no year: pass years=2024 or years=[2023, 2024]"
    assert ":=" not in str(error.value)


def test_python_errors_speak_python_in_every_option(gdal_collection):
    points = pa.table({"lon": [-77.04], "lat": [-12.04]})
    with pytest.raises(AefsqlError) as error:
        aefsql.sample_points(points, years=2024, bands=[], catalog=gdal_collection.index)
    assert str(error.value) == (
        "bands=[] selects no band: name some (bands=['A00', 'A05']) or omit it"
    )
    with pytest.raises(AefsqlError) as error:
        aefsql.sample_points(
            points, years=2024, as_vector=True, bands=["A00"], catalog=gdal_collection.index
        )
    assert str(error.value) == "as_vector=True returns all 64 bands as one vector: drop bands="
    with pytest.raises(AefsqlError) as error:
        aefsql.sample_points(points, years=2024, year=2023, catalog=gdal_collection.index)
    assert str(error.value) == "pass years=… or its alias year=…, not both"


def test_each_host_says_a_parameter_its_own_way(gdal_collection):
    """One message, four wordings: the SQL one is what DuckDB shows."""
    from aefsql.options import OptionError, year_list

    with pytest.raises(OptionError) as error:
        year_list(None)
    message = error.value
    assert str(message) == "pass years := 2024 or years := [2023, 2024]: AEF has one image a year"
    assert str(message.phrased("cli")) == (
        "pass --years 2024 or --years 2023,2024: AEF has one image a year"
    )
    assert str(message.phrased("spark_sql")) == (
        "pass years => 2024 or years => array(2023, 2024): AEF has one image a year"
    )
    con = aefsql.connect(catalog=gdal_collection.index)
    try:
        con.execute("CREATE TABLE p AS SELECT 1.0 AS lon, 2.0 AS lat")
        with pytest.raises(Exception, match=r"pass years := 2024 or years := \[2023, 2024\]"):
            con.sql("SELECT * FROM aef_sample_points('p', bands := ['A00'])").fetchall()
        with pytest.raises(Exception, match=r"bands := \[\] selects no band"):
            con.sql("SELECT * FROM aef_sample_points('p', years := 2023, bands := [])").fetchall()
    finally:
        con.close()


# -- the README's examples of these entry points -----------------------------------------


@pytest.fixture(scope="module")
def demo_index(tmp_path_factory):
    from aefsql.demo import write_demo_collection

    return str(write_demo_collection(tmp_path_factory.mktemp("demo"), tile_px=256))


def test_readme_zonal_and_area_examples_run(demo_index, tmp_path, monkeypatch):
    pytest.importorskip("geopandas")
    pytest.importorskip("xarray")

    monkeypatch.setenv("AEFSQL_CATALOG", demo_index)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(readme_python("aefsql.zonal(parcels"), namespace)
    means = namespace["means"]
    assert means["year"].to_pylist() == [2023, 2024] and means["pixels"][0].as_py() > 100
    namespace = {}
    exec(readme_python("aefsql.read_area(area"), namespace)
    before, after = namespace["before"], namespace["after"]
    assert before.axes is after.axes and (before.year, after.year) == (2023, 2024)
    pngs = ["area-2023.png", "area-2024.png", "area.png", "similar.png"]
    # each with its georeferencing beside it: a world file and GDAL's .aux.xml
    sidecars = [f"{name[:-4]}.pgw" for name in pngs] + [f"{name}.aux.xml" for name in pngs]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(pngs + sidecars)


def ml_and_spark_entry_points():
    """(module, a call with **kw) of the entry points in the optional extras: each refuses a
    keyword it does not know before reading or starting anything. Each imports its library
    (torch, PySpark), so carries its marker."""
    points = pa.table({"lon": [-77.04], "lat": [-12.04]})
    calls = [
        ("aefsql.torch", lambda m, **kw: m.ChipDataset(points, size=8, years=2024, **kw)),
        ("aefsql.torchgeo", lambda m, **kw: m.AEF(years=2024, **kw)),
        ("aefsql.spark", lambda m, **kw: m.sample_points(None, years=2024, **kw)),
        ("aefsql.spark", lambda m, **kw: m.zonal(None, years=2024, **kw)),
        ("aefsql.spark", lambda m, **kw: m.register(None, **kw)),
    ]
    marks = {"aefsql.torch": pytest.mark.torch, "aefsql.torchgeo": pytest.mark.torch}
    return [
        pytest.param(module, call, marks=marks.get(module, pytest.mark.spark))
        for module, call in calls
    ]


@pytest.mark.parametrize("module, call", ml_and_spark_entry_points())
@pytest.mark.parametrize("keyword", ["cache_dri", "endpoint_url"])
def test_extras_refuse_unknown_keywords(gdal_collection, module, call, keyword):
    """ChipDataset and AEF took any keyword as a storage option (dropped for a local
    catalog); Spark's functions sent them to every executor."""
    loaded = pytest.importorskip(module)
    with pytest.raises(TypeError, match=keyword):
        call(loaded, catalog=gdal_collection.index, **{keyword: "x"})


def test_storage_options_reach_the_store(s3_collection):
    """storage_options= is the one way to give them: a remote catalog is read with them."""
    table = aefsql.sample_points(
        pa.table({"lon": [-77.04], "lat": [-12.04]}),
        years=2023,
        bands=["A00"],
        catalog=s3_collection.index,
        storage_options=s3_collection.storage_options,
    )
    assert table.num_rows == 1
    session = open_session(s3_collection.index, storage_options=s3_collection.storage_options)
    assert (
        session.engine.store.options["s3"]["endpoint_url"]
        == (s3_collection.storage_options["endpoint_url"])
    )


def test_zonal_on_error_null_names_the_bad_row(gdal_collection):
    """aef_zonal's on_error, in aefsql.zonal too: a LINESTRING keeps its row with a reason."""
    ring = zonal_polygons()[0]
    line = bytes.fromhex("010200000002000000") + bytes(32)  # LINESTRING, 2 points
    table = pa.table({"id": [1, 2], "geom": [polygon_wkb(*ring.T), line]})
    got = aefsql.zonal(table, years=2023, on_error="null", catalog=gdal_collection.index)
    assert got.column_names[-1] == "aef_error" and got["id"].to_pylist() == [1, 2]
    errors = got["aef_error"].to_pylist()
    assert errors[0] is None and got["pixels"][0].as_py() > 100
    assert errors[1] and got["embedding"][1].as_py() is None
    with pytest.raises(Exception, match="row 2"):
        aefsql.zonal(table, years=2023, catalog=gdal_collection.index)


def test_warnings_name_the_users_line(gdal_collection):
    """A warning given deep in aefsql (and through the entry points' decorators) points at
    the caller's line, not at aefsql's code."""
    points = pa.table({"lon": [-77.04], "lat": [-12.04]})
    box = [-77.05, -12.05, -77.04, -12.04]
    calls = [
        lambda: aefsql.sample_points(points, years=2031, catalog=gdal_collection.index),
        lambda: aefsql.read_area(box, 2031, catalog=gdal_collection.index),
    ]
    for call in calls:
        with pytest.warns(UserWarning) as record:
            call()
        assert {w.filename for w in record} == {__file__}


def test_area_and_level_errors_speak_python(gdal_collection):
    """Raised deep in aefsql (areas, headers), they said `crs :=` and `level :=` in Python."""
    with pytest.raises(AefsqlError) as error:
        aefsql.read_area([500000, 4e6, 500100, 4.0001e6], 2023, catalog=gdal_collection.index)
    assert str(error.value).endswith("if they are projected, say so with crs= (e.g. crs=32633)")
    with pytest.raises(AefsqlError) as error:
        aefsql.read_area([1, 1, 1.001, 1.001], 2023, level=-1, catalog=gdal_collection.index)
    assert str(error.value).startswith("level=-1: a level is 0 (full resolution)")


# -- data first, options keyword-only and named and ordered as in SQL (issue 23) ------------

# (entry point, its positional data parameters, the SQL function whose parameters its options
# are, the SQL parameters it does not offer). A SQL parameter it offers has the SQL name, so a
# misnamed one shows as missing.
SIGNATURES = [
    ("aefsql.connect", ["database", "catalog"], None, set()),
    ("aefsql.register", ["con", "catalog"], None, set()),
    ("aefsql.sample_points", ["points"], "aef_sample_points", set()),
    ("aefsql.zonal", ["polygons"], "aef_zonal", set()),
    ("aefsql.change", ["area"], "aef_change", set()),
    ("aefsql.grid", ["area"], "aef_grid", set()),
    ("aefsql.similarity", ["area", "reference"], "aef_similarity", set()),
    # (export writes all 64 bands, as published: no bands, no as_vector)
    ("aefsql.export", ["area", "output"], "aef_pixels", {"bands", "as_vector"}),
    # (aef_pixels' as_vector: read_area's is a cube of vectors; picture gives an image.)
    ("aefsql.read_area", ["area", "years"], "aef_pixels", {"year", "geometry"}),
    ("aefsql.picture", ["area", "year", "path"], "aef_pixels", {"years", "as_vector", "geometry"}),
    ("aefsql.write_headers", ["output"], "aef_headers", set()),
    ("aefsql.build_collection", ["output"], "aef_headers", set()),
    pytest.param(
        # (geometry: Spark has no GEOMETRY type to hold it)
        "aefsql.spark.sample_points",
        ["df"],
        "aef_sample_points",
        {"geometry"},
        marks=pytest.mark.spark,
    ),
    pytest.param("aefsql.spark.zonal", ["df"], "aef_zonal", {"max_bytes"}, marks=pytest.mark.spark),
    pytest.param(
        "aefsql.spark.register", ["spark", "catalog"], None, set(), marks=pytest.mark.spark
    ),
    pytest.param(
        "aefsql.torch.ChipDataset",
        ["points"],
        "aef_chips",
        # (a dataset of tensors: no table to hold a status or geom column)
        {"year", "max_bytes", "on_error", "status", "geometry"},
        marks=pytest.mark.torch,
    ),
    pytest.param(
        "aefsql.torchgeo.AEF",
        ["catalog"],
        "aef_pixels",
        {"year", "max_bytes", "level", "as_vector", "geometry"},
        marks=pytest.mark.torch,
    ),
]


SQL_DATA = {"points_table", "polygons_table", "area"}  # the SQL functions' own data


def _entry_point(name: str):
    module, attribute = name.rsplit(".", 1)
    return getattr(__import__("importlib").import_module(module), attribute)


@pytest.fixture(scope="module")
def sql_parameters(gdal_collection) -> dict[str, list[str]]:
    """{aef_* function: its parameters in order}, as DuckDB registers the macros."""
    with aefsql.connect(catalog=gdal_collection.index) as con:
        rows = con.sql(
            "SELECT function_name, parameters FROM duckdb_functions() "
            "WHERE function_name LIKE 'aef_%'"
        ).fetchall()
    return dict(rows)


@pytest.mark.parametrize(
    "name, data, function, not_offered",
    SIGNATURES,
    ids=lambda v: v if isinstance(v, str) and v.startswith("aefsql.") else "",
)
def test_entry_points_take_data_first_then_the_sql_options_in_sql_order(
    sql_parameters, name, data, function, not_offered
):
    entry = _entry_point(name)
    parameters = list(inspect.signature(entry).parameters.values())
    positional = [p for p in parameters if p.kind is not p.KEYWORD_ONLY]
    assert [p.name for p in positional] == data, "data first, positional"
    assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in positional)
    assert not any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in parameters)
    if function is None:
        return
    wanted = [p for p in sql_parameters[function] if p not in SQL_DATA and p not in data]
    offered = [p.name for p in parameters if p.kind is p.KEYWORD_ONLY and p.name in wanted]
    assert offered == [p for p in wanted if p not in not_offered], (offered, wanted)
