"""Network faults injected by the local HTTP server: results equal the fault-free ones, or the
query fails with a clear error; never a wrong or missing row."""

import json
import subprocess
import sys
import threading
import time

import aiohttp
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import tile_points

import aefsql
from aefsql.errors import Cancelled
from aefsql.storage.store import ByteStore, RetryPolicy

TILE = "2023/18S/tile3-0000000000-0000000000.tiff"


@pytest.fixture(scope="module")
def points():
    lon, lat, _, _ = tile_points(3, 40, seed=21)
    return pa.table({"id": list(range(40)), "lon": lon, "lat": lat})


def sample(index, points):
    return aefsql.sample_points(points, year=2023, catalog=index, progress=False)


@pytest.fixture(scope="module")
def expected(http_collection, points):
    return sample(http_collection.index, points)


@pytest.mark.parametrize(
    "fault", ["500", "503", "429", "drop", "truncate", "short", "ignore_range", "wrong_range"]
)
def test_transient_faults_are_retried_to_the_same_result(
    http_collection, http_server, points, expected, fault
):
    http_server.faults.add(TILE, fault, times=2)  # the header read, then a block read
    got = sample(http_collection.index, points)
    assert http_server.faults.planned == []  # both faults were served ...
    assert [f for _, f in http_server.faults.injected[-2:]] == [fault, fault]
    assert got.equals(expected)  # ... and retried away


def test_a_stalled_server_times_out_and_is_retried(http_collection, http_server, points, expected):
    http_server.faults.add(TILE, "stall", times=1)
    http_server.log.clear()
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=1)  # < the stall
    got = aefsql.sample_points(
        points,
        year=2023,
        catalog=http_collection.index,
        progress=False,
        storage_options={"client_kwargs": {"timeout": timeout}},
    )
    assert http_server.faults.planned == [] and got.equals(expected)
    ranges = [r for m, path, r in http_server.log.requests if m == "GET" and path.endswith(TILE)]
    assert ranges.count(ranges[0]) == 2  # the stalled read timed out and was asked again


def test_a_refusal_is_not_retried_and_names_the_file(http_collection, http_server, points):
    http_server.faults.add(TILE, "403", times=10)  # the file stays forbidden
    http_server.log.clear()
    with pytest.raises(Exception, match=r"tile3-0000000000-0000000000\.tiff: access denied"):
        sample(http_collection.index, points)
    gets = [r for m, path, r in http_server.log.requests if m == "GET" and path.endswith(TILE)]
    # Locating reads the header, then once more alone to tell which file failed, and sampling
    # reads it once: never the retry loop's attempts.
    assert len(gets) < RetryPolicy().attempts
    http_server.faults.planned.clear()


def test_a_persistent_fault_fails_after_bounded_attempts(http_collection, http_server, points):
    attempts = RetryPolicy().attempts
    http_server.faults.add(TILE, "503", times=100)  # the server stays unavailable
    http_server.log.clear()
    with pytest.raises(Exception, match=rf"503.*gave up after {attempts} attempts"):
        sample(http_collection.index, points)
    gets = [r for m, path, r in http_server.log.requests if m == "GET" and path.endswith(TILE)]
    # Each read that gives up has made exactly `attempts` requests (locating tries the file
    # in a batch, then alone; sampling once more).
    assert len(gets) % attempts == 0 and len(gets) <= 3 * attempts
    http_server.faults.planned.clear()


def test_errors_never_show_secrets(http_server, s3_collection):
    con = aefsql.connect()
    try:
        signed = f"{http_server.base_url}nope.tiff?X-Amz-Signature=TOPSECRET&X-Amz-Credential=AKIA"
        with pytest.raises(Exception) as error:
            con.execute(f"SELECT aef_file_embedding('{signed}', 15.0, 45.0)").fetchall()
        assert "nope.tiff: file not found" in str(error.value)
        assert "TOPSECRET" not in str(error.value) and "AKIA" not in str(error.value)
    finally:
        con.close()
    options = dict(s3_collection.storage_options, secret="SECRET-KEY-VALUE")
    # A remote catalog is read by the first query that needs it, not at registration.
    con = aefsql.connect(catalog="s3://aef/v1/annual/missing.parquet", storage_options=options)
    try:
        with pytest.raises(Exception) as error:
            con.execute("SELECT count(*) FROM aef_index()").fetchall()
    finally:
        con.close()
    assert "not found" in str(error.value) and "SECRET-KEY-VALUE" not in str(error.value)


@pytest.mark.parametrize(
    "fault, waiting",
    [
        ("503", "in a 20 s retry wait"),
        ("stall 20", "for an answer the server stalls for 20 s"),
    ],
)
def test_cancel_ends_reads_at_once(http_collection, http_server, fault, waiting):
    """The shell's Ctrl-C cancels the session: a read waiting to retry, or waiting for a
    request in flight, ends with Cancelled at once, and the store works again afterwards."""
    store = ByteStore(retry=RetryPolicy(attempts=5, base_delay=20.0, max_delay=20.0))
    url = f"{http_collection.index.rsplit('/', 1)[0]}/{TILE}"
    http_server.faults.add(TILE, fault, times=100 if fault == "503" else 1)
    outcome = {}

    def read():
        started = time.monotonic()
        try:
            store.read([(url, 0, 100)])
        except Exception as exc:  # noqa: BLE001 (the test inspects it)
            outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - started

    worker = threading.Thread(target=read)
    worker.start()
    time.sleep(0.5)  # the read is now waiting
    store.cancelled.set()
    worker.join(timeout=10)
    http_server.faults.planned.clear()
    assert isinstance(outcome["error"], Cancelled), waiting
    assert outcome["seconds"] < 2, waiting
    store.cancelled.clear()
    assert store.read([(url, 0, 100)])[0] == (http_collection.folder / TILE).read_bytes()[:100]


S3_TILE = "aef/v1/annual/" + TILE


@pytest.mark.parametrize(
    "fault", ["500", "503", "drop", "truncate", "short", "wrong_range", "ignore_range", "stall"]
)
def test_s3_faults_are_retried_to_the_same_result(s3_collection, s3_proxy, points, fault):
    """The same faults, in S3's form (a 503 is SlowDown), from a proxy in front of the S3
    server."""
    expected = sample_s3(s3_collection, s3_proxy, points)
    s3_proxy.faults.add(S3_TILE, fault, times=2)  # the header read, then a block read
    got = sample_s3(s3_collection, s3_proxy, points)
    assert s3_proxy.faults.planned == []
    assert [f for _, f in s3_proxy.faults.injected[-2:]] == [fault, fault]
    assert got.equals(expected)


def test_s3_refusal_is_not_retried(s3_collection, s3_proxy, points):
    s3_proxy.faults.add(S3_TILE, "403", times=10)
    s3_proxy.log.clear()
    try:
        with pytest.raises(Exception, match=r"tile3-0000000000-0000000000\.tiff: access denied"):
            sample_s3(s3_collection, s3_proxy, points)
        gets = [r for r in s3_proxy.log.ranges(TILE)]
        assert len(gets) < RetryPolicy().attempts
    finally:
        s3_proxy.faults.planned.clear()


def test_s3_requester_pays_is_an_explicit_option(s3_collection, s3_proxy, points):
    """Requests say the requester pays only when asked to (`requester_pays=True`)."""
    for requester_pays in (False, True):
        s3_proxy.log.clear()
        sample_s3(s3_collection, s3_proxy, points, requester_pays=requester_pays)
        reads = [
            h
            for (m, _, _), h in zip(s3_proxy.log.requests, s3_proxy.log.headers, strict=True)
            if m == "GET"
        ]
        assert len(reads) > 3  # the index, a header, blocks
        payers = {h.get("x-amz-request-payer") for h in reads}
        assert payers == ({"requester"} if requester_pays else {None})


def sample_s3(collection, proxy, points, **options):
    return aefsql.sample_points(
        points,
        year=2023,
        catalog=collection.index,
        progress=False,
        storage_options={**proxy.storage_options, **options},
    )


@pytest.mark.parametrize("fault", ["503", "drop", "truncate", "short", "wrong_range"])
def test_a_remote_catalog_is_read_through_the_retrying_store(
    http_collection, http_server, points, expected, fault
):
    """The catalog itself (a whole file) goes through the store: a transient fault on it is
    retried away, as on any block."""
    http_server.faults.add("/index.parquet", fault, times=1)
    got = sample(http_collection.index, points)
    assert http_server.faults.planned == [] and got.equals(expected)


def test_a_catalog_that_changes_while_read_is_read_again(
    http_collection, http_server, points, expected
):
    """Between the catalog's HEAD and its GET the file is rewritten (same rows, other
    bytes: a new ETag): the GET, pinned to the first version, is refused (412) and the
    catalog is read again from the new one; no bytes of two versions are mixed."""
    index = http_collection.folder / "index.parquet"
    original = index.read_bytes()

    def rewrite():
        table = pq.read_table(index)
        pq.write_table(table.replace_schema_metadata({"rewritten": "yes"}), index)

    http_server.faults.add("/index.parquet", rewrite, times=1)
    http_server.log.clear()
    got = sample(http_collection.index, points)
    assert http_server.faults.planned == [] and got.equals(expected)
    gets = [p for m, p, _ in http_server.log.requests if m == "GET" and p.endswith("index.parquet")]
    index.write_bytes(original)
    assert len(gets) == 2  # the refused read and the one from the new version


def test_a_whole_file_over_the_limit_is_refused_unread(http_collection, http_server):
    store = ByteStore()
    http_server.log.clear()
    with pytest.raises(Exception, match=r"index\.parquet is [\d,]+ bytes, over the 100 bytes"):
        store.read_file(http_collection.index, limit=100)
    assert not [m for m, p, _ in http_server.log.requests if m == "GET"]


def read_in_own_process(url: str, options: dict | None = None) -> tuple[str, int]:
    """Bytes 1000-1999 of `url` read by a ByteStore (2 attempts) in a process of its own:
    the outcome ('read', or the error) and that process's peak memory in KiB (VmHWM:
    ru_maxrss would start at the forking parent's peak)."""
    script = (
        "import json\n"
        "from aefsql.storage.store import ByteStore, RetryPolicy\n"
        f"store = ByteStore(json.loads({json.dumps(json.dumps(options or {}))}), "
        "retry=RetryPolicy(attempts=2, base_delay=0.01))\n"
        "try:\n"
        f"    store.read([({url!r}, 1000, 2000)])\n"
        "    print('read')\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
        "print(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    outcome, peak_kib = done.stdout.strip().splitlines()
    return outcome, int(peak_kib)


def test_a_server_that_ignores_range_on_a_big_object_is_not_buffered(http_server, gdal_collection):
    """A 512 MiB object served whole (200) to ranged reads: the reader (in a process of its
    own, to measure its memory) gives up after its attempts without reading the body. It
    buffered every answer before (1 GiB answers: 3.3 GB RSS)."""
    big = gdal_collection.folder.parent / "big-ignoring-range.bin"
    with open(big, "wb") as f:
        f.truncate(512 * 2**20)  # sparse: costs no disk
    url = f"{http_server.base_url}{big.name}"
    http_server.faults.add(big.name, "ignore_range", times=2)
    try:
        outcome, peak_kib = read_in_own_process(url)
    finally:
        big.unlink()
    assert http_server.faults.planned == []
    assert outcome.startswith("RangeReadError") and "ignored the Range request" in outcome
    assert peak_kib < 300 * 1024  # imports and buffers: far below the object's size


def test_an_s3_server_that_ignores_range_on_a_big_object_is_not_buffered(s3, s3_proxy):
    """The same through the S3 path: a 256 MiB object answered whole (200, no ContentRange)
    to a ranged GetObject is a fault whose body is not read."""
    client = s3.client()
    client.create_bucket(Bucket="big-objects")
    client.put_object(Bucket="big-objects", Key="big.bin", Body=bytes(256 * 2**20))
    s3_proxy.faults.add("/big-objects/big.bin", "ignore_range", times=2)
    try:
        outcome, peak_kib = read_in_own_process(
            "s3://big-objects/big.bin", {"s3": s3_proxy.storage_options}
        )
    finally:
        client.delete_object(Bucket="big-objects", Key="big.bin")
    assert s3_proxy.faults.planned == []
    assert outcome.startswith("RangeReadError") and "Content-Range" in outcome
    assert peak_kib < 250 * 1024  # imports and buffers: the object is 256 MiB
