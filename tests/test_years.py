"""Years come from the catalog, never from aefsql: the published collection covers 2017–2025,
and a collection holding only its first and last years (GDAL-written, both forms of the
index) is read in full by every function, host and verb."""

import numpy as np
import pyarrow as pa
import pytest
from gdal_fixtures import COLLECTION_TILES, write_collection, write_stac_index
from helpers import band_matrix, gdal_values, tile_points

import aefsql
from aefsql.cli import main

YEARS = (2017, 2025)  # the published collection's first and last
# Tiles whose rasters overlap no other's (0 and 1 overlap across the 12°E seam, where the
# point's own zone wins): each of their points is read from them.
SEPARATE_TILES = (2, 3)


@pytest.fixture(scope="module")
def ends(tmp_path_factory):
    """(folder, narrow index, STAC index) of the collection in 2017 and 2025 only."""
    folder = tmp_path_factory.mktemp("years")
    index = write_collection(folder, years=YEARS)
    stac = write_stac_index(folder / "stac.parquet", folder, years=YEARS)
    return folder, str(index), str(stac)


@pytest.fixture(scope="module", params=["narrow", "stac"])
def con(request, ends):
    catalog = ends[1] if request.param == "narrow" else ends[2]
    with aefsql.connect(catalog=catalog) as con:
        yield con


def points_in_every_tile() -> pa.Table:
    rows = []
    for k in range(len(COLLECTION_TILES)):
        lon, lat, x, y = tile_points(k, 12, seed=40 + k)
        rows += [
            {"id": len(rows) + i, "tile": k, "lon": a, "lat": b, "x": c, "y": d}
            for i, (a, b, c, d) in enumerate(zip(lon, lat, x, y, strict=True))
        ]
    return pa.Table.from_pylist(rows)


def test_the_index_holds_both_years(con):
    years = con.sql("SELECT year, count(*) FROM aef_index() GROUP BY year ORDER BY year")
    assert years.fetchall() == [(2017, 4), (2025, 4)]


def test_sample_points_of_both_years_are_gdals(con, ends):
    points = points_in_every_tile()
    con.register("pts", points.select(["id", "tile", "lon", "lat"]))
    query = "FROM aef_sample_points('pts', years := [2017, 2025]) ORDER BY year, id"
    got = con.sql(query).to_arrow_table()
    for year in YEARS:
        mine = got.filter(pa.compute.equal(got["year"], year))
        for k in SEPARATE_TILES:
            rows = mine.filter(pa.compute.equal(mine["tile"], k))
            at = points.filter(pa.compute.equal(points["tile"], k))
            expected = gdal_values(ends[0], year, k, at["x"].to_numpy(), at["y"].to_numpy())
            np.testing.assert_array_equal(band_matrix(rows), expected)


def test_scalar_functions_take_the_last_year(con):
    lon, lat, _, _ = tile_points(3, 1, seed=1)
    path, embedding = con.execute(
        "SELECT aef_locate(?, ?, 2025), aef_embedding(?, ?, 2025).A00",
        [lon[0], lat[0], lon[0], lat[0]],
    ).fetchall()[0]
    assert path.endswith("2025/18S/tile3-0000000000-0000000000.tiff")
    assert embedding is not None


def box_in_tile_2() -> list[float]:
    lon, lat, _, _ = tile_points(2, 2, seed=9)
    return [float(lon.min()) - 0.004, float(lat.min()) - 0.003, float(lon.min()), float(lat.min())]


def test_areas_zonal_and_change_over_both_years(con):
    area = box_in_tile_2()
    counts = con.sql(
        f"SELECT year, count(*) FROM aef_pixels({area}, years := [2017, 2025], bands := ['A00']) "
        "GROUP BY year ORDER BY year"
    ).fetchall()
    assert [y for y, _ in counts] == list(YEARS) and counts[0][1] == counts[1][1] > 0
    w, s, e, n = area
    con.execute(
        "CREATE OR REPLACE TEMP TABLE fields AS SELECT 1 AS id, "
        f"'POLYGON(({w} {s}, {e} {s}, {e} {n}, {w} {n}, {w} {s}))'::GEOMETRY AS geom"
    )
    zonal = con.sql("SELECT year, pixels FROM aef_zonal('fields', years := [2017, 2025])")
    assert sorted(zonal.fetchall()) == counts
    pairs = con.sql(
        f"SELECT year_from, year_to, count(similarity) FROM aef_change({area}, "
        "years := [2017, 2025]) GROUP BY ALL"
    ).fetchall()
    assert [(a, b) for a, b, _ in pairs] == [YEARS] and pairs[0][2] > 0


def test_python_and_headers_take_both_years(ends):
    _, index, stac = ends
    lon, lat, _, _ = tile_points(0, 5, seed=2)
    for catalog in (index, stac):
        table = aefsql.sample_points(
            pa.table({"lon": lon, "lat": lat}), years=list(YEARS), catalog=catalog
        )
        assert sorted(set(table["year"].to_pylist())) == list(YEARS)
        with aefsql.connect(catalog=catalog) as con:
            headers = con.sql("SELECT path FROM aef_headers(years := [2017, 2025])").fetchall()
            assert sorted({path.split("/")[-3] for (path,) in headers}) == ["2017", "2025"]


def test_the_cli_takes_the_whole_published_range(ends, tmp_path, capsys):
    """`--years 2017-2025` over a catalog of 2017 and 2025: rows of both, the years between
    named as missing."""
    lon, lat, _, _ = tile_points(3, 4, seed=3)
    points = tmp_path / "points.csv"
    points.write_text("lon,lat\n" + "".join(f"{a},{b}\n" for a, b in zip(lon, lat, strict=True)))
    out = tmp_path / "out.parquet"
    code = main(
        ["sample", str(points), "--years", "2017-2025", "--bands", "A00", "--catalog", ends[2]]
        + ["-o", str(out)]
    )
    assert code in (0, None)
    err = capsys.readouterr().err
    assert "2018" in err and "2024" in err
    table = pa.parquet.read_table(out)
    with_values = table.filter(pa.compute.is_valid(table["A00"]))
    assert sorted(set(with_values["year"].to_pylist())) == list(YEARS)
