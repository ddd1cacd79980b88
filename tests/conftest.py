"""Fixtures: GDAL-written files and collections, served locally over S3 and HTTP; a connection
over the local collection; a catalog of broken files. Helpers are in helpers.py."""

from __future__ import annotations

import ast
import itertools
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import boto3
import botocore.config
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from gdal_fixtures import LAYOUTS, write_collection, write_layout
from helpers import GOOD_TILE, TO_LONLAT, write
from servers import RequestLog, http_range_server, injected_counts, s3_fault_proxy, s3_server

import aefsql

S3_BUCKET, S3_PREFIX = "aef", "v1/annual/"
# Spark starts its Python workers with `python3` from PATH, which is not this venv's when the
# tests run as .venv/bin/pytest without activating it (CI): they would lack pyarrow and aefsql.
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


@dataclass
class Collection:
    index: str  # path or URL of index.parquet
    storage_options: dict
    folder: Path  # the local copy
    log: RequestLog | None = None  # the HTTP server's requests (http_collection only)


@pytest.fixture(scope="session")
def gdal_layout_files(tmp_path_factory) -> dict:
    """{Layout: path} for every GDAL-written layout; LAYOUTS[i] is written with seed i."""
    folder = tmp_path_factory.mktemp("layouts")
    return {layout: write_layout(folder, layout, seed=i) for i, layout in enumerate(LAYOUTS)}


@pytest.fixture(scope="session")
def gdal_collection(tmp_path_factory) -> Collection:
    """The two-year collection on local disk; index is the index.parquet's path."""
    folder = tmp_path_factory.mktemp("collection")
    return Collection(str(write_collection(folder)), {}, folder)


@pytest.fixture(scope="session")
def s3():
    with s3_server() as server:
        yield server


@pytest.fixture(scope="session")
def s3_proxy(s3):
    """A fault-injecting proxy in front of the S3 server."""
    with s3_fault_proxy(s3) as proxy:
        yield proxy


@pytest.fixture(scope="session")
def s3_collection(s3, gdal_collection) -> Collection:
    """The collection in a bucket of the moto server: index is s3://aef/v1/annual/index.parquet,
    storage_options are s3fs's."""
    s3.upload_folder(gdal_collection.folder, S3_BUCKET, prefix=S3_PREFIX)
    url = f"s3://{S3_BUCKET}/{S3_PREFIX}index.parquet"
    return Collection(url, s3.storage_options, gdal_collection.folder)


@pytest.fixture(scope="module")
def presigned(s3, s3_collection):
    """Presigned GET URLs of the collection's index and of a key that does not exist, and
    the signature they carry."""
    client = boto3.client(
        "s3",
        endpoint_url=s3.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=s3.storage_options["key"],
        aws_secret_access_key=s3.storage_options["secret"],
        config=botocore.config.Config(signature_version="s3v4"),  # X-Amz-Signature=…
    )

    def sign(key):
        return client.generate_presigned_url(
            "get_object", Params={"Bucket": S3_BUCKET, "Key": key}, ExpiresIn=3600
        )

    present = sign(f"{S3_PREFIX}index.parquet")
    missing = sign(f"{S3_PREFIX}no-such-index.parquet")
    signatures = [parse_qs(urlsplit(u).query)["X-Amz-Signature"][0] for u in (present, missing)]
    return present, missing, signatures


@pytest.fixture(scope="session")
def http_server(gdal_collection):
    """An HTTP Range server over the collection's parent folder (other test files can be
    served from there too)."""
    with http_range_server(gdal_collection.folder.parent) as server:
        yield server


@pytest.fixture(scope="session")
def http_collection(http_server, gdal_collection) -> Collection:
    """The collection over HTTP: index is http://127.0.0.1:PORT/<folder>/index.parquet and log
    counts the requests the server received."""
    url = f"{http_server.base_url}{gdal_collection.folder.name}/index.parquet"
    return Collection(url, {}, gdal_collection.folder, http_server.log)


@pytest.fixture(scope="module")
def con(gdal_collection):
    """A connection with aefsql over the local collection, one per test module (a module
    may define its own `con` over another collection)."""
    con = aefsql.connect(catalog=gdal_collection.index)
    yield con
    con.close()


@pytest.fixture
def broken_catalog(tmp_path):
    """(connection, folder of index.parquet): one good tile (GOOD_TILE), one missing file,
    one non-TIFF and one truncated TIFF, as catalog rows of different years so each query
    picks the one it tests."""
    good = write(
        tmp_path / "good.tif", GOOD_TILE, planarconfig="separate", tile=(16, 16), compression="zstd"
    )
    (tmp_path / "not_a_tiff.tif").write_bytes(b"<html>403 Forbidden</html>")
    raw = good.read_bytes()
    (tmp_path / "truncated.tif").write_bytes(raw[: len(raw) // 2])
    # The raster's corners: x 500000..500500, y 4000000..4000400 (south-up, 10 m pixels).
    lon, lat = np.asarray(
        TO_LONLAT.transform([500000, 500500, 500000, 500500], [4e6, 4e6, 4000400, 4000400])
    )
    rows = [
        (2023, "good.tif"),
        (2024, "missing.tif"),
        (2025, "not_a_tiff.tif"),
        (2026, "truncated.tif"),
    ]
    index = tmp_path / "index.parquet"
    pq.write_table(
        pa.table(
            {
                "fid": list(range(len(rows))),
                "year": [year for year, _ in rows],
                "path": [path for _, path in rows],
                "crs": ["EPSG:32633"] * len(rows),
                "wgs84_west": [lon.min()] * len(rows),
                "wgs84_south": [lat.min()] * len(rows),
                "wgs84_east": [lon.max()] * len(rows),
                "wgs84_north": [lat.max()] * len(rows),
            }
        ),
        index,
    )
    con = aefsql.connect(catalog=str(index))
    yield con, tmp_path
    con.close()


def module_markers(path: Path) -> set[str]:
    """The markers a test module's `pytestmark` gives each of its tests, read from its source:
    importing test_torch imports torch."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets
        ):
            names = {
                n.attr
                for n in ast.walk(node.value)
                if isinstance(n, ast.Attribute)
                and isinstance(n.value, ast.Attribute)
                and n.value.attr == "mark"
            }
    return names


def pytest_ignore_collect(collection_path: Path, config):
    """A test module whose every test `-m` leaves out is not imported at all, so that the fast
    loop (-m "not spark and not torch and not dbt and not slow") imports none of PySpark,
    torch, TorchGeo or dbt (tests/test_markers.py checks it). Without -m, or when a test
    could be selected by markers of its own, the module is collected as usual."""
    markexpr = config.getoption("markexpr")
    if not markexpr or "=" in markexpr or not collection_path.name.startswith("test_"):
        return None
    if collection_path.suffix != ".py":
        return None
    marks = module_markers(collection_path)
    if not marks:
        return None
    from _pytest.mark.expression import Expression  # pytest's own reading of -m

    expression = Expression.compile(markexpr)
    others = sorted(set(re.findall(r"[\w:+\-.\[\]\\/]+", markexpr)) - {"and", "or", "not"} - marks)
    for held in itertools.product((False, True), repeat=len(others)):
        on = marks | {name for name, h in zip(others, held, strict=True) if h}
        if expression.evaluate(on.__contains__):
            return None
    return True


def pytest_terminal_summary(terminalreporter):
    """The faults the servers injected in this run: the tests assert each was retried away,
    or failed the query with the documented error."""
    counts = injected_counts()
    if counts:
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items()))
        terminalreporter.write_line(f"faults injected: {sum(counts.values())} ({kinds})")
