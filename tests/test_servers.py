"""The local servers behave like the real ones the reader meets: byte-exact ranges, proper
errors, and a log that counts what was asked."""

import email.utils

import fsspec
import pytest
import requests
import s3fs
from servers import parse_range

TILE = "2023/18S/tile3-0000000000-0000000000.tiff"


@pytest.fixture(scope="module")
def tile(http_collection):
    """(URL, bytes, path as the server logs it) of one collection file over HTTP."""
    url = http_collection.index.rsplit("/", 1)[0] + "/" + TILE
    logged = "/" + url.split("/", 3)[3]
    return url, (http_collection.folder / TILE).read_bytes(), logged


@pytest.mark.parametrize(
    "header, expected",
    [
        ("bytes=0-9", (0, 10)),
        ("bytes=10-10", (10, 11)),
        ("bytes=95-", (95, 100)),
        ("bytes=90-500", (90, 100)),  # the end is clamped to the file
        ("bytes=-7", (93, 100)),
        ("bytes=-500", (0, 100)),
        ("bytes=100-", None),
        ("bytes=-0", None),
        ("bytes=5-3", None),
        ("bytes=0-1,4-5", None),
        ("items=0-1", None),
    ],
)
def test_parse_range(header, expected):
    assert parse_range(header, 100) == expected


def test_http_range_forms_are_byte_exact(tile):
    url, data, _ = tile
    size = len(data)
    assert size > 100_000  # a real tile, not an empty file
    cases = [
        ("bytes=10-19", 10, 20),
        (f"bytes={size - 100}-", size - 100, size),
        ("bytes=-7", size - 7, size),
        (f"bytes={size - 3}-{size + 1000}", size - 3, size),
    ]
    for header, start, end in cases:
        reply = requests.get(url, headers={"Range": header})
        assert reply.status_code == 206, header
        assert reply.content == data[start:end], header
        assert reply.headers["Content-Range"] == f"bytes {start}-{end - 1}/{size}"
        assert reply.headers["Content-Length"] == str(end - start)


def test_http_whole_file_head_and_validators(tile, http_collection):
    url, data, _ = tile
    mtime = (http_collection.folder / TILE).stat().st_mtime
    whole = requests.get(url)
    assert whole.status_code == 200 and whole.content == data
    assert "Content-Range" not in whole.headers
    head = requests.head(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == str(len(data))
    assert head.headers["Accept-Ranges"] == "bytes"
    assert head.headers["ETag"] == whole.headers["ETag"] and len(head.headers["ETag"]) == 34
    assert head.headers["Last-Modified"] == email.utils.formatdate(mtime, usegmt=True)


def test_http_unsatisfiable_and_missing(tile, http_server):
    url, data, _ = tile
    for header in (f"bytes={len(data)}-", f"bytes={len(data) + 5}-{len(data) + 10}", "bytes=-0"):
        reply = requests.get(url, headers={"Range": header})
        assert reply.status_code == 416, header
        assert reply.headers["Content-Range"] == f"bytes */{len(data)}"
        assert reply.content == b""
    assert requests.get(http_server.base_url + "nope.tiff").status_code == 404
    assert requests.head(http_server.base_url + "nope.tiff").status_code == 404
    assert requests.get(http_server.base_url).status_code == 404  # no directory listings


def test_fsspec_http_cat_file_is_byte_exact(tile, http_server):
    url, data, logged = tile
    fs = fsspec.filesystem("http", skip_instance_cache=True)
    http_server.log.clear()
    assert fs.cat_file(url, start=100, end=300) == data[100:300]
    assert fs.cat_file(url, start=len(data) - 50, end=len(data)) == data[-50:]
    assert fs.cat_file(url, start=-7) == data[-7:]  # a suffix range, no HEAD first
    assert fs.cat_file(url) == data
    assert http_server.log.requests == [
        ("GET", logged, "bytes=100-299"),
        ("GET", logged, f"bytes={len(data) - 50}-{len(data) - 1}"),
        ("GET", logged, "bytes=-7"),
        ("GET", logged, None),
    ]


def test_request_log_counts_per_path_total_and_ranges(tile, http_server):
    url, _, logged = tile
    http_server.log.clear()
    requests.head(url)
    requests.get(url, headers={"Range": "bytes=0-9"})
    requests.get(url, headers={"Range": "bytes=20-29"})
    requests.get(http_server.base_url + "nope.tiff")
    assert http_server.log.total == 4
    assert http_server.log.per_path() == {logged: 3, "/nope.tiff": 1}
    assert http_server.log.per_path("GET") == {logged: 2, "/nope.tiff": 1}
    assert http_server.log.ranges(TILE) == ["bytes=0-9", "bytes=20-29"]
    http_server.log.clear()
    assert http_server.log.total == 0


def test_injected_faults(tile, http_server):
    url, data, _ = tile
    http_server.faults.add(TILE, "503")
    http_server.faults.add(TILE, "short")
    http_server.faults.add(TILE, "ignore_range")
    assert requests.get(url, headers={"Range": "bytes=0-99"}).status_code == 503
    short = requests.get(url, headers={"Range": "bytes=0-99"})
    assert short.status_code == 206 and short.content == data[:50]
    assert short.headers["Content-Range"] == f"bytes 0-49/{len(data)}"
    ignored = requests.get(url, headers={"Range": "bytes=0-99"})
    assert ignored.status_code == 200 and ignored.content == data
    assert http_server.faults.planned == []
    assert [fault for _, fault in http_server.faults.injected[-3:]] == [
        "503",
        "short",
        "ignore_range",
    ]
    assert requests.get(url, headers={"Range": "bytes=0-99"}).content == data[:100]


def test_s3_server_lists_and_reads_ranges(s3_collection):
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **s3_collection.storage_options)
    folder = s3_collection.folder
    local = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    remote = sorted(p.removeprefix("aef/v1/annual/") for p in fs.find("aef/v1/annual"))
    assert remote == local and len(local) == 9  # 8 tiles and the index
    assert s3_collection.index == "s3://aef/v1/annual/index.parquet"
    for name in local:
        data = (folder / name).read_bytes()
        key = f"aef/v1/annual/{name}"
        assert fs.size(key) == len(data)
        assert fs.cat_file(key, start=5, end=505) == data[5:505]
        assert fs.cat_file(key, start=len(data) - 9, end=len(data)) == data[-9:]
    assert fs.cat_file(key) == data


def test_s3_range_edge_cases(s3, s3_collection):
    """What moto (like S3) does at the edges: readers must check lengths themselves."""
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **s3_collection.storage_options)
    data = (s3_collection.folder / "index.parquet").read_bytes()
    key = "aef/v1/annual/index.parquet"  # s3fs paths start with the bucket
    # An end past the object is clamped silently: a short read, no error.
    assert fs.cat_file(key, start=len(data) - 5, end=len(data) + 100) == data[-5:]
    with pytest.raises(OSError, match="range is not satisfiable"):
        fs.cat_file(key, start=len(data) + 5, end=len(data) + 100)
    client = s3.client()
    suffix = client.get_object(Bucket="aef", Key="v1/annual/index.parquet", Range="bytes=-7")
    assert suffix["ContentRange"] == f"bytes {len(data) - 7}-{len(data) - 1}/{len(data)}"
    assert suffix["Body"].read() == data[-7:]
    # Multiple ranges are ignored: the whole object with 200, as S3 does.
    multi = client.get_object(Bucket="aef", Key="v1/annual/index.parquet", Range="bytes=0-1,4-5")
    assert multi["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert multi["Body"].read() == data
