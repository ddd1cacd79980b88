"""The demo collection and the `aefsql demo` command."""

import io
import json
from contextlib import redirect_stdout

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
from pyproj import Transformer

from aefsql.cli import main
from aefsql.demo import DEMO_POINTS, DEMO_TILES, write_demo_collection


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    return folder, write_demo_collection(folder, tile_px=256)


def containing_tiles(folder, index, year, lon, lat) -> list[tuple[str, np.ndarray]]:
    """(path, the 64 values GDAL reads) of every tile of `year` whose raster holds the point."""
    found = []
    for row in index.filter(index["year"].to_numpy() == year).to_pylist():
        with rasterio.open(folder / row["path"]) as ds:
            x, y = Transformer.from_crs(4326, ds.crs.to_epsg(), always_xy=True).transform(lon, lat)
            r, c = ds.index(x, y)
            if 0 <= r < ds.height and 0 <= c < ds.width:
                found.append((row["path"], ds.read(window=((r, r + 1), (c, c + 1))).ravel()))
    return found


def test_index_describes_the_files(demo):
    folder, index_path = demo
    index = pq.read_table(index_path)
    assert index.num_rows == 2 * len(DEMO_TILES)
    geo = json.loads(index.schema.metadata[b"geo"])
    assert geo["primary_column"] == "geom" and geo["columns"]["geom"]["encoding"] == "WKB"
    assert "crs" not in geo["columns"]["geom"]  # absent = OGC:CRS84; null would mean unknown
    zones = set()
    for row in index.to_pylist():
        with rasterio.open(folder / row["path"]) as ds:
            assert ds.count == 64 and ds.dtypes[0] == "int8" and ds.nodata == -128
            assert ds.transform.e > 0  # south-up, like the published files
            assert row["crs"] == f"EPSG:{ds.crs.to_epsg()}"
            left, bottom, right, top = ds.bounds  # rasterio's bottom/top swap for south-up
            assert (row["utm_west"], row["utm_east"]) == (left, right)
            assert (row["utm_south"], row["utm_north"]) == (min(bottom, top), max(bottom, top))
        zones.add(row["utm_zone"])
        assert row["wgs84_west"] < row["wgs84_east"] and row["wgs84_south"] < row["wgs84_north"]
    assert any(z.endswith("S") for z in zones) and any(z.endswith("N") for z in zones)


def test_named_points_are_what_their_names_say(demo):
    folder, index_path = demo
    index = pq.read_table(index_path)
    where = {
        name: containing_tiles(folder, index, 2024, lon, lat) for name, lon, lat in DEMO_POINTS
    }
    assert where["mid_atlantic"] == []
    assert len(where["seam_12e"]) == 2
    assert {p.split("/")[1] for p, _ in where["seam_12e"]} == {"32N", "33N"}
    [(_, nodata)] = where["lagoon_nodata"]
    assert (nodata == -128).all()
    for name in ("san_francisco", "lima", "nairobi"):
        [(_, values)] = where[name]
        assert (values != -128).all()
        unit = np.sign(values) * (np.abs(values) / 127.5) ** 2
        assert abs(np.linalg.norm(unit) - 1.0) < 0.05  # de-quantised embeddings: ~unit length


def test_demo_command_prints_the_canonical_join(tmp_path):
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["demo", "--dir", str(tmp_path)]) == 0
    text = out.getvalue()
    assert "aef_locate(p.lon, p.lat, 2024)" in text
    join = text.split("-- every point")[0]
    for name in ("san_francisco", "lima", "nairobi", "seam_12e", "lagoon_nodata"):
        assert name in join
    assert "mid_atlantic" not in join  # the inner join drops the point outside coverage
    assert "14 rows" in text  # aef_sample_points: 7 points x 2 years, none lost
    # It says the data is synthetic, and how to open the collection in the shell: that
    # command works as printed.
    assert "synthetic" in text
    command = text.strip().splitlines()[-1].strip()
    assert command == f"aefsql --catalog {tmp_path / 'index.parquet'}"
    shell_out = io.StringIO()
    with redirect_stdout(shell_out):
        code = main([*command.split()[1:], "-c", "SELECT count(*) AS tiles FROM aef_index();"])
    assert code == 0 and "10" in shell_out.getvalue()


def test_places_are_written_beside_the_index(demo):
    """docs/functions.md's `places` table comes from the demo's own folder."""
    folder, index = demo
    assert (folder / "places.csv").parent == index.parent
    places = duckdb.sql(f"FROM '{folder / 'places.csv'}'")
    assert places.columns == ["name", "lon", "lat"]
    assert places.fetchall() == DEMO_POINTS
