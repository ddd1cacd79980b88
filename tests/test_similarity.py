"""aef_similarity and aefsql.similarity against GDAL: each pixel's similarity equals numpy's
cosine between the query vector and the de-quantized values of rasterio's window read
(NULL where any band is nodata), on aef_pixels' rows (the same locations, each once), in
both orientations, across the 12°E seam, at level 1 and few-shot with negatives."""

import numpy as np
import pyarrow as pa
import pytest
import rasterio
from gdal_fixtures import (
    COLLECTION_TILES,
    TILE_HEIGHT,
    TILE_WIDTH,
    Layout,
    index_row,
    write_index,
    write_layout,
)
from helpers import gdal_pixels, star

import aefsql
from aefsql.aef import BAND_COUNT, NODATA, PIXEL_METRES, dequantize
from aefsql.errors import AefsqlError
from aefsql.geometry.geo import lonlat, polygon_wkb
from aefsql.kernels import readahead
from aefsql.kernels.pixels import Pixels
from aefsql.kernels.similarity import SIMILARITY_PIECE, pixel_similarity, query_vector

COLUMNS = ["year", "location", "crs", "x", "y", "lon", "lat", "similarity"]
NORTH_UP = Layout(south_up=False, width=301, height=259, block=128, west=300000.0)
SEAM_BOX = "[11.99, 45.0, 12.01, 45.01]"


@pytest.fixture(scope="module")
def north_con(tmp_path_factory):
    """A one-tile collection (2023) of a north-up, odd-sized layout."""
    folder = tmp_path_factory.mktemp("north_up_similarity")
    path = "2023/33N/northup-0000000000-0000000000.tiff"
    write_layout(folder, NORTH_UP, seed=9, name=path)
    con = aefsql.connect(
        catalog=str(write_index(folder / "index.parquet", [index_row(1, 2023, path, NORTH_UP)]))
    )
    yield con
    con.close()


def embedding(seed: int) -> np.ndarray:
    """A de-quantized embedding, as aef_vector gives them (float32)."""
    values = np.random.default_rng(seed).integers(-127, 128, BAND_COUNT).astype(np.int8)
    return dequantize(values).astype(np.float32)


def numpy_query(positives, negatives=None) -> np.ndarray:
    """The documented rule: 2·mean(positives) − mean(negatives), or mean(positives)."""
    query = np.mean(np.atleast_2d(np.asarray(positives, np.float64)), axis=0)
    if negatives is not None:
        query = 2 * query - np.mean(np.atleast_2d(np.asarray(negatives, np.float64)), axis=0)
    return query


def similarity(con, area: str, params: list, options: str) -> pa.Table:
    """aef_similarity's rows beside aef_pixels' path, row and col (joined on year and
    location, which aef_pixels gives once each): where to look in the files."""
    return con.sql(
        f"""
        WITH s AS (FROM aef_similarity({area}, ?::FLOAT[64][]{options})),
             p AS (SELECT year, location, path, row, col
                   FROM aef_pixels({area}{options.split(", negatives")[0]}))
        SELECT s.*, p.path, p.row, p.col,
               (SELECT count(*) FROM p) AS pixels, (SELECT count(*) FROM s) AS rows
        FROM s JOIN p USING (year, location)
        ORDER BY s.year, s.location
        """,
        params=params,
    ).to_arrow_table()


def check_against_gdal(table: pa.Table, query: np.ndarray, level: int = 0) -> int:
    """Every aef_pixels pixel once; each similarity is numpy's cosine over rasterio's window
    (float64), NULL where any band is nodata. Returns how many were NULL."""
    assert table.num_rows == table["pixels"][0].as_py() == table["rows"][0].as_py() > 0
    assert table.select(COLUMNS).schema == aef_similarity_schema()
    got = table["similarity"].to_numpy(zero_copy_only=False).astype(np.float64)
    null = table["similarity"].is_null().to_numpy(zero_copy_only=False)
    for path, mine, data in gdal_pixels(table, level):
        expected_null = (data == NODATA).any(axis=0)
        assert np.array_equal(null[mine], expected_null), path
        vectors = dequantize(data.T)[~expected_null]
        expected = vectors @ query / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(query))
        assert np.allclose(got[mine][~expected_null], expected, rtol=1e-5, atol=2e-6), path
    return int(null.sum())


def aef_similarity_schema() -> pa.Schema:
    return pa.schema(
        [
            ("year", pa.int32()),
            ("location", pa.int64()),
            ("crs", pa.string()),
            *((name, pa.float64()) for name in ("x", "y", "lon", "lat")),
            ("similarity", pa.float32()),
        ]
    )


def test_a_whole_south_up_tile_with_its_nodata(con):
    """Tile 3 (18S, south-up, alone in its zone), both years: the nodata rectangle and the
    single-band nodata values give NULL similarities, their rows kept."""
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    box = [x0 + 1, y0 + 1, x0 + TILE_WIDTH * PIXEL_METRES - 1, y0 + TILE_HEIGHT * PIXEL_METRES - 1]
    reference = embedding(1)
    table = similarity(
        con, str(box), [[reference.tolist()]], f", years := [2023, 2024], crs := {epsg}"
    )
    assert table.num_rows == 2 * TILE_WIDTH * TILE_HEIGHT
    nulls = check_against_gdal(table, numpy_query(reference))
    assert 0 < nulls < table.num_rows // 10


@pytest.mark.parametrize("level", [0, 1])
def test_a_star_in_a_north_up_tile(north_con, level):
    west, south, east, north = NORTH_UP.bounds
    ring = star((west + east) / 2, (south + north) / 2, 1200, n=11, seed=3)
    params = [[embedding(2).tolist()], polygon_wkb(ring[:, 0], ring[:, 1])]
    table = north_con.sql(
        f"""
        WITH s AS (FROM aef_similarity($2::BLOB, $1::FLOAT[64][], years := 2023,
                                       crs := {NORTH_UP.epsg}, level := {level})),
             p AS (FROM aef_pixels($2::BLOB, years := 2023, crs := {NORTH_UP.epsg},
                                   level := {level}))
        SELECT s.*, p.path, p.row, p.col,
               (SELECT count(*) FROM p) AS pixels, (SELECT count(*) FROM s) AS rows
        FROM s JOIN p USING (year, location)
        """,
        params=params,
    ).to_arrow_table()
    assert table.num_rows > 300 // 4**level
    check_against_gdal(table, numpy_query(embedding(2)), level)


def test_a_star_at_level_one_south_up(con):
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    ring = star(x0 + 1500, y0 + 1300, 1100, seed=1)
    wkb = polygon_wkb(ring[:, 0], ring[:, 1])
    table = con.sql(
        f"""
        WITH s AS (FROM aef_similarity($2::BLOB, $1::FLOAT[64][], years := 2023,
                                       crs := {epsg}, level := 1)),
             p AS (FROM aef_pixels($2::BLOB, years := 2023, crs := {epsg}, level := 1))
        SELECT s.*, p.path, p.row, p.col,
               (SELECT count(*) FROM p) AS pixels, (SELECT count(*) FROM s) AS rows
        FROM s JOIN p USING (year, location)
        """,
        params=[[embedding(3).tolist()], wkb],
    ).to_arrow_table()
    assert table.num_rows > 100
    check_against_gdal(table, numpy_query(embedding(3)), level=1)


def test_across_the_12e_seam(con):
    """Tiles 0 (32N) and 1 (33N) overlap across 12°E: each location once, from the tile that
    owns it (aef_pixels' rule), its similarity from that tile's file."""
    table = similarity(con, SEAM_BOX, [[embedding(4).tolist()]], ", years := 2023")
    assert len(set(table["path"].to_pylist())) == 2
    assert set(table["crs"].to_pylist()) == {"EPSG:32632", "EPSG:32633"}
    assert len(set(table["location"].to_pylist())) == table.num_rows
    check_against_gdal(table, numpy_query(embedding(4)))


def test_few_shot_with_negatives(con):
    """Three references and two negatives: the query is 2·mean(references) −
    mean(negatives), as docs/functions.md says."""
    positives = [embedding(k) for k in (5, 6, 7)]
    negatives = [embedding(k) for k in (8, 9)]
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    box = [x0 + 100, y0 + 100, x0 + 1500, y0 + 1200]
    table = similarity(
        con,
        str(box),
        [[p.tolist() for p in positives], [n.tolist() for n in negatives]],
        f", years := 2023, crs := {epsg}, negatives := ?::FLOAT[64][]",
    )
    check_against_gdal(table, numpy_query(positives, negatives))
    # One reference may be given bare, as a FLOAT[64] or any list of 64 numbers.
    one = con.sql(
        f"SELECT similarity FROM aef_similarity({box}, ?::DOUBLE[], years := 2023, "
        f"crs := {epsg}) ORDER BY location",
        params=[positives[0].tolist()],
    ).to_arrow_table()
    listed = con.sql(
        f"SELECT similarity FROM aef_similarity({box}, [?::FLOAT[64]], years := 2023, "
        f"crs := {epsg}) ORDER BY location",
        params=[positives[0].tolist()],
    ).to_arrow_table()
    assert one.equals(listed)


def test_lon_lat_are_projected_only_when_read(con, monkeypatch):
    """A map of x, y and similarity never runs PROJ: DuckDB leaves lon/lat's UDF out."""
    projected = []

    def counted(x, y, crs):
        projected.append(len(x))
        return lonlat(x, y, crs)

    monkeypatch.setattr(readahead, "lonlat", counted)
    reference = embedding(1).tolist()
    query = f"FROM aef_similarity({SEAM_BOX}, ?::FLOAT[64], years := 2023)"
    lean = con.sql(f"SELECT x, y, similarity {query}", params=[reference]).fetchall()
    assert len(lean) > 1000 and projected == []
    table = con.sql(f"SELECT * {query}", params=[reference]).to_arrow_table()
    pixels = con.sql(
        f"SELECT year, location, lon, lat FROM aef_pixels({SEAM_BOX}, years := 2023)"
    ).to_arrow_table()
    key = [("year", "ascending"), ("location", "ascending")]
    assert table.select(["year", "location", "lon", "lat"]).sort_by(key).equals(pixels.sort_by(key))


def test_an_area_smaller_than_a_pixel_gets_its_centroid_pixel(con):
    """As aef_pixels: the pixel under the centroid stands in for an area holding no centre."""
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    box = f"[{x0 + 1001}, {y0 + 1001}, {x0 + 1002}, {y0 + 1002}]"
    reference = embedding(1).tolist()
    got = con.sql(
        f"SELECT location FROM aef_similarity({box}, ?::FLOAT[64], years := 2023, crs := {epsg})",
        params=[reference],
    ).fetchall()
    expected = con.sql(
        f"SELECT location FROM aef_pixels({box}, years := 2023, crs := {epsg})"
    ).fetchall()
    assert got == expected and len(got) == 1


ZEROS = "[0.0 for i in range(64)]"


@pytest.mark.parametrize(
    "reference, negatives, message",
    [
        ("[1.0, 2.0, 3.0]", "NULL", r"reference := … has 3 numbers: an embedding has 64"),
        ("[[1.0, 2.0]]", "NULL", r"reference := … \(item 1\) has 2 numbers"),
        ("{'A00': 1, 'A01': 2}", "NULL", r"reference := … is a struct .*aef_vector\(…\)"),
        ("NULL::FLOAT[64]", "NULL", r"reference := … is NULL"),
        ("[]::FLOAT[64][]", "NULL", r"reference := … is an empty list"),
        (
            "list_transform(range(64), lambda i: CASE WHEN i = 5 THEN NULL ELSE 1.0 END)",
            "NULL",
            r"reference := … holds a NULL",
        ),
        (
            "list_transform(range(64), lambda i: CASE WHEN i = 5 THEN 'nan'::DOUBLE ELSE 1.0 END)",
            "NULL",
            r"reference := … holds NaN",
        ),
        (ZEROS, "NULL", r"reference := …: the reference is all zeros"),
        (
            "list_transform(range(64), lambda i: 1.0)",
            "[list_transform(range(64), lambda i: 2.0)]",
            r"2·mean\(reference\) − mean\(negatives\) is all zeros",
        ),
        ("list_transform(range(64), lambda i: 1.0)", "[[1.0]]", r"negatives := … \(item 1\)"),
        ("list_transform(range(64), lambda i: 1.0)", "[]::DOUBLE[][]", r"negatives := … is an"),
    ],
)
def test_bad_references_are_refused_naming_the_parameter(con, reference, negatives, message):
    reference = reference.replace(ZEROS, "list_transform(range(64), lambda i: 0.0)")
    with pytest.raises(Exception, match=message):
        con.sql(
            f"SELECT count(*) FROM aef_similarity({SEAM_BOX}, {reference}, years := 2023, "
            f"negatives := {negatives})"
        ).fetchall()


def test_options_are_checked_as_aef_pixels_checks_them(con):
    reference = embedding(1).tolist()
    for options, message in [
        ("", r"pass years := 2024 or years := \[2023, 2024\]"),
        (", years := 2023, level := -1", "a level is 0"),
        (", years := 2023, max_bytes := 1000", "max_bytes"),
        (", years := 2023, crs := 'EPSG:xyz'", "crs 'EPSG:xyz'"),
    ]:
        with pytest.raises(Exception, match=message):
            con.sql(
                f"SELECT count(*) FROM aef_similarity({SEAM_BOX}, ?::FLOAT[64]{options})",
                params=[reference],
            ).fetchall()


def test_python_equals_sql(con, gdal_collection):
    """aefsql.similarity: the same rows, columns and values as the SQL function, lon/lat
    included; a bad reference is worded for Python."""
    positives = [embedding(1), embedding(2)]
    negatives = [embedding(3)]
    sql = con.sql(
        f"FROM aef_similarity({SEAM_BOX}, ?::FLOAT[64][], years := [2023, 2024], "
        "negatives := ?::FLOAT[64][])",
        params=[[p.tolist() for p in positives], [n.tolist() for n in negatives]],
    ).to_arrow_table()
    python = aefsql.similarity(
        [11.99, 45.0, 12.01, 45.01],
        np.stack(positives),
        years=[2023, 2024],
        negatives=negatives,
        catalog=gdal_collection.index,
    )
    key = [("year", "ascending"), ("location", "ascending")]
    assert python.schema == aef_similarity_schema()
    assert python.num_rows == sql.num_rows > 0
    assert python.sort_by(key).equals(sql.sort_by(key))
    with pytest.raises(AefsqlError, match=r"reference=… has 2 numbers"):
        aefsql.similarity(
            [11.99, 45.0, 12.01, 45.01], [1.0, 2.0], years=2023, catalog=gdal_collection.index
        )


@pytest.mark.parametrize("nodata", [[-128, -128], [-128, 5], [7, 7]])
def test_the_kernel_honours_each_files_nodata(nodata):
    """pixel_similarity over pixels of two files: NaN where any band equals the pixel's own
    file's nodata (AEF's -128 takes a shortcut; another value, or two, the general path)."""
    rng = np.random.default_rng(0)
    n = 3 * SIMILARITY_PIECE + 17
    values = rng.integers(-127, 128, (BAND_COUNT, n)).astype(np.int8)
    file = (np.arange(n) >= n // 2).astype(np.int64)
    own = np.array(nodata, np.int16)[file]
    hit = rng.choice(n, 200, replace=False)
    values[rng.integers(0, BAND_COUNT, hit.size), hit] = own[hit]
    values[:, 5] = 0  # no direction: NaN too
    empty = np.zeros(n)
    pixels = Pixels(
        file, file, file, empty, empty, None, None, file, values, own,
        np.full(n, BAND_COUNT, np.int16), list(range(BAND_COUNT)),
    )  # fmt: skip
    query = query_vector(embedding(1))
    got = pixel_similarity(pixels, query)
    deq = dequantize(values.T)
    null = (values == own).any(axis=0) | (values == 0).all(axis=0)
    valid = deq[~null]
    expected = valid @ query / np.linalg.norm(valid, axis=1)
    assert np.array_equal(np.isnan(got), null)
    assert np.allclose(got[~null], expected, rtol=1e-5, atol=2e-6)


def test_areas_as_geometry_wkt_and_box_agree(con):
    """The area conventions are aef_pixels' (one shared plan): a GEOMETRY, WKT text and a
    box of the same rectangle give the same rows."""
    west, south, east, north = 11.99, 45.0, 12.01, 45.01
    wkt = (
        f"POLYGON(({west} {south}, {east} {south}, {east} {north}, {west} {north}, {west} {south}))"
    )
    reference = embedding(1).tolist()
    tables = [
        con.sql(
            f"SELECT * FROM aef_similarity({area}, ?::FLOAT[64], years := 2023) "
            "ORDER BY year, location",
            params=[reference],
        ).to_arrow_table()
        for area in (SEAM_BOX, f"'{wkt}'", f"'{wkt}'::GEOMETRY")
    ]
    assert tables[0].num_rows > 1000
    assert tables[0].equals(tables[1]) and tables[0].equals(tables[2])


def test_python_says_why_nothing_came_back(gdal_collection):
    """A year the catalog lacks, an area outside coverage or swapped lon/lat: no pixel, and a
    warning that says why (as read_area's), never silence."""
    reference, index = embedding(1).tolist(), gdal_collection.index
    cases = [
        ({"years": 1999}, [12.0, 44.995, 12.01, 45.005], "no tile of year"),
        ({"years": 2024}, [-60.0, -10.0, -59.99, -9.99], "outside coverage"),
        ({"years": 2024}, [44.995, 12.0, 45.005, 12.01], "swapped"),
    ]
    for options, box, why in cases:
        with pytest.warns(UserWarning, match=why) as caught:
            table = aefsql.similarity(box, reference, catalog=index, **options)
        assert table.num_rows == 0
        assert "no pixel of it comes back" in str(caught[0].message)


@pytest.mark.parametrize(
    "layout, nodata",
    [
        (Layout(), None),  # AEF's: planar, south-up, -128 within blocks and in single bands
        (Layout(south_up=False, interleave="pixel", block=128, width=301, height=259), 5),
        (Layout(bands=63), None),  # a band missing: no vector, every pixel NULL
    ],
    ids=["aef-south-up", "chunky-north-up-nodata-5", "63-bands"],
)
@pytest.mark.parametrize("shape", ["whole", "star"])
def test_cosines_computed_as_blocks_decode_equal_numpy(tmp_path, layout, nodata, shape):
    """`Cosines` (each block's pixels turned into cosines in the decode threads, no (64,
    pixels) values) against numpy's cosine over rasterio's read of the GDAL-written file:
    NaN exactly where a band is the file's nodata (its own tag: 5, where -128 is data),
    every pixel where the file lacks a band; over a whole tile (windows of blocks) and a
    star (runs the blocks do not fill)."""
    from aefsql.geometry.areas import area_from
    from aefsql.kernels.pixels import area_chunks, chunk_pixels
    from aefsql.kernels.similarity import Cosines
    from aefsql.session import open_session

    path = write_layout(tmp_path, layout, seed=4, name="2024/33N/cosines.tiff")
    if nodata is not None:
        with rasterio.open(path, "r+") as ds:
            ds.nodata = nodata
    index = write_index(
        tmp_path / "index.parquet", [index_row(1, 2024, "2024/33N/cosines.tiff", layout)]
    )
    west, south, east, north = layout.bounds
    if shape == "whole":
        area = area_from([west + 1, south + 1, east - 1, north - 1], layout.epsg)
    else:
        ring = star((west + east) / 2, (south + north) / 2, 0.45 * (north - south), seed=3)
        area = area_from(polygon_wkb(ring[:, 0], ring[:, 1]), layout.epsg)
    session = open_session(str(index))
    chunks = area_chunks(session, area, [2024])
    query = query_vector(embedding(2))
    got = chunk_pixels(
        session, chunks, [], coordinates=False, derive=Cosines(tuple(query.astype(np.float32)))
    )
    with rasterio.open(path) as ds:
        values = ds.read()[:, got.row, got.col]  # int8 (bands, pixels)
    assert got.derived.shape == (got.row.size,) and got.row.size > 1000
    if layout.bands < BAND_COUNT:
        assert np.isnan(got.derived).all()
        return
    own = NODATA if nodata is None else nodata
    null = (values == own).any(axis=0)
    assert null.any() and not null.all()
    assert np.array_equal(np.isnan(got.derived), null)
    compared = ~null & (values != NODATA).all(axis=0)  # (-128 as data: no de-quantization)
    deq = dequantize(values[:, compared].T)
    expected = deq @ query / np.linalg.norm(deq, axis=1)
    assert np.allclose(got.derived[compared], expected, rtol=1e-5, atol=2e-6)


def test_a_stand_in_unit_after_one_with_chunks_plans_nothing(con, monkeypatch):
    """The stand-in unit comes after the area's tile units: when one of them had chunks, it
    has none, and is not planned tile by tile again (`SessionUdfs._owned`); an area holding
    no pixel centre still gets its centroid pixel, the same area twice the same rows."""
    from aefsql.duck import udfs

    planned = []
    unit_chunks = udfs.unit_chunks

    def counted(session, area, unit, level=0):
        planned.append(unit.stand_in)
        return unit_chunks(session, area, unit, level)

    monkeypatch.setattr(udfs, "unit_chunks", counted)
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    reference = embedding(1).tolist()
    boxes = [f"[{x0 + 1000}, {y0 + 1000}, {x0 + 1300}, {y0 + 1200}]"] * 2
    boxes.append(f"[{x0 + 1001}, {y0 + 1001}, {x0 + 1002}, {y0 + 1002}]")
    for k, box in enumerate(boxes):
        planned.clear()
        got = con.sql(
            f"SELECT location, similarity FROM aef_similarity({box}, ?::FLOAT[64], "
            f"years := 2023, crs := {epsg}) ORDER BY location",
            params=[reference],
        ).fetchall()
        expected = con.sql(
            f"SELECT location FROM aef_pixels({box}, years := 2023, crs := {epsg}) "
            "ORDER BY location"
        ).fetchall()
        assert [row[:1] for row in got] == expected
        if k < 2:
            assert len(got) == 30 * 20 and True not in planned  # (aef_pixels' too)
        else:
            assert len(got) == 1 and planned.count(True) == 2  # (aef_pixels' too)


def test_a_pixel_is_exactly_as_similar_to_itself_as_a_cosine_can_be(con):
    """A pixel's own de-quantized embedding as the reference gives at most 1.0, not
    float32's 1.0000001: no cosine leaves [-1, 1]."""
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    box = f"[{x0 + 500}, {y0 + 500}, {x0 + 800}, {y0 + 800}]"
    vectors = con.sql(
        f"SELECT embedding FROM aef_pixels({box}, years := 2023, crs := {epsg}, "
        "as_vector := true) WHERE embedding IS NOT NULL LIMIT 40"
    ).fetchall()
    tops = [
        con.sql(
            f"SELECT max(similarity), min(similarity) FROM aef_similarity({box}, ?::FLOAT[64], "
            f"years := 2023, crs := {epsg})",
            params=[list(vector)],
        ).fetchall()[0]
        for (vector,) in vectors
    ]
    assert max(top for top, _ in tops) == 1.0 and min(low for _, low in tops) >= -1.0
