"""Session fixtures: GDAL-written files and collections, served locally over S3 and HTTP."""

from dataclasses import dataclass
from pathlib import Path

import pytest
from gdal_fixtures import LAYOUTS, write_collection, write_layout
from servers import http_range_server, s3_server


@dataclass
class Collection:
    index: str  # path or URL of index.parquet
    storage_options: dict
    folder: Path  # the local copy


@pytest.fixture(scope="session")
def layout_files(tmp_path_factory) -> dict:
    """{Layout: path} for every GDAL-written layout."""
    folder = tmp_path_factory.mktemp("layouts")
    return {layout: write_layout(folder, layout, seed=i) for i, layout in enumerate(LAYOUTS)}


@pytest.fixture(scope="session")
def gdal_collection(tmp_path_factory) -> Collection:
    folder = tmp_path_factory.mktemp("collection")
    return Collection(str(write_collection(folder)), {}, folder)


@pytest.fixture(scope="session")
def s3(gdal_collection):
    with s3_server() as server:
        yield server


@pytest.fixture(scope="session")
def s3_collection(s3, gdal_collection) -> Collection:
    s3.upload_folder(gdal_collection.folder, "aef", prefix="v1/annual/")
    return Collection(
        "s3://aef/v1/annual/index.parquet", s3.storage_options, gdal_collection.folder
    )


@pytest.fixture(scope="session")
def http_server(gdal_collection):
    with http_range_server(gdal_collection.folder.parent) as server:
        yield server


@pytest.fixture(scope="session")
def http_collection(http_server, gdal_collection) -> Collection:
    url = f"{http_server.base_url}{gdal_collection.folder.name}/index.parquet"
    return Collection(url, {}, gdal_collection.folder)
