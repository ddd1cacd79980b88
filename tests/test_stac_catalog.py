"""The STAC-GeoParquet index (aef_index_stac_geoparquet.parquet) as catalog=: the GDAL-written
collection's items written with stac-geoparquet, as the published file is built, give every
query the same rows as the narrow index.parquet; hostile items are refused as the narrow
index's rows are, in the same words."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from gdal_fixtures import (
    COLLECTION_TILES,
    GAP_LONLAT,
    INDEX_SCHEMA,
    write_collection,
    write_stac_index,
)
from helpers import band_matrix, gdal_values, points_in_every_tile, tile_points

import aefsql
from aefsql.catalog.index import Catalog
from aefsql.catalog.stac import is_stac
from aefsql.errors import CatalogError
from aefsql.storage.store import ByteStore

# proj:code with proj:bbox (projection extension v2), proj:epsg without (v1).
FORMS = [("code", True), ("epsg", False)]
UTM_COLUMNS = ["utm_west", "utm_south", "utm_east", "utm_north"]


@pytest.fixture(scope="module", params=FORMS, ids=["proj_code", "proj_epsg"])
def stac_index(request, gdal_collection, tmp_path_factory):
    proj, utm_bbox = request.param
    target = tmp_path_factory.mktemp("stac") / "aef_index_stac_geoparquet.parquet"
    write_stac_index(target, gdal_collection.folder, proj=proj, utm_bbox=utm_bbox)
    return target, utm_bbox


@pytest.fixture(scope="module")
def both(gdal_collection, stac_index):
    """(narrow connection, STAC connection, whether the STAC items carry proj:bbox)."""
    narrow = aefsql.connect(catalog=gdal_collection.index)
    stac = aefsql.connect(catalog=str(stac_index[0]))
    yield narrow, stac, stac_index[1]
    narrow.close()
    stac.close()


def same(both, query: str) -> list:
    """The query's rows over the narrow and the STAC catalog: equal, row for row."""
    narrow, stac, _ = both
    expected = narrow.sql(query).fetchall()
    got = stac.sql(query).fetchall()
    assert got == expected
    return got


def test_the_fixture_is_stac_geoparquet_as_published(stac_index):
    schema = pq.read_schema(stac_index[0])
    assert is_stac(schema)
    assert b"stac-geoparquet" in schema.metadata
    assert schema.field("assets").type.field("data").type.field("href").type == pa.string()
    assert {"datetime", "start_datetime", "bbox", "geometry"} <= set(schema.names)
    assert ("proj:code" in schema.names) != ("proj:epsg" in schema.names)


def test_aef_index_is_the_narrow_index(both):
    narrow, stac, utm_bbox = both
    columns = [d[0] for d in narrow.sql("FROM aef_index()").description]
    shown = ", ".join(c for c in columns if utm_bbox or c not in UTM_COLUMNS)
    rows = same(both, f"SELECT {shown} FROM aef_index() ORDER BY fid")
    assert len(rows) == 8 and {r[1] for r in rows} == {2023, 2024}
    if not utm_bbox:  # the items state no bounds in their own CRS
        assert stac.sql("SELECT DISTINCT utm_west FROM aef_index()").fetchall() == [(None,)]


@pytest.fixture(scope="module")
def places(both):
    """Points in every tile, in the seam where tiles 0 and 1 overlap, in the gap inside
    tile 2's lon/lat box, outside every tile, and NULL; as a table in both connections."""
    _, lon, lat = points_in_every_tile()
    seam_lon, seam_lat, _, _ = tile_points(1, 20, seed=7)
    lon = np.concatenate([lon, seam_lon, [GAP_LONLAT[0], 0.0, np.nan]])
    lat = np.concatenate([lat, seam_lat, [GAP_LONLAT[1], 0.0, 45.0]])
    lon = pa.array(lon, from_pandas=True)  # NaN: NULL (NaN is not equal to itself)
    table = pa.table({"id": np.arange(len(lon)), "lon": lon, "lat": lat})
    for con in both[:2]:
        con.register("places_arrow", table)
        con.execute("CREATE OR REPLACE TEMP TABLE places AS FROM places_arrow")
    return table


def test_sample_points(both, places):
    rows = same(both, "FROM aef_sample_points('places', years := [2023, 2024]) ORDER BY year, id")
    assert len(rows) == 2 * places.num_rows
    assert sum(r[3] is not None for r in rows) > 0.9 * len(rows) - 8  # A00 (NULL outside)


def test_sample_points_as_vectors_and_locate(both, places):
    same(
        both,
        "FROM aef_sample_points('places', years := 2024, as_vector := true) ORDER BY id",
    )
    same(both, "SELECT id, aef_locate(lon, lat, 2023) FROM places ORDER BY id")


def test_sample_points_are_gdals_values(stac_index, gdal_collection):
    """Not only equal to the narrow index: the pixels GDAL reads (tile 2, 2024)."""
    lon, lat, x, y = tile_points(2, 25, seed=3)
    got = aefsql.sample_points(
        pa.table({"lon": lon, "lat": lat}), years=2024, catalog=str(stac_index[0])
    )
    np.testing.assert_array_equal(
        band_matrix(got), gdal_values(gdal_collection.folder, 2024, 2, x, y)
    )


def area_over_tiles_1_and_2():
    """A lon/lat box over the corner where tiles 1 and 2 touch, and into tile 0's seam."""
    _, epsg, x0, y0 = COLLECTION_TILES[2]
    lon, lat, _, _ = tile_points(2, 1, seed=0)
    return [float(lon[0]) - 0.02, float(lat[0]) - 0.01, float(lon[0]) + 0.005, float(lat[0])]


def test_pixels(both):
    area = area_over_tiles_1_and_2()
    rows = same(
        both,
        f"SELECT year, path, row, col, lon, lat, A00, A31, A63 FROM aef_pixels({area}, "
        "years := [2023, 2024]) ORDER BY ALL",
    )
    assert len({r[1] for r in rows}) >= 2  # more than one file


def test_zonal_and_chips(both, places):
    narrow, stac, _ = both
    w, s, e, n = area_over_tiles_1_and_2()
    for con in (narrow, stac):
        con.execute(
            "CREATE OR REPLACE TEMP TABLE parcels AS SELECT * FROM (VALUES "
            f"(1, 'POLYGON(({w} {s}, {e} {s}, {e} {n}, {w} {n}, {w} {s}))'::GEOMETRY), "
            "(2, 'POLYGON((0 0, 0.1 0, 0.1 0.1, 0 0.1, 0 0))'::GEOMETRY)) t(id, geom)"
        )
    rows = same(both, "FROM aef_zonal('parcels', years := [2023, 2024]) ORDER BY id, year")
    assert rows[0][3] > 0  # pixels
    same(
        both,
        "SELECT id, year, chip FROM aef_chips('places', size := 4, years := 2023, "
        "bands := ['A00', 'A07']) ORDER BY id",
    )


def test_cli_takes_it(stac_index, gdal_collection, tmp_path, capsys):
    from aefsql.cli import main

    query = "SELECT year, count(*) FROM aef_index() GROUP BY year ORDER BY year"
    outputs = []
    for catalog in (gdal_collection.index, str(stac_index[0])):
        assert main(["--catalog", catalog, "-c", query]) in (0, None)
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] and "2023" in outputs[0]


# -- hostile items: refused as the narrow index's rows are ----------------------------------


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(folder, narrow rows, STAC table) of a one-year collection: hostile versions of
    both are written per test."""
    folder = tmp_path_factory.mktemp("hostile")
    index = write_collection(folder, years=(2023,))
    stac = write_stac_index(folder / "stac.parquet", folder, years=(2023,))
    return folder, pq.read_table(index).to_pylist(), pq.read_table(stac)


def refusals(pair, tmp_path, narrow_change, stac_change) -> tuple[str, str]:
    """The CatalogError messages of the narrow and STAC catalogs changed so, the catalog's
    own name taken out."""
    folder, rows, stac = pair
    rows = [dict(r) for r in rows]
    narrow_change(rows)
    narrow = write_narrow(tmp_path / "index.parquet", rows)
    stac_path = tmp_path / "stac.parquet"
    pq.write_table(stac_change(stac), stac_path)
    messages = []
    for catalog in (narrow, stac_path):
        with pytest.raises(CatalogError) as refused:
            Catalog(str(catalog), ByteStore()).index_file()
        messages.append(str(refused.value).replace(str(catalog), "<catalog>"))
    return messages[0], messages[1]


def write_narrow(path, rows: list[dict]):
    pq.write_table(pa.Table.from_pylist(rows, schema=INDEX_SCHEMA), path)
    return path


def replace(table: pa.Table, name: str, values: list) -> pa.Table:
    column = pa.array(values, table.schema.field(name).type)
    return table.set_column(table.schema.get_field_index(name), name, column)


def hrefs(table: pa.Table, values: list) -> pa.Table:
    assets = [
        {"data": {**(a["data"] or {}), "href": v}}
        for a, v in zip(table["assets"].to_pylist(), values, strict=True)
    ]
    return replace(table, "assets", assets)


def set_row(values: list, row: int, value) -> list:
    return [value if i == row else v for i, v in enumerate(values)]


def test_a_missing_href_is_an_empty_path(pair, tmp_path):
    hrefs_of = [a["data"]["href"] for a in pair[2]["assets"].to_pylist()]
    narrow, stac = refusals(
        pair,
        tmp_path,
        lambda rows: rows[1].update(path=None),
        lambda t: hrefs(t, set_row(hrefs_of, 1, None)),
    )
    assert narrow == stac == "catalog <catalog>, row 2: empty path"


def test_a_path_leaving_the_folder_is_refused_alike(pair, tmp_path):
    hrefs_of = [a["data"]["href"] for a in pair[2]["assets"].to_pylist()]
    narrow, stac = refusals(
        pair,
        tmp_path,
        lambda rows: rows[2].update(path="../x.tiff"),
        lambda t: hrefs(t, set_row(hrefs_of, 2, "../x.tiff")),
    )
    assert narrow == stac and "row 3: path '../x.tiff' escapes" in stac


def test_no_year_is_a_null_year(pair, tmp_path):
    def no_year(t):
        for name in ("datetime", "start_datetime"):
            t = replace(t, name, set_row(t[name].to_pylist(), 2, None))
        return t

    narrow, stac = refusals(pair, tmp_path, lambda rows: rows[2].update(year=None), no_year)
    assert narrow == stac and "row 3: year is NULL" in stac


def test_a_null_bbox_is_a_null_bound(pair, tmp_path):
    def no_bounds(rows):
        rows[0].update(wgs84_west=None, wgs84_south=None, wgs84_east=None, wgs84_north=None)

    narrow, stac = refusals(
        pair,
        tmp_path,
        no_bounds,
        lambda t: replace(t, "bbox", set_row(t["bbox"].to_pylist(), 0, None)),
    )
    assert narrow == stac and "row 1: bounds west=NULL" in stac


def test_a_file_named_twice_is_refused_alike(pair, tmp_path):
    hrefs_of = [a["data"]["href"] for a in pair[2]["assets"].to_pylist()]
    narrow, stac = refusals(
        pair,
        tmp_path,
        lambda rows: rows[3].update(path=rows[2]["path"]),
        lambda t: hrefs(t, set_row(hrefs_of, 3, hrefs_of[2])),
    )
    assert "rows 3 and 4 name the same file for 2023" in narrow
    assert "rows 3 and 4 name the same file for 2023" in stac


def test_a_year_is_the_utc_year_and_start_datetime_stands_in(pair, tmp_path):
    """datetime 2023-12-31T23:30-02:00 is 2024 in UTC; an item with no datetime takes its
    start_datetime's year."""
    folder, _, stac = pair
    text = [
        "2023-12-31T23:30:00-02:00",
        "2023-06-01T00:00:00Z",
        None,
        "2023-01-01T00:00:00+00:00",
    ]
    stac = replace(stac, "datetime", [None] * stac.num_rows)
    stac = stac.set_column(
        stac.schema.get_field_index("datetime"), "datetime", pa.array(text, pa.string())
    )
    starts = [v.replace(year=2019) for v in stac["start_datetime"].to_pylist()]
    stac = replace(stac, "start_datetime", starts)
    pq.write_table(stac, tmp_path / "stac.parquet")
    tiles = Catalog(str(tmp_path / "stac.parquet"), ByteStore()).tiles()
    assert tiles.year.tolist() == [2024, 2023, 2019, 2023]


def test_an_unreadable_datetime_is_refused_naming_it(pair, tmp_path):
    stac = pair[2]
    stac = stac.set_column(
        stac.schema.get_field_index("datetime"),
        "datetime",
        pa.array(["2023", "soon", None, None], pa.string()),
    )
    pq.write_table(stac, tmp_path / "stac.parquet")
    with pytest.raises(CatalogError, match=r"`datetime`: .*'soon'"):
        Catalog(str(tmp_path / "stac.parquet"), ByteStore()).index_file()


def test_an_unknown_crs_reads_as_in_the_narrow_index(pair, tmp_path):
    """A CRS that is no UTM zone: no zone, no footprint check; the file's own header says
    where its pixels are, in both forms alike."""
    folder, rows, stac = pair
    # The narrow index states the zone beside the CRS; its zone is what the CRS says: none.
    unknown = {"crs": "EPSG:32799", "utm_zone": None}
    rows = [dict(r, **unknown) if i == 1 else dict(r) for i, r in enumerate(rows)]
    # Beside the files: the narrow index's paths are relative.
    narrow = write_narrow(folder / f"{tmp_path.name}.parquet", rows)
    codes = set_row(stac["proj:code"].to_pylist(), 1, "EPSG:32799")
    pq.write_table(replace(stac, "proj:code", codes), tmp_path / "stac.parquet")
    lon, lat, _, _ = tile_points(1, 30, seed=5)
    points = pa.table({"lon": lon, "lat": lat})
    results = [
        aefsql.sample_points(points, years=2023, catalog=str(c))
        for c in (narrow, tmp_path / "stac.parquet")
    ]
    assert results[0].equals(results[1])
    assert results[0]["A00"].null_count < 30


def only_a_vrt_asset(t: pa.Table) -> pa.Table:
    return t.drop_columns(["assets"]).append_column(
        "assets", pa.array([{"vrt": {"href": "a.vrt"}}] * t.num_rows)
    )


def numeric_proj_code(t: pa.Table) -> pa.Table:
    return t.set_column(
        t.schema.get_field_index("proj:code"), "proj:code", pa.array([1.5] * t.num_rows)
    )


@pytest.mark.parametrize(
    "change, refusal",
    [
        (lambda t: t.drop_columns(["bbox"]), "it lacks `bbox`"),
        (lambda t: t.drop_columns(["datetime", "start_datetime"]), "lacks `datetime` and"),
        (only_a_vrt_asset, r"no `assets.data.href` .*their assets: vrt"),
        (numeric_proj_code, r"`proj:code` has type double"),
    ],
    ids=["no_bbox", "no_datetime", "no_data_asset", "numeric_proj_code"],
)
def test_a_stac_catalog_without_what_it_needs_is_refused(pair, tmp_path, change, refusal):
    pq.write_table(change(pair[2]), tmp_path / "stac.parquet")
    with pytest.raises(CatalogError, match="a STAC-GeoParquet catalog .*" + refusal):
        aefsql.connect(catalog=str(tmp_path / "stac.parquet"))


def test_a_list_bbox_and_a_wrong_one(pair, tmp_path):
    """bbox as a list (other writers), 4 or 6 numbers; another length is refused by row."""
    stac = pair[2]
    boxes = [[b["xmin"], b["ymin"], b["xmax"], b["ymax"]] for b in stac["bbox"].to_pylist()]
    boxes[1] = [boxes[1][0], boxes[1][1], 0.0, boxes[1][2], boxes[1][3], 10.0]
    listed = stac.set_column(
        stac.schema.get_field_index("bbox"), "bbox", pa.array(boxes, pa.list_(pa.float64()))
    )
    pq.write_table(listed, tmp_path / "listed.parquet")
    pq.write_table(stac, tmp_path / "struct.parquet")
    tables = [
        Catalog(str(tmp_path / name), ByteStore()).tiles()
        for name in ("struct.parquet", "listed.parquet")
    ]
    for side in ("west", "south", "east", "north"):
        np.testing.assert_array_equal(getattr(tables[0], side), getattr(tables[1], side))
    boxes[2] = boxes[2][:3]
    wrong = stac.set_column(
        stac.schema.get_field_index("bbox"), "bbox", pa.array(boxes, pa.list_(pa.float64()))
    )
    pq.write_table(wrong, tmp_path / "wrong.parquet")
    with pytest.raises(CatalogError, match=r"row 3: `bbox` has 3 numbers, expected 4"):
        aefsql.connect(catalog=str(tmp_path / "wrong.parquet"))


def test_a_long_href_repeated_by_its_dictionary_is_bounded(pair, tmp_path, monkeypatch):
    """One 10 KB href in 300 items: stored once (the column's dictionary), 3 MB decoded,
    measured before it is expanded, as a narrow index's paths are (test_hostile_catalogs)."""
    stac = pair[2]
    many = stac.take(np.zeros(300, dtype=np.int64))
    many = hrefs(many, ["a" * 10_000 + ".tiff"] * 300)
    pq.write_table(many, tmp_path / "stac.parquet")
    monkeypatch.setenv("AEFSQL_MAX_CATALOG_BYTES", "1000000")
    with pytest.raises(CatalogError, match=r"decodes to 3,[\d,]+ bytes, over the 1,000,000"):
        aefsql.connect(catalog=str(tmp_path / "stac.parquet"))
