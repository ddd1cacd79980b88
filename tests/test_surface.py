"""The surface shared by SQL, Python and the CLI: years, crs, geometry columns, collisions,
DataFrames, vectors, and the errors a person can act on (issue 9)."""

import csv  # noqa: F401  (imported on purpose: DuckDB's replacement scan must not pick it)
import json  # noqa: F401  (likewise)
import warnings

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from gdal_fixtures import COLLECTION_TILES
from helpers import band_matrix, gdal_values, tile_points

import aefsql
from aefsql.aef import BAND_NAMES
from aefsql.errors import AefsqlError


@pytest.fixture(scope="module")
def con(gdal_collection):
    con = aefsql.connect(catalog=gdal_collection.index)
    lon, lat, x, y = tile_points(3, 30, seed=91)
    con.register(
        "plots",
        pa.table({"plot": [f"p{i}" for i in range(30)], "lon": lon, "lat": lat, "x": x, "y": y}),
    )
    yield con
    con.close()


def plots_table(n=30, seed=91, k=3):
    lon, lat, x, y = tile_points(k, n, seed=seed)
    return pa.table({"plot": [f"p{i}" for i in range(n)], "lon": lon, "lat": lat, "x": x, "y": y})


# -- wrong rows -----------------------------------------------------------------------------


@pytest.mark.parametrize("years", ["[2023, 2023]", "[2024, 2023, 2024]", "2023"])
def test_duplicate_years_return_each_row_once_per_distinct_year(con, years):
    rows = con.sql(
        f"SELECT plot, year FROM aef_sample_points('plots', years := {years}, bands := ['A00'])"
    ).fetchall()
    distinct = sorted(set(json.loads(years) if years.startswith("[") else [int(years)]))
    assert rows == [(f"p{i}", y) for i in range(30) for y in distinct]


def test_python_duplicate_years_and_integral_years(gdal_collection):
    plots = plots_table()
    table = aefsql.sample_points(
        plots, years=[np.int64(2023), 2023.0, 2023], bands=["A00"], catalog=gdal_collection.index
    )
    assert table.num_rows == 30 and set(table["year"].to_pylist()) == {2023}


def mixed_points() -> pa.Table:
    """Points in three tiles, shuffled, with a NULL, an impossible and an uncovered one."""
    parts = [plots_table(40, seed=5 + k, k=k) for k in (0, 2, 3)]
    table = pa.concat_tables(parts)
    rng = np.random.default_rng(3)
    table = table.take(rng.permutation(table.num_rows))
    lon, lat = table["lon"].to_pylist(), table["lat"].to_pylist()
    lon[4], lat[9], lon[20], lat[20] = None, 123.0, -150.0, -60.0
    return table.set_column(1, "lon", pa.array(lon)).set_column(2, "lat", pa.array(lat))


@pytest.mark.parametrize(
    "python, sql",
    [
        (dict(years=2024), "years := 2024"),
        (dict(years=2031), "years := 2031"),  # no tile at all: every band NULL
        (dict(years=[2024, 2023, 2031]), "years := [2024, 2023, 2031]"),
        (
            dict(years=2023, bands=["A63", "A00", "A07"]),
            "years := 2023, bands := ['A63', 'A00', 'A07']",
        ),
        (dict(years=[2023, 2024], on_error="null"), "years := [2023, 2024], on_error := 'null'"),
        (
            dict(years=2024, x_column="x", y_column="y", crs=32718),
            "years := 2024, x_column := 'x', y_column := 'y', crs := 32718",
        ),
        (dict(years=[2024, 2023], as_vector=True), "years := [2024, 2023], as_vector := true"),
        (
            dict(years=2024, as_vector=True, on_error="null"),
            "years := 2024, as_vector := true, on_error := 'null'",
        ),
    ],
)
def test_python_equals_the_sql_table_function(gdal_collection, python, sql):
    """aefsql.sample_points puts the sampled values in place instead of joining and sorting
    in DuckDB: its result is aef_sample_points', row for row, type for type."""
    points = mixed_points()
    con = aefsql.connect(catalog=gdal_collection.index)
    con.register("mixed", points)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 2031: the catalog has no tile of it
        expected = con.sql(f"SELECT * FROM aef_sample_points('mixed', {sql})").to_arrow_table()
        got = aefsql.sample_points(points, catalog=gdal_collection.index, **python)
    assert got.schema == expected.schema
    assert got.equals(expected)
    valid = got["embedding" if "as_vector" in python else "A07" if "bands" in python else "A00"]
    valid = valid.drop_null()
    if python["years"] != 2031:
        assert 0 < len(valid) < got.num_rows  # some sampled, some not: both paths exercised


@pytest.mark.parametrize("as_vector", [False, True])
def test_python_passes_input_columns_through_with_their_arrow_types(gdal_collection, as_vector):
    plots = plots_table()
    kinds = pa.array(["field", "forest", "field"] * 10).dictionary_encode()
    plots = plots.append_column("name", plots["plot"].cast(pa.large_string()))
    plots = plots.append_column("kind", kinds).append_column("n", pa.array(range(30), pa.uint16()))
    got = aefsql.sample_points(
        plots, years=[2023, 2024], as_vector=as_vector, catalog=gdal_collection.index
    )
    for name in ("name", "kind", "n"):
        assert got.schema.field(name).type == plots.schema.field(name).type
        assert got[name].to_pylist() == [v for v in plots[name].to_pylist() for _ in range(2)]
    assert ("embedding" in got.column_names) == as_vector


@pytest.mark.parametrize("bad", ["2023", 2023.7, True, [2023, "2024"], [], np.bool_(True)])
def test_python_years_must_be_integers(gdal_collection, bad):
    with pytest.raises(AefsqlError, match=r"integer|no year"):
        aefsql.sample_points(plots_table(), years=bad, catalog=gdal_collection.index)


@pytest.mark.parametrize(
    "parameter, message",
    [
        ("year := 2023.7", "a year is an integer such as 2024, not the number 2023.7"),
        ("year := '2023'", "not the string '2023'"),
        ("years := true", "not the boolean"),
        ("years := [2023, NULL]", "not NULL"),
        ("years := []", "names no year"),
        ("year := 2024, years := [2023]", "not both"),
    ],
)
def test_sql_years_are_checked(con, parameter, message):
    with pytest.raises(Exception, match=message):
        con.sql(f"SELECT * FROM aef_sample_points('plots', {parameter})").fetchall()


def test_year_is_an_alias_of_years_and_takes_lists(con):
    by_alias = con.sql(
        "SELECT plot, year, A00 FROM aef_sample_points('plots', year := [2023, 2024], "
        "bands := ['A00'])"
    ).fetchall()
    canonical = con.sql(
        "SELECT plot, year, A00 FROM aef_sample_points('plots', years := [2023, 2024], "
        "bands := ['A00'])"
    ).fetchall()
    assert by_alias == canonical and len(by_alias) == 60


@pytest.mark.parametrize("column", ["year", "A00", "aef_error"])
def test_colliding_columns_fail_and_name_the_column(con, column):
    con.execute(f"CREATE OR REPLACE TEMP TABLE clash AS SELECT *, 1 AS {column} FROM plots")
    with pytest.raises(Exception, match=rf"already has column\(s\) {column}.*RENAME"):
        con.sql(
            "SELECT * FROM aef_sample_points('clash', years := 2023, on_error := 'null')"
        ).fetchall()


def test_a_column_not_added_is_no_collision(con):
    con.execute("CREATE OR REPLACE TEMP TABLE extra AS SELECT *, 1 AS A05 FROM plots")
    table = con.sql(
        "SELECT * FROM aef_sample_points('extra', years := 2023, bands := ['A00'])"
    ).to_arrow_table()
    assert table.column_names == ["plot", "lon", "lat", "x", "y", "A05", "year", "A00"]


def test_python_collision_fails_before_reading(gdal_collection):
    plots = plots_table().append_column("year", pa.array([1] * 30))
    with pytest.raises(AefsqlError, match=r"already has column\(s\) year"):
        aefsql.sample_points(plots, years=2023, catalog=gdal_collection.index)


def test_missing_year_warns_in_python_and_shows_in_the_plan(con, gdal_collection):
    with pytest.warns(UserWarning, match=r"no tile of year\(s\) 2030"):
        table = aefsql.sample_points(
            plots_table(), years=[2023, 2030], bands=["A00"], catalog=gdal_collection.index
        )
    assert table.num_rows == 60
    assert table.filter(pa.compute.equal(table["year"], 2030))["A00"].null_count == 30
    notes = con.sql(
        "SELECT year, note FROM aef_plan('plots', years := [2023, 2030]) WHERE path IS NULL"
    ).fetchall()
    # (the note is aefsql/kernels/coverage.py's, as the warnings'; issue 21)
    assert notes == [(2030, "the catalog has no tile of year(s) 2030 (it has 2023, 2024)")]


def test_no_warning_when_every_year_exists(gdal_collection):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        aefsql.sample_points(
            plots_table(), years=2023, bands=["A00"], catalog=gdal_collection.index
        )


# -- coordinates in any CRS, geometry columns --------------------------------------------


def test_utm_points_with_crs_equal_gdal(con, gdal_collection):
    epsg = COLLECTION_TILES[3][1]
    for crs in (str(epsg), f"'EPSG:{epsg}'"):
        table = con.sql(
            f"SELECT * FROM aef_sample_points('plots', years := 2023, x_column := 'x', "
            f"y_column := 'y', crs := {crs})"
        ).to_arrow_table()
        x, y = table["x"].to_numpy(), table["y"].to_numpy()
        assert np.array_equal(
            band_matrix(table), gdal_values(gdal_collection.folder, 2023, 3, x, y)
        )


def test_utm_points_in_their_tiles_crs_are_never_transformed(gdal_collection, monkeypatch):
    """A point in its tile's CRS goes straight to the pixel grid: PROJ is asked nothing for
    it beyond the catalog search (UTM -> lon/lat once), never UTM -> lon/lat -> UTM."""
    from aefsql.geometry import geo

    calls = []
    real = geo.transform_points

    def counting(source, target, x, y):
        calls.append((source, target))
        return real(source, target, x, y)

    monkeypatch.setattr(geo, "transform_points", counting)
    epsg = COLLECTION_TILES[3][1]
    aefsql.sample_points(
        plots_table(),
        years=2023,
        x_column="x",
        y_column="y",
        crs=epsg,
        bands=["A00"],
        catalog=gdal_collection.index,
    )
    assert (4326, epsg) not in calls
    assert all(source == target for source, target in calls if target == epsg)


def test_geometry_column_equals_lon_lat(con):
    con.execute(
        "CREATE OR REPLACE TEMP TABLE geoms AS SELECT plot, "
        "ST_GeomFromWKB(__aef_wkb) AS geom FROM (SELECT plot, "
        "ST_AsWKB(CAST('POINT(' || lon || ' ' || lat || ')' AS GEOMETRY)) AS __aef_wkb "
        "FROM plots)"
    )
    by_geom = con.sql(
        "SELECT * EXCLUDE (geom) FROM aef_sample_points('geoms', years := 2024, "
        "geometry_column := 'geom')"
    ).to_arrow_table()
    by_xy = con.sql(
        "SELECT * EXCLUDE (lon, lat, x, y) FROM aef_sample_points('plots', years := 2024)"
    ).to_arrow_table()
    assert by_geom.equals(by_xy)
    one = con.sql(
        "SELECT aef_embedding(geom, 2024) = aef_embedding(lon, lat, 2024) FROM geoms "
        "JOIN plots USING (plot)"
    ).fetchall()
    assert all(r[0] for r in one)


def test_wkb_blob_column_and_non_points(con):
    con.execute(
        "CREATE OR REPLACE TEMP TABLE blobs AS SELECT plot, "
        "ST_AsWKB(CAST('POINT(' || lon || ' ' || lat || ')' AS GEOMETRY)) AS wkb FROM plots"
    )
    table = con.sql(
        "SELECT * FROM aef_sample_points('blobs', years := 2023, geometry_column := 'wkb', "
        "bands := ['A00'])"
    ).to_arrow_table()
    assert table.num_rows == 30 and table["A00"].null_count < 30
    con.execute(
        "CREATE OR REPLACE TEMP TABLE polys AS "
        "SELECT 'POLYGON((0 0, 1 0, 1 1, 0 0))'::GEOMETRY AS geom"
    )
    with pytest.raises(Exception, match="geometry is a POLYGON: only points"):
        con.sql(
            "SELECT * FROM aef_sample_points('polys', years := 2023, geometry_column := 'geom')"
        ).fetchall()


@pytest.mark.parametrize(
    "parameters, message",
    [
        (
            "x_column := 'easting'",
            r"no column 'easting' \(x_column/y_column\); its columns: "
            "plot, lon, lat, x, y",
        ),
        ("geometry_column := 'geom'", r"no column 'geom' \(geometry_column\)"),
        ("bands := ['A00', NULL]", "bands holds a NULL"),
        ("bands := []", "selects no band"),
        ("bands := ['B01']", "unknown band name"),
        ("crs := 'EPSG:99999'", "not a coordinate system PROJ knows"),
        ("on_error := 'ignore'", "on_error must be 'raise' or 'null'"),
        ("as_vector := true, bands := ['A00']", "drop bands"),
    ],
)
def test_bad_parameters_say_what_is_wrong(con, parameters, message):
    with pytest.raises(Exception, match=message):
        con.sql(f"SELECT * FROM aef_sample_points('plots', years := 2023, {parameters})").fetchall()


def test_index_footprint_is_geometry_and_no_internal_parameter(con):
    kind = con.sql("SELECT typeof(geom) FROM aef_index() LIMIT 1").fetchall()[0][0]
    assert kind == "GEOMETRY('OGC:CRS84')"
    text = con.sql("SELECT ST_AsText(geom) FROM aef_index() LIMIT 1").fetchall()[0][0]
    assert text.startswith("POLYGON ((")
    parameters = con.sql(
        "SELECT parameters FROM duckdb_functions() WHERE function_name = 'aef_index'"
    ).fetchall()
    assert parameters == [([],)]


def test_files_named_like_modules_in_scope(con, tmp_path, monkeypatch):
    """`import csv`/`import json` above: 'plots.csv' must be read as the file, not as the
    table `csv` of schema `plots` that DuckDB's Python replacement scan finds in scope."""
    monkeypatch.chdir(tmp_path)
    points = plots_table().select(["plot", "lon", "lat"])
    pacsv.write_csv(points, "plots.csv")
    (tmp_path / "plots.json").write_text(json.dumps(points.to_pylist()))
    for name in ("plots.csv", "plots.json", "*.csv"):
        rows = con.sql(
            f"SELECT count(*) FROM aef_sample_points('{name}', years := 2023, bands := ['A00'])"
        ).fetchall()
        assert rows == [(30,)], name


def test_as_vector_gives_one_dequantized_column(con):
    table = con.sql(
        "SELECT plot, year, embedding FROM aef_sample_points('plots', years := [2023, 2024], "
        "as_vector := true)"
    ).to_arrow_table()
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 64)
    bands = con.sql(
        "SELECT * FROM aef_sample_points('plots', years := [2023, 2024])"
    ).to_arrow_table()
    values = band_matrix(bands)
    for row, vector in zip(values, table["embedding"].to_pylist(), strict=True):
        if (row == -999).any():
            assert vector is None
        else:
            expected = np.sign(row) * (np.abs(row) / 127.5) ** 2
            assert np.allclose(vector, expected, atol=1e-6)
    change = con.sql(
        "SELECT plot, array_cosine_similarity(a.embedding, b.embedding) AS cosine "
        "FROM aef_sample_points('plots', years := 2023, as_vector := true) a "
        "JOIN aef_sample_points('plots', years := 2024, as_vector := true) b USING (plot)"
    ).fetchall()
    assert len(change) == 30


# -- DataFrames --------------------------------------------------------------------------


def test_pandas_and_polars_points(gdal_collection):
    pd = pytest.importorskip("pandas")
    pl = pytest.importorskip("polars")
    plots = plots_table()
    expected = aefsql.sample_points(plots, years=2023, catalog=gdal_collection.index)
    for frame in (plots.to_pandas(), pl.from_arrow(plots)):
        got = aefsql.sample_points(frame, years=2023, catalog=gdal_collection.index)
        assert np.array_equal(band_matrix(got), band_matrix(expected)), type(frame)
    assert isinstance(plots.to_pandas(), pd.DataFrame)


def test_geopandas_geometry_and_crs_are_honoured(gdal_collection):
    gpd = pytest.importorskip("geopandas")
    plots = plots_table()
    epsg = COLLECTION_TILES[3][1]
    frame = gpd.GeoDataFrame(
        {"plot": plots["plot"].to_pylist()},
        geometry=gpd.points_from_xy(plots["x"].to_numpy(), plots["y"].to_numpy()),
        crs=f"EPSG:{epsg}",
    )
    got = aefsql.sample_points(frame, years=2023, catalog=gdal_collection.index)
    expected = gdal_values(
        gdal_collection.folder, 2023, 3, plots["x"].to_numpy(), plots["y"].to_numpy()
    )
    assert np.array_equal(band_matrix(got), expected)
    with pytest.raises(AefsqlError, match="reproject"):
        aefsql.sample_points(frame, years=2023, crs=4326, catalog=gdal_collection.index)


def test_options_are_keyword_only():
    with pytest.raises(TypeError):
        aefsql.sample_points(plots_table(), "lon", "lat", 2023)  # type: ignore[misc]


def test_crs_and_geometry_crs_are_aliases(gdal_collection):
    with pytest.raises(AefsqlError, match="not both"):
        aefsql.sample_points(
            plots_table(), years=2023, crs=32633, geometry_crs=4326, catalog=gdal_collection.index
        )


def test_year_list_rules():
    from aefsql.options import year_list

    assert year_list([2024, 2023, 2024]) == (2023, 2024)
    assert year_list(year=np.int32(2023)) == (2023,)
    with pytest.raises(AefsqlError, match="at most 1000"):
        year_list(range(2023, 5000))


def test_band_names_come_from_one_place(con):
    assert con.sql("SELECT aef_band_names()").fetchall()[0][0] == list(BAND_NAMES)


# -- the catalog is read on first use ---------------------------------------------------


@pytest.mark.parametrize("cache", [False, True])
def test_registering_reads_nothing_even_with_a_cache(http_collection, tmp_path, cache):
    options = {"cache_dir": str(tmp_path / "cache")} if cache else {}
    http_collection.log.clear()
    con = aefsql.connect(catalog=http_collection.index, **options)
    try:
        assert http_collection.log.total == 0  # dbt opens many connections: none waits
        assert con.sql("SELECT count(*) FROM aef_index()").fetchall() == [(8,)]
        assert http_collection.log.total > 0
    finally:
        con.close()


@pytest.mark.parametrize("cache", [False, True])
def test_an_unreachable_catalog_says_so_on_first_use(tmp_path, cache):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    options = {"cache_dir": str(tmp_path / "cache")} if cache else {}
    con = aefsql.connect(catalog=f"http://127.0.0.1:{port}/index.parquet", **options)
    try:
        with pytest.raises(
            Exception,
            match=rf"cannot reach http://127.0.0.1:{port}/index.parquet"
            r": .*; pass --catalog",
        ):
            con.sql("SELECT count(*) FROM aef_index()").fetchall()
    finally:
        con.close()


@pytest.mark.parametrize(
    "parameters, message",
    [
        ("bands := ['A00', NULL]", "bands holds a NULL"),
        ("bands := []", "selects no band"),
        ("bands := ['A64']", r"unknown band name\(s\) \['A64'\]"),
        ("bands := ['a00']", r"unknown band name\(s\) \['a00'\]"),
        ("bands := 'A01'", "bands is a list of names"),
        ("as_vector := NULL", "as_vector must be true or false"),
        ("as_vector := 'yes'", "as_vector must be true or false"),
        ("as_vector := true, bands := ['A00']", "drop bands"),
    ],
)
def test_aef_pixels_says_what_is_wrong_as_aef_sample_points_does(con, parameters, message):
    """(A bad `bands` or `as_vector` used to end in DuckDB's "Star expression COLUMNS(…)
    resulted in an empty set of columns", a page of aefsql's macro text.)"""
    area = "[12.0, 44.99, 12.02, 45.0], years := 2023"
    for function in (
        f"aef_pixels({area}, {parameters})",
        f"aef_sample_points('plots', years := 2023, {parameters})",
    ):
        with pytest.raises(duckdb.Error, match=message) as raised:
            con.sql(f"SELECT * FROM {function}").fetchall()
        assert "COLUMNS" not in str(raised.value)


def test_a_null_column_parameter_is_named_as_null(con):
    """(It said "no column None (x_column/y_column)", even for aef_zonal, which has neither.)"""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE polys AS "
        "SELECT 'POLYGON((12 45, 12.01 45, 12.01 45.01, 12 45))'::GEOMETRY AS geom"
    )
    for call, message in [
        ("aef_zonal('polys', years := 2023, geometry_column := NULL)", "geometry_column := NULL"),
        ("aef_sample_points('plots', years := 2023, x_column := NULL)", "x_column := NULL"),
        ("aef_chips('plots', years := 2023, y_column := NULL)", "y_column := NULL"),
    ]:
        with pytest.raises(duckdb.Error, match=f"{message} names no column") as raised:
            con.sql(f"SELECT * FROM {call}").fetchall()
        assert "None" not in str(raised.value)


@pytest.mark.parametrize("level", ["1.5", "'1'", "true", "-1"])
def test_level_is_a_whole_number_in_every_function(con, level):
    """(1.5 was read as 2, '1' and true as 1, by the CAST to INTEGER.)"""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE polys AS "
        "SELECT 'POLYGON((12 45, 12.01 45, 12.01 45.01, 12 45))'::GEOMETRY AS geom"
    )
    area = "[12.0, 44.99, 12.02, 45.0]"
    vector = f"{[0.1] * 64}::FLOAT[64]"
    for call in [
        f"aef_pixels({area}, years := 2023",
        f"aef_area_plan({area}, years := 2023",
        f"aef_similarity({area}, {vector}, years := 2023",
        f"aef_change({area}, years := [2023, 2024]",
        f"aef_grid({area}, cell := 1000, years := 2023",
        "aef_zonal('polys', years := 2023",
        "aef_chips('plots', years := 2023",
    ]:
        with pytest.raises(duckdb.Error, match=r"level := .*: a level is 0 \(full resolution\)"):
            con.sql(f"SELECT * FROM {call}, level := {level})").fetchall()
