"""Session fixtures: GDAL-written files and collections, served locally over S3 and HTTP."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import boto3
import botocore.config
import pytest
from gdal_fixtures import LAYOUTS, write_collection, write_layout
from servers import RequestLog, http_range_server, injected_counts, s3_fault_proxy, s3_server

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


def pytest_terminal_summary(terminalreporter):
    """The faults the servers injected in this run: the tests assert each was retried away,
    or failed the query with the documented error."""
    counts = injected_counts()
    if counts:
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items()))
        terminalreporter.write_line(f"faults injected: {sum(counts.values())} ({kinds})")
