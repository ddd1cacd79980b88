"""aefsql.export and `aefsql export`: an embedding table as GeoParquet 2.0 (geoembeddings.org's
best practices): int8 values exactly rasterio's, Hilbert order, row groups, a bbox covering,
metadata that says how to de-quantize; checked by GeoPandas and by geoparquet-validator
(PyPI), which CI installs in a venv of its own (it is a standalone binary)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import geopandas
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import gdal_pixels
from pyproj import CRS

import aefsql
from aefsql.aef import dequantize
from aefsql.cli import main
from aefsql.geometry.hilbert import hilbert_keys

BOX = [11.995, 44.995, 12.005, 45.005]  # both sides of 12°E: tiles of 32N and 33N
# geoparquet-validator: on PATH, or where AEFSQL_GEOPARQUET_VALIDATOR says (CI installs it
# into a venv of its own).
VALIDATOR = os.environ.get("AEFSQL_GEOPARQUET_VALIDATOR") or shutil.which("geoparquet-validator")


@pytest.fixture(scope="module", params=["point", "pixel"])
def exported(request, gdal_collection, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / f"{request.param}.parquet"
    rows = aefsql.export(
        BOX,
        str(out),
        years=[2023, 2024],
        geometry=request.param,
        row_group_rows=2048,
        catalog=gdal_collection.index,
    )
    return request.param, out, rows


def test_values_are_rasterios_int8_exactly(exported, con):
    """Every pixel of aef_pixels, every year, once; its 64 values those rasterio reads."""
    kind, out, rows = exported
    table = pq.read_table(out)
    assert table.num_rows == rows
    pixels = con.sql(
        f"SELECT year, location, path, row, col FROM aef_pixels({BOX}, years := [2023, 2024])"
    ).to_arrow_table()
    assert rows == pixels.num_rows > 10000
    expected = {}
    for _, mine, values in gdal_pixels(pixels):
        keys = zip(
            pixels["year"].to_numpy()[mine].tolist(),
            pixels["location"].to_numpy()[mine].tolist(),
            strict=True,
        )
        for k, key in enumerate(keys):
            expected[key] = values[:, k]
    embedding = np.asarray(table["embedding"].to_pylist(), np.int8)
    assert embedding.shape == (rows, 64)
    got = dict(
        zip(
            zip(table["year"].to_pylist(), table["location"].to_pylist(), strict=True),
            embedding,
            strict=True,
        )
    )
    assert got.keys() == expected.keys()
    assert all(np.array_equal(got[key], expected[key]) for key in expected)
    assert (embedding == -128).any()  # nodata kept as published


def test_hilbert_order_row_groups_and_bbox(exported):
    kind, out, rows = exported
    file = pq.ParquetFile(out)
    assert file.metadata.num_row_groups == -(-rows // 2048)
    frame = geopandas.read_parquet(out)
    if kind == "point":  # the key the rows were sorted by (then year): non-decreasing
        keys = hilbert_keys(frame.geometry.x.to_numpy(), frame.geometry.y.to_numpy())
        assert (keys[1:] >= keys[:-1]).all()
    bounds = frame.geometry.bounds.to_numpy()  # (GeoPandas reads the covering as such)
    bbox = pq.read_table(out, columns=["bbox"])["bbox"].combine_chunks().flatten()
    assert np.array_equal(np.column_stack([c.to_numpy() for c in bbox]), bounds)
    compression = {
        file.metadata.row_group(0).column(i).compression for i in range(file.metadata.num_columns)
    }
    assert compression == {"ZSTD"}


def test_metadata_says_what_the_vectors_are(exported):
    kind, out, _ = exported
    metadata = pq.read_metadata(out).metadata
    embedding = json.loads(metadata[b"embedding"])
    assert "AlphaEarth Foundations" in embedding["model"]
    assert embedding["dimensions"] == 64 and embedding["data_type"] == "int8"
    assert embedding["nodata"] == -128 and embedding["column"] == "embedding"
    # The formula, evaluated as written, is the publisher's de-quantization (not 1/128).
    assert embedding["dequantization"] == "sign(v) * (abs(v) / 127.5)^2"
    v = np.arange(-127, 128)
    formula = embedding["dequantization"].replace("^", "**").replace("sign", "np.sign")
    evaluated = eval(formula.replace("abs", "np.abs"), {"np": np, "v": v})
    assert np.allclose(evaluated, dequantize(v.astype(np.int8)), rtol=1e-15, atol=0)
    geo = json.loads(metadata[b"geo"])
    assert geo["version"] == "2.0.0" and geo["primary_column"] == "geometry"
    column = geo["columns"]["geometry"]
    assert column["covering"]["bbox"]["xmin"] == ["bbox", "xmin"]
    assert column["geometry_types"] == (
        ["Point"] if kind == "point" else ["Polygon", "MultiPolygon"]
    )
    frame = geopandas.read_parquet(out)
    assert frame.crs.equals(CRS("OGC:CRS84"))


@pytest.mark.skipif(VALIDATOR is None, reason="geoparquet-validator (PyPI) is not installed")
def test_geoparquet_validator_passes(exported):
    _, out, _ = exported
    done = subprocess.run([VALIDATOR, "check", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    for verdict in ("core: ", "covering: ", "distribution: "):
        line = next(x for x in done.stdout.splitlines() if verdict in x)
        assert "0 fail" in line and "conformant" in line, line
    assert "PASS  /conf/distribution/spatial-order" in done.stdout
    assert "ok    bbox covering" in done.stdout and "ok    compression" in done.stdout


def test_the_cli_verb_writes_the_same(gdal_collection, exported, tmp_path, capsys):
    kind, out, rows = exported
    target = tmp_path / "cli.parquet"
    code = main(
        [
            "export",
            f"--bbox={','.join(map(str, BOX))}",
            "--years",
            "2023,2024",
            "--geometry",
            kind,
            "--row-group-rows",
            "2048",
            "-o",
            str(target),
            "--catalog",
            gdal_collection.index,
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert f"{rows} rows" in capsys.readouterr().out
    assert pq.read_table(target).equals(pq.read_table(out))


def test_refused_before_anything_is_read(gdal_collection, tmp_path):
    out = str(tmp_path / "x.parquet")
    with pytest.raises(aefsql.AefsqlError, match="geometry='pt'"):
        aefsql.export(BOX, out, years=2023, geometry="pt", catalog=gdal_collection.index)
    with pytest.raises(aefsql.AefsqlError, match="an export is GeoParquet"):
        aefsql.export(BOX, out, years=2023, geometry=None, catalog=gdal_collection.index)
    with pytest.raises(aefsql.AefsqlError, match="row_group_rows"):
        aefsql.export(BOX, out, years=2023, row_group_rows=0, catalog=gdal_collection.index)
    assert not os.path.exists(out)


def test_hilbert_keys_walk_a_grid_cell_by_cell():
    """On a 16 x 16 grid the keys are 0..255, and consecutive keys are neighbouring cells."""
    order, side = 4, 16
    col, row = (a.ravel() for a in np.meshgrid(np.arange(side), np.arange(side)))
    lon, lat = (col + 0.5) / side * 360 - 180, (row + 0.5) / side * 180 - 90
    keys = hilbert_keys(lon, lat, order)
    assert sorted(keys.tolist()) == list(range(side * side))
    walk = np.argsort(keys)
    steps = np.abs(np.diff(col[walk])) + np.abs(np.diff(row[walk]))
    assert (steps == 1).all()
    assert pa.array(hilbert_keys(lon, lat)).type == pa.uint64()


def test_an_empty_export_says_why(gdal_collection, tmp_path):
    # A year the catalog lacks, or an area outside every tile, writes a file with no rows:
    # the warning says why, as aefsql.change and aefsql.grid do.
    out = str(tmp_path / "none.parquet")
    with pytest.warns(UserWarning, match=r"no tile of year\(s\) 2019.*written with no rows"):
        assert aefsql.export(BOX, out, years=2019, catalog=gdal_collection.index) == 0
    with pytest.warns(UserWarning, match="outside coverage.*written with no rows"):
        aefsql.export([0, 0, 0.01, 0.01], out, years=2024, catalog=gdal_collection.index)
