"""aef_pixels(as_vector := true) against GDAL: the `embedding` FLOAT[64] equals the
de-quantized bands of rasterio's window read (NULL where any band is nodata), on the same
rows as aef_pixels without it; array_cosine_similarity over it equals numpy's cosine."""

import numpy as np
import pyarrow as pa
import pytest
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
from aefsql.geometry.geo import polygon_wkb

PLACE = ["year", "location", "path", "row", "col", "x", "y", "crs", "lon", "lat"]
NORTH_UP = Layout(south_up=False, width=301, height=259, block=128, west=300000.0)


@pytest.fixture(scope="module")
def north_con(tmp_path_factory):
    """A one-tile collection (2023) of a north-up, odd-sized layout."""
    folder = tmp_path_factory.mktemp("north_up_vectors")
    path = "2023/33N/northup-0000000000-0000000000.tiff"
    write_layout(folder, NORTH_UP, seed=9, name=path)
    con = aefsql.connect(
        catalog=str(write_index(folder / "index.parquet", [index_row(1, 2023, path, NORTH_UP)]))
    )
    yield con
    con.close()


def both(con, area: str, params: list, extra: str = "") -> tuple[pa.Table, pa.Table]:
    """aef_pixels of `area` with and without as_vector, in one order."""
    query = f"SELECT * FROM aef_pixels({area}{extra}{{}}) ORDER BY year, path, row, col"
    vectors = con.sql(query.format(", as_vector := true"), params=params).to_arrow_table()
    bands = con.sql(query.format(""), params=params).to_arrow_table()
    return vectors, bands


def embeddings(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """float32 (rows, 64) (NaN on NULL rows) and bool (rows,): where `embedding` is NULL."""
    column = table["embedding"].combine_chunks()
    null = column.is_null().to_numpy(zero_copy_only=False)
    values = np.full((len(column), BAND_COUNT), np.nan, np.float32)
    values[~null] = column.filter(pa.array(~null)).flatten().to_numpy().reshape(-1, BAND_COUNT)
    return values, null


def check_against_gdal(vectors: pa.Table, bands: pa.Table, level: int = 0) -> int:
    """The rows are aef_pixels' own; each embedding is rasterio's window, de-quantized, or
    NULL where any band is nodata. Returns how many were NULL."""
    assert vectors.column_names == [*PLACE, "embedding"]
    assert vectors.schema.field("embedding").type == pa.list_(pa.float32(), BAND_COUNT)
    assert vectors.select(PLACE).equals(bands.select(PLACE))
    got, null = embeddings(vectors)
    for path, mine, data in gdal_pixels(vectors, level):
        expected_null = (data == NODATA).any(axis=0)
        assert np.array_equal(null[mine], expected_null), path
        expected = dequantize(data.T).astype(np.float32)
        assert np.array_equal(got[mine][~expected_null], expected[~expected_null]), path
    return int(null.sum())


def test_a_whole_south_up_tile_with_its_nodata(con):
    """The whole tile 3 (18S, alone in its zone): every pixel, the nodata rectangle and the
    single-band nodata values among them (any band nodata: NULL, as aef_vector says)."""
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    box = [x0 + 1, y0 + 1, x0 + TILE_WIDTH * PIXEL_METRES - 1, y0 + TILE_HEIGHT * PIXEL_METRES - 1]
    vectors, bands = both(con, str(box), [], f", years := [2023, 2024], crs := {epsg}")
    assert vectors.num_rows == 2 * TILE_WIDTH * TILE_HEIGHT
    nulls = check_against_gdal(vectors, bands)
    assert 0 < nulls < vectors.num_rows // 10
    # aef_vector over the band columns (the SQL de-quantization) says the same, value for value.
    con.register("bands", bands)
    sql = con.sql("SELECT aef_vector(b) AS embedding FROM bands b").to_arrow_table()
    con.unregister("bands")
    assert sql["embedding"].combine_chunks().equals(vectors["embedding"].combine_chunks())


@pytest.mark.parametrize("level", [0, 1])
def test_a_star_in_a_north_up_tile(north_con, level):
    west, south, east, north = NORTH_UP.bounds
    ring = star((west + east) / 2, (south + north) / 2, 1200, n=11, seed=3)
    area = "?::BLOB"
    params = [polygon_wkb(ring[:, 0], ring[:, 1])]
    vectors, bands = both(
        north_con, area, params, f", years := 2023, crs := {NORTH_UP.epsg}, level := {level}"
    )
    assert vectors.num_rows > 300 // 4**level
    check_against_gdal(vectors, bands, level)


def test_a_star_at_level_one_south_up(con):
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    ring = star(x0 + 1500, y0 + 1300, 1100, seed=1)
    params = [polygon_wkb(ring[:, 0], ring[:, 1])]
    vectors, bands = both(con, "?::BLOB", params, f", years := 2023, crs := {epsg}, level := 1")
    assert vectors.num_rows > 100
    check_against_gdal(vectors, bands, level=1)


def test_across_the_12e_seam(con):
    """Tiles 0 (32N) and 1 (33N) overlap across 12°E: each location from the tile that owns
    it, its vector from that tile's file."""
    vectors, bands = both(con, "[11.99, 45.0, 12.01, 45.01]", [], ", years := 2023")
    assert len(set(vectors["path"].to_pylist())) == 2
    assert len(set(vectors["crs"].to_pylist())) == 2
    check_against_gdal(vectors, bands)


def test_cosine_similarity_equals_numpy(con):
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    ring = star(x0 + 1200, y0 + 1100, 700, seed=2)
    wkb = polygon_wkb(ring[:, 0], ring[:, 1])
    reference = dequantize(np.arange(-64, 64, 2, dtype=np.int8)).astype(np.float32)
    table = con.sql(
        f"SELECT array_cosine_similarity(embedding, ?::FLOAT[64]) AS similarity, embedding "
        f"FROM aef_pixels(?::BLOB, years := 2023, crs := {epsg}, as_vector := true)",
        params=[reference.tolist(), wkb],
    ).to_arrow_table()
    values, null = embeddings(table)
    assert table.num_rows > 1000 and null.any() and not null.all()
    v = values[~null].astype(np.float64)
    ref = reference.astype(np.float64)
    expected = v @ ref / (np.linalg.norm(v, axis=1) * np.linalg.norm(ref))
    similarity = table["similarity"].to_numpy(zero_copy_only=False)
    assert np.allclose(similarity[~null].astype(np.float64), expected, rtol=1e-5, atol=1e-6)
    assert table["similarity"].null_count == null.sum()


def test_bands_with_as_vector_are_refused(con):
    box = "[11.99, 45.0, 12.01, 45.01]"
    for bands in ("['A00']", "aef_band_names()"):
        with pytest.raises(
            Exception,
            match=r"as_vector := true returns all 64 bands as one "
            r"vector: drop bands :=",
        ):
            con.sql(
                f"FROM aef_pixels({box}, years := 2023, bands := {bands}, as_vector := true)"
            ).fetchall()
    with pytest.raises(Exception, match="as_vector must be true or false"):
        con.sql(f"FROM aef_pixels({box}, years := 2023, as_vector := 'yes')").fetchall()
    # the rule's one home, as the Python API phrases it
    with pytest.raises(AefsqlError, match="drop bands"):
        aefsql.options.resolve(function="aef_pixels", years=2023, bands=["A00"], as_vector=True)
