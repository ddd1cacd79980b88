"""aefsql follows no HTTP redirect: the origin policy checks the URLs a catalog names, and a
server answering 302 would otherwise have aefsql read another origin's bytes, send it the
user's custom headers, or connect to cloud metadata. Every request aefsql makes through
fsspec's HTTP filesystem (HEAD, ranged GET, whole file, fsspec's own reads) is sent without
following redirects; a 3xx is an error naming the URL and where it pointed."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import tile_points
from servers import http_range_server

import aefsql
from aefsql.errors import RangeReadError
from aefsql.storage.fetch import RedirectRefused, Request
from aefsql.storage.store import ByteStore

KEY = {"X-Api-Key": "secret-key-4711"}


@pytest.fixture(scope="module")
def origin(gdal_collection):
    """The catalog's server (its folder holds the collection)."""
    with http_range_server(gdal_collection.folder.parent) as server:
        yield server


@pytest.fixture(scope="module")
def elsewhere(gdal_collection):
    """Another origin (another port) serving the same files: followed, a redirect would read
    valid bytes there, silently."""
    with http_range_server(gdal_collection.folder.parent) as server:
        yield server


@pytest.fixture
def redirected(origin, elsewhere):
    """Every tile request to `origin` answered with a 302 to `elsewhere`; both logs empty."""
    origin.log.clear()
    elsewhere.log.clear()
    origin.redirects[".tiff"] = elsewhere.base_url
    yield
    origin.redirects.clear()


def index_url(server, gdal_collection) -> str:
    return f"{server.base_url}{gdal_collection.folder.name}/index.parquet"


def points(lon, lat) -> pa.Table:
    return pa.table({"lon": np.atleast_1d(lon), "lat": np.atleast_1d(lat)})


def first_point():
    lon, lat, _, _ = tile_points(0, 1, seed=5)
    return float(lon[0]), float(lat[0])


def test_the_catalog_reads_tiles_without_redirects(origin, gdal_collection):
    """The baseline: the same catalog and tiles, served without redirect, are read."""
    con = aefsql.connect(
        catalog=index_url(origin, gdal_collection), storage_options={"headers": KEY}
    )
    try:
        assert con.execute("SELECT aef_embedding(?, ?, 2023)", first_point()).fetchone()[0]
    finally:
        con.close()


def test_a_tile_redirect_to_another_origin_is_not_followed(
    origin, elsewhere, gdal_collection, redirected
):
    con = aefsql.connect(
        catalog=index_url(origin, gdal_collection), storage_options={"headers": KEY}
    )
    try:
        with pytest.raises(Exception, match="redirect") as error:
            con.execute("SELECT aef_embedding(?, ?, 2023)", first_point()).fetchall()
    finally:
        con.close()
    message = str(error.value)
    assert "302" in message and "does not follow redirects" in message
    assert elsewhere.base_url in message  # where it pointed, and which tile
    assert ".tiff" in message
    # Nothing was asked of the other origin, so the key never reached it; the origin had it.
    assert elsewhere.log.total == 0
    requests = zip(origin.log.requests, origin.log.headers, strict=True)
    tile_requests = [h for (_, p, _), h in requests if ".tiff" in p]
    assert tile_requests and all(h.get("x-api-key") == KEY["X-Api-Key"] for h in tile_requests)


def test_on_error_null_covers_a_redirected_tile(origin, elsewhere, gdal_collection, redirected):
    lon, lat = first_point()
    rows = aefsql.sample_points(
        points(lon, lat), years=2023, catalog=index_url(origin, gdal_collection), on_error="null"
    )
    assert rows["A00"].to_pylist() == [None]
    assert "does not follow redirects" in rows["aef_error"][0].as_py()
    assert elsewhere.log.total == 0


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_every_request_kind_refuses_a_redirect(origin, elsewhere, gdal_collection, status):
    """HEAD (a file's version), a ranged GET, a whole file (catalogs, collections, shards),
    and fsspec's own reads through the store's filesystem: none follows."""
    origin.log.clear()
    elsewhere.log.clear()
    url = index_url(origin, gdal_collection)
    origin.redirects["index.parquet"] = elsewhere.base_url
    origin.handler.redirect_status = status
    try:
        store = ByteStore(options={"http": {"headers": KEY}})
        with pytest.raises(RedirectRefused, match=f"answered {status}"):
            store.versions([url])
        with pytest.raises(RedirectRefused, match=f"answered {status}"):
            store.read_ranges([Request(url, 0, 16, None)])
        with pytest.raises(RedirectRefused, match=f"answered {status}"):
            ByteStore(options={"http": {"headers": KEY}}).read_file(url)
        with pytest.raises(RedirectRefused, match=f"answered {status}"):
            store.filesystem(url).cat_file(url)
        with pytest.raises(Exception, match="CatalogError: .*does not follow redirects"):
            aefsql.connect(catalog=url, storage_options={"headers": KEY}).execute(
                "SELECT count(*) FROM aef_index()"
            ).fetchall()
    finally:
        origin.redirects.clear()
        origin.handler.redirect_status = 302
    assert elsewhere.log.total == 0


def test_the_storage_options_cannot_turn_redirects_back_on(
    origin, elsewhere, gdal_collection, redirected
):
    con = aefsql.connect(
        catalog=index_url(origin, gdal_collection),
        storage_options={"headers": KEY, "allow_redirects": True},
    )
    try:
        with pytest.raises(Exception, match="does not follow redirects"):
            con.execute("SELECT aef_embedding(?, ?, 2023)", first_point()).fetchall()
    finally:
        con.close()
    assert elsewhere.log.total == 0


def _ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("spelling", ["127.1", "2130706433", "0x7f000001", "localhost", "[::1]"])
def test_a_redirect_to_a_loopback_spelling_is_not_followed(
    origin, gdal_collection, spelling, tmp_path
):
    """The origin redirects to a server on this machine spelled otherwise: nothing is asked
    of it (it would serve the same tile)."""
    if spelling == "[::1]" and not _ipv6_loopback():
        pytest.skip("no IPv6 loopback")
    host = "::1" if spelling == "[::1]" else "127.0.0.1"
    with http_range_server(gdal_collection.folder.parent, host=host) as target:
        port = target.base_url.rsplit(":", 1)[1]
        origin.log.clear()
        origin.redirects[".tiff"] = f"http://{spelling}:{port}"
        try:
            lon, lat = first_point()
            with pytest.raises(RangeReadError, match="does not follow redirects"):
                aefsql.sample_points(
                    points(lon, lat),
                    years=2023,
                    catalog=index_url(origin, gdal_collection),
                    storage_options={"headers": KEY},
                )
        finally:
            origin.redirects.clear()
        assert target.log.total == 0


# -- cloud metadata, in a network namespace with no route out ---------------------------

NAMESPACE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[1])
    from pathlib import Path
    import pyarrow as pa, pyarrow.parquet as pq
    from servers import http_range_server
    import aefsql

    folder = Path(sys.argv[2])
    pq.write_table(
        pa.table({"fid": [1], "year": [2023], "path": ["t.tiff"], "wgs84_west": [1.0],
                  "wgs84_south": [1.0], "wgs84_east": [1.5], "wgs84_north": [1.5]}),
        folder / "index.parquet",
    )
    (folder / "t.tiff").write_bytes(b"not reached")
    # The metadata service's address, on this namespace's loopback interface: a connection
    # aefsql makes there is seen in its log.
    with http_range_server(folder, host="169.254.169.254", port=80) as metadata, \\
            http_range_server(folder) as origin:
        origin.redirects[".tiff"] = "http://169.254.169.254/latest/meta-data/"
        try:
            aefsql.sample_points(pa.table({"lon": [1.2], "lat": [1.2]}), years=2023,
                                 catalog=origin.base_url + "index.parquet",
                                 storage_options={"headers": {"X-Api-Key": "secret"}})
            error = None
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        print(json.dumps({"error": error, "metadata_requests": metadata.log.requests}))
    """
)


def test_a_redirect_to_cloud_metadata_connects_nowhere(tmp_path):
    """In a network namespace with no route out (only loopback, the metadata address added
    to it so that a connection would be seen), a tile answered with a 302 to
    169.254.169.254 makes no request there."""
    setup = "ip link set lo up && ip addr add 169.254.169.254/32 dev lo"
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("unshare or ip is not installed")
    probe = subprocess.run(["unshare", "-rn", "sh", "-c", setup], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no network namespace here: {probe.stderr.decode().strip()}")
    tests = str(Path(__file__).parent)
    command = f'{setup} && exec "$0" -c "$1" "$2" "$3"'
    run = subprocess.run(
        [
            "unshare",
            "-rn",
            "sh",
            "-c",
            command,
            sys.executable,
            NAMESPACE_SCRIPT,
            tests,
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    outcome = json.loads(run.stdout.strip().splitlines()[-1])
    assert outcome["metadata_requests"] == []
    assert "does not follow redirects" in outcome["error"]
    assert "169.254.169.254" in outcome["error"]


def test_values_are_unchanged_without_redirects(origin, gdal_collection):
    """The options that refuse redirects change nothing else: values equal the local
    catalog's."""
    lon, lat, _, _ = tile_points(1, 20, seed=9)
    remote = aefsql.sample_points(
        points(lon, lat), years=2023, catalog=index_url(origin, gdal_collection)
    )
    local = aefsql.sample_points(points(lon, lat), years=2023, catalog=gdal_collection.index)
    assert remote.equals(local)
    assert remote["A00"].null_count < len(lon)


def test_duckdb_reads_through_the_registered_filesystem_follow_no_redirect(tmp_path):
    """A points file read by DuckDB (read_parquet on the catalog's protocol goes through the
    fsspec filesystem aefsql registers) is refused, not read from the other server."""
    one_tile = {"fid": [1], "year": [2023], "path": ["t.tiff"], "wgs84_west": [1.0]}
    one_tile.update({"wgs84_south": [1.0], "wgs84_east": [1.5], "wgs84_north": [1.5]})
    pq.write_table(pa.table(one_tile), tmp_path / "index.parquet")
    pq.write_table(pa.table({"lon": [1.2], "lat": [1.2]}), tmp_path / "points.parquet")
    with http_range_server(tmp_path) as catalog_host, http_range_server(tmp_path) as other:
        catalog_host.redirects["points.parquet"] = other.base_url
        con = aefsql.connect(catalog=catalog_host.base_url + "index.parquet")
        try:
            with pytest.raises(Exception, match="does not follow redirects"):
                con.execute(
                    f"SELECT * FROM read_parquet('{catalog_host.base_url}points.parquet')"
                ).fetchall()
        finally:
            con.close()
        assert other.log.total == 0
