"""aef_pixels plans an area unit by unit (a year's tiles, aefsql/kernels/pixels.py `area_units`),
so the plan held at once is bounded by a unit whatever the area, and the rows are those of
the whole plan (`area_chunks`, as before), pixel for pixel against GDAL."""

import numpy as np
import pytest
import rasterio
from gdal_fixtures import collection_path
from helpers import band_matrix

import aefsql
from aefsql.duck import udfs as duck
from aefsql.geometry.areas import area_from
from aefsql.kernels import pixels
from aefsql.session import open_session

# Across the 12°E seam: tiles 0 (32N), 1 and 2 (33N), each year.
BOX = [11.90, 44.96, 12.06, 45.02]
YEARS = [2023, 2024]


@pytest.fixture
def planned(gdal_collection, monkeypatch):
    """aef_pixels over BOX with one tile a unit, and the size of every plan handed to
    DuckDB (duck._chunk_arrow: the one place chunks become Arrow) while it ran."""
    sizes = []
    arrow = duck._chunk_arrow

    def spied(chunks, order):
        sizes.append(int(chunks.row.size))
        return arrow(chunks, order)

    monkeypatch.setattr(duck, "_chunk_arrow", spied)
    monkeypatch.setattr(pixels, "UNIT_CHUNKS", 1, raising=False)  # one tile a unit
    con = aefsql.connect(catalog=gdal_collection.index)
    try:
        return con.sql(f"SELECT * FROM aef_pixels({BOX}, years := {YEARS})").to_arrow_table(), sizes
    finally:
        con.close()


def test_the_plan_is_held_a_unit_at_a_time(gdal_collection, planned):
    table, sizes = planned
    # The whole plan, as area_chunks makes it (one list, as aef_pixels held it before).
    session = open_session(str(gdal_collection.index), environment=False)
    whole = pixels.area_chunks(session, area_from(BOX, 4326), YEARS)
    per_tile = {}
    for path, year in zip(whole.path.tolist(), whole.year.tolist(), strict=True):
        per_tile[path, year] = per_tile.get((path, year), 0) + 1
    assert len(per_tile) == 6  # three tiles, two years
    assert sum(sizes) == whole.row.size  # every chunk planned once
    assert max(sizes) <= max(per_tile.values()) < whole.row.size  # never the whole plan
    # The rows are the whole plan's pixels, each once, with GDAL's values.
    assert table.num_rows == whole.pixels
    keys = set(zip(*(table[c].to_pylist() for c in ("path", "year", "row", "col")), strict=True))
    assert len(keys) == table.num_rows
    values = band_matrix(table)
    rows, cols = table["row"].to_numpy(), table["col"].to_numpy()
    paths, years = np.array(table["path"].to_pylist(), object), table["year"].to_numpy()
    for year in YEARS:
        for k in range(3):
            path = str(gdal_collection.folder / collection_path(year, k))
            mine = np.flatnonzero((paths == path) & (years == year))
            assert mine.size, (year, k)
            with rasterio.open(path) as ds:
                data = ds.read().astype(np.int16)
            expected = np.where(data == -128, -999, data)[:, rows[mine], cols[mine]].T
            assert np.array_equal(values[mine], expected)
