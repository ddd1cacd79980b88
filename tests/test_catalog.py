"""The catalog: column roles, path resolution, registration errors."""

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import registered_aef_functions

import aefsql
from aefsql.catalog.index import (
    PUBLIC_CATALOG,
    catalog_base,
    columns_from_names,
    resolve_path,
    storage_options_for,
    zone_from_crs,
)
from aefsql.catalog.schema import PUBLIC_COLUMNS
from aefsql.errors import CatalogError

PUBLISHED = [
    "fid",
    "geom",
    "year",
    "path",
    "location",
    "crs",
    "utm_zone",
    "utm_west",
    "utm_south",
    "utm_east",
    "utm_north",
    "wgs84_west",
    "wgs84_south",
    "wgs84_east",
    "wgs84_north",
]


def test_published_schema_maps_every_role_by_name():
    assert columns_from_names(PUBLISHED, "index") == PUBLIC_COLUMNS


def test_missing_required_columns_are_named():
    with pytest.raises(CatalogError, match=r"lacks required column\(s\) year .*path") as error:
        columns_from_names(["fid", "wgs84_west", "wgs84_south", "wgs84_east", "wgs84_north"], "x")
    assert "it has: fid, wgs84_west" in str(error.value)


@pytest.mark.parametrize(
    "index, path, expected",
    [
        ("s3://b/aef/v1/index.parquet", "2023/33N/a.tiff", "s3://b/aef/v1/2023/33N/a.tiff"),
        ("s3://b/aef/index.parquet", "./2023/a.tiff", "s3://b/aef/2023/a.tiff"),
        ("https://h/x/index.parquet", "s3://other/a.tiff", "s3://other/a.tiff"),
        ("/data/aef/index.parquet", "2023/a.tiff", "/data/aef/2023/a.tiff"),
        ("/data/aef/index.parquet", "/abs/a.tiff", "/abs/a.tiff"),
        ("file:///data/aef/index.parquet", "2023/a.tiff", "/data/aef/2023/a.tiff"),
    ],
)
def test_relative_paths_resolve_against_the_index_folder(index, path, expected):
    assert resolve_path(path, catalog_base(index)) == expected


@pytest.mark.parametrize(
    "crs, zone",
    [
        ("EPSG:32633", "33N"),
        ("EPSG:32701", "1S"),
        ("epsg:32660", "60N"),
        ("EPSG:4326", None),
        ("EPSG:32661", None),
        (None, None),
        ("garbage", None),
    ],
)
def test_zone_from_crs(crs, zone):
    assert zone_from_crs(crs) == zone


def test_public_catalog_is_anonymous_unless_told_otherwise():
    assert storage_options_for(PUBLIC_CATALOG, {})["s3"]["anon"] is True
    assert storage_options_for(PUBLIC_CATALOG, {"anon": False}) == {"s3": {"anon": False}}
    assert storage_options_for("s3://mine/index.parquet", {}) == {"s3": {}}


def test_default_catalog_registers_without_network():
    con = aefsql.connect()
    try:
        names = registered_aef_functions(con)
    finally:
        con.close()
    assert {
        "aef_index",
        "aef_sample",
        "aef_locate",
        "aef_embedding",
        "aef_sample_points",
        "aef_dequantize",
        "aef_vector",
        "aef_band_names",
    } <= names


def test_missing_catalog_fails_at_registration(tmp_path):
    with pytest.raises(CatalogError, match="not found"):
        aefsql.connect(catalog=str(tmp_path / "nope.parquet"))


def test_non_parquet_catalog_fails_at_registration(tmp_path):
    bad = tmp_path / "index.parquet"
    bad.write_text("fid,year\n1,2023\n")
    with pytest.raises(CatalogError, match="cannot be read as parquet"):
        aefsql.connect(catalog=str(bad))


def test_catalog_without_required_columns_fails_at_registration(tmp_path):
    index = tmp_path / "index.parquet"
    pq.write_table(pa.table({"fid": [1], "year": [2023]}), index)
    with pytest.raises(CatalogError, match="lacks required column"):
        aefsql.connect(catalog=str(index))


def test_catalog_from_environment(tmp_path, monkeypatch):
    index = tmp_path / "index.parquet"
    pq.write_table(
        pa.table(
            {
                "fid": [7],
                "year": [2023],
                "path": ["2023/a.tiff"],
                "crs": ["EPSG:32733"],
                "wgs84_west": [1.0],
                "wgs84_south": [2.0],
                "wgs84_east": [3.0],
                "wgs84_north": [4.0],
            }
        ),
        index,
    )
    monkeypatch.setenv("AEFSQL_CATALOG", str(index))
    con = aefsql.connect()
    try:
        row = con.execute(
            "SELECT fid, year, path, utm_zone, utm_west, ST_AsText(geom) FROM aef_index()"
        ).fetchone()
    finally:
        con.close()
    # No footprint in the catalog: its lon/lat box stands in.
    box = "POLYGON ((1 2, 3 2, 3 4, 1 4, 1 2))"
    assert row == (7, 2023, f"{tmp_path}/2023/a.tiff", "33S", None, box)


def test_register_twice_and_on_a_cursor(tmp_path):
    con = duckdb.connect()
    try:
        aefsql.register(con)
        aefsql.register(con)
        cursor = con.cursor()
        aefsql.register(cursor)
        assert cursor.execute("SELECT aef_dequantize(-127::TINYINT)").fetchone()[
            0
        ] == pytest.approx(-((127 / 127.5) ** 2))
    finally:
        con.close()


def write_index(target, **overrides):
    columns = {
        "fid": [1, 2],
        "year": [2023, 2023],
        "path": ["a.tiff", "b.tiff"],
        "wgs84_west": [1.0, 2.0],
        "wgs84_south": [1.0, 2.0],
        "wgs84_east": [1.5, 2.5],
        "wgs84_north": [1.5, 2.5],
    }
    columns.update(overrides)
    pq.write_table(pa.table(columns), target)
    return str(target)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"fid": [7, 7]}, r"duplicate fid values \[7\]"),
        ({"path": ["../../etc/passwd", "b.tiff"]}, "escapes the catalog's folder"),
        ({"path": ["a.tiff", "ok/../../b.tiff"]}, "escapes the catalog's folder"),
        ({"path": ["ftp://host/a.tiff", "b.tiff"]}, "unexpected scheme"),
        ({"path": ["", "b.tiff"]}, "empty path"),
        (
            {"year": ["2023", "2024"]},
            r"column 'year' \(year\) has type string, expected an integer",
        ),
        ({"wgs84_west": ["a", "b"]}, "expected a number"),
        (
            {
                "crs": ["EPSG:32633"] * 2,
                "utm_west": [300000.0, 300000.0],
                "utm_south": [4183010.0, 4000000.0],
                "utm_east": [310000.0, 310000.0],
                "utm_north": [4177890.0, 4010000.0],
            },
            r"row 1: utm_west=300000.0, utm_south=4183010.0, .*south north of north",
        ),
    ],
)
def test_bad_catalog_values_fail_at_registration(tmp_path, overrides, message):
    index = write_index(tmp_path / "index.parquet", **overrides)
    with pytest.raises(CatalogError, match=message):
        aefsql.connect(catalog=index)


def test_good_catalog_with_urls_registers(tmp_path):
    index = write_index(
        tmp_path / "index.parquet", path=["s3://bucket/a.tiff", "https://host/b.tiff"]
    )
    aefsql.connect(catalog=index).close()
