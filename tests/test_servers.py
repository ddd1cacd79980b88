"""The local servers behave like the real ones the reader meets."""

import fsspec
import requests
import s3fs


def test_http_range_requests(http_server, gdal_collection):
    name = f"{gdal_collection.folder.name}/index.parquet"
    data = (gdal_collection.folder / "index.parquet").read_bytes()
    url = http_server.base_url + name
    assert requests.get(url, headers={"Range": "bytes=10-19"}).content == data[10:20]
    tail = requests.get(url, headers={"Range": "bytes=-7"})
    assert tail.status_code == 206 and tail.content == data[-7:]
    assert tail.headers["Content-Range"] == f"bytes {len(data) - 7}-{len(data) - 1}/{len(data)}"
    assert requests.get(url, headers={"Range": f"bytes={len(data)}-"}).status_code == 416
    assert requests.get(http_server.base_url + "nope").status_code == 404
    head = requests.head(url)
    assert int(head.headers["Content-Length"]) == len(data) and head.headers["ETag"]
    fs = fsspec.filesystem("http")
    assert fs.cat_file(url, start=100, end=300) == data[100:300]


def test_s3_server_lists_and_reads_ranges(s3_collection):
    fs = s3fs.S3FileSystem(**s3_collection.storage_options)
    local = sorted(
        p.relative_to(s3_collection.folder).as_posix()
        for p in s3_collection.folder.rglob("*")
        if p.is_file()
    )
    remote = sorted(p.removeprefix("aef/v1/annual/") for p in fs.find("aef/v1/annual"))
    assert remote == local
    data = (s3_collection.folder / local[0]).read_bytes()
    assert fs.cat_file(f"aef/v1/annual/{local[0]}", start=5, end=505) == data[5:505]
