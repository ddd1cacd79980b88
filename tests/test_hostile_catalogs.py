"""A catalog is untrusted input: where its tile paths may point (a same-origin policy, as in
a browser) and which lon/lat bounds it may give a tile. Both are checked where paths are
normalized, before any tile is read."""

import json
import math
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import tile_points
from servers import http_range_server

import aefsql
from aefsql.catalog import index as catalog
from aefsql.catalog import origins
from aefsql.errors import CatalogError
from aefsql.storage.store import ByteStore

REMOTE = "https://example.com/aef/index.parquet"
BUCKET = "s3://bucket/aef/index.parquet"
LOOPBACK = "http://127.0.0.1:8000/aef/index.parquet"
LOCAL = "/data/aef/index.parquet"


# -- the policy, as a pure function: no network is needed to normalize ------------------


@pytest.mark.parametrize(
    "catalog_url, path",
    [
        (REMOTE, "https://example.com/aef/2023/a.tiff"),
        (REMOTE, "https://EXAMPLE.com./a.tiff"),  # host names are case- and dot-insensitive
        (REMOTE, "https://example.com:443/a.tiff"),  # the default port is the same origin
        (BUCKET, "s3://bucket/elsewhere/a.tiff"),
        (BUCKET, "s3a://bucket/a.tiff"),  # s3a is s3
        ("s3://data.2024/index.parquet", "s3://data.2024/a.tiff"),  # a bucket, no address
        (LOOPBACK, "http://127.0.0.1:8000/aef/a.tiff"),  # a local server may name itself
        (LOCAL, "/elsewhere/a.tiff"),
        (LOCAL, "file:///elsewhere/a.tiff"),
        (LOCAL, "s3://public-bucket/a.tiff"),  # a local index of a public bucket is normal
        (LOCAL, "https://data.example.org/a.tiff"),
        (LOCAL, "http://localhost:9000/a.tiff"),  # e.g. a MinIO on this machine
        ("file:///data/aef/index.parquet", "http://10.0.0.5/a.tiff"),
    ],
)
def test_same_origin_and_local_catalogs_name_tiles_freely(catalog_url, path):
    origins.check_origin(path, catalog_url, None)


@pytest.mark.parametrize(
    "path, reason",
    [
        ("file:///etc/passwd", "local file"),
        ("/etc/passwd", "local file"),
        ("FILE:///etc/passwd", "local file"),
        ("http://169.254.169.254/latest/meta-data", "metadata or link-local"),
        ("http://metadata.google.internal/computeMetadata/v1/", "metadata or link-local"),
        ("http://metadata/computeMetadata/v1/", "metadata or link-local"),
        ("http://[fd00:ec2::254]/latest/meta-data", "metadata or link-local"),
        ("http://100.100.100.200/latest/meta-data", "metadata or link-local"),
        ("http://169.254.1.2/a.tiff", "metadata or link-local"),
        ("http://[fe80::1]/a.tiff", "metadata or link-local"),
        # Other spellings of 169.254.169.254 that a resolver accepts.
        ("http://2852039166/latest/meta-data", "metadata or link-local"),
        ("http://0xa9.0xfe.0xa9.0xfe/latest/meta-data", "metadata or link-local"),
        ("http://[::ffff:169.254.169.254]/latest/meta-data", "metadata or link-local"),
        ("http://[64:ff9b::a9fe:a9fe]/latest/meta-data", "metadata or link-local"),  # NAT64
        ("http://localhost:1/x.tiff", "loopback"),
        ("http://127.0.0.1/a.tiff", "loopback"),
        ("http://127.1/a.tiff", "loopback"),
        ("http://[::1]/a.tiff", "loopback"),
        ("http://0.0.0.0/a.tiff", "loopback"),
        ("http://10.0.0.5/a.tiff", "private"),
        ("http://192.168.1.1/a.tiff", "private"),
        ("https://other.example.org/a.tiff", "allowed_hosts="),
        ("https://example.com.evil.test/a.tiff", "allowed_hosts="),
        ("http://example.com/a.tiff", "allowed_hosts="),  # another scheme
        ("https://example.com:8443/a.tiff", "allowed_hosts="),  # another port
        ("s3://example.com/a.tiff", "allowed_hosts="),
        # Read as example.com here but as evil.test by a browser-like URL parser.
        ("https://evil.test\\@example.com/a.tiff", "not a well-formed host"),
        ("https://exa%6dple.com/a.tiff", "not a well-formed host"),
    ],
)
def test_a_remote_catalog_names_only_its_own_origin(path, reason):
    with pytest.raises(CatalogError, match=reason):
        origins.check_origin(path, REMOTE, None)


def test_buckets_are_origins():
    with pytest.raises(CatalogError, match=r"allowed_hosts=\['other-bucket'\]"):
        origins.check_origin("s3://other-bucket/a.tiff", BUCKET, None)
    with pytest.raises(CatalogError, match="allowed_hosts="):
        origins.check_origin("gs://bucket/a.tiff", BUCKET, None)
    origins.check_origin("s3://other-bucket/a.tiff", BUCKET, ["other-bucket"])


def test_the_allow_list_opens_other_hosts_only():
    allowed = ["other.example.org", "127.0.0.1", "169.254.169.254", "localhost"]
    origins.check_origin("https://other.example.org/a.tiff", REMOTE, allowed)
    origins.check_origin("http://OTHER.example.org:8080/a.tiff", REMOTE, allowed)
    origins.check_origin("http://127.0.0.1:9000/a.tiff", LOOPBACK, allowed)  # another port
    with pytest.raises(CatalogError, match="allowed_hosts="):
        origins.check_origin("http://127.0.0.1:9000/a.tiff", LOOPBACK, None)
    # What no allow-list opens: metadata, local files, and inward from a public host.
    for path in (
        "http://169.254.169.254/latest/meta-data",
        "file:///etc/passwd",
        "http://localhost:1/x.tiff",
        "http://127.0.0.1/a.tiff",
    ):
        with pytest.raises(CatalogError):
            origins.check_origin(path, REMOTE, allowed)
    with pytest.raises(CatalogError, match="metadata or link-local"):
        origins.check_origin("http://169.254.169.254/latest/meta-data", LOOPBACK, allowed)
    with pytest.raises(CatalogError, match="metadata or link-local"):
        origins.check_origin("http://169.254.169.254/latest/meta-data", LOCAL, allowed)


@pytest.mark.parametrize("entry", ["https://example.com/", "example.com:8080", "a b", ""])
def test_allow_list_entries_are_host_names(tmp_path, entry):
    index = write_index(tmp_path / "index.parquet")
    with pytest.raises(CatalogError, match="allowed_hosts"):
        aefsql.connect(catalog=index, allowed_hosts=[entry])
    with pytest.raises(CatalogError, match="allowed_hosts"):
        aefsql.connect(catalog=index, allowed_hosts="example.com")  # a list, not a string


# -- remote catalogs, served over HTTP: refused on first use, before any tile is read ---


@pytest.fixture(scope="module")
def catalog_server(tmp_path_factory):
    """A second HTTP server (another port than http_server's: another origin) and the folder
    it serves."""
    folder = tmp_path_factory.mktemp("hostile-catalogs")
    with http_range_server(folder) as server:
        yield server, folder


def serve_index(catalog_server, name: str, **overrides) -> str:
    """Write an index into the catalog server's folder; its URL."""
    server, folder = catalog_server
    write_index(folder / name, **overrides)
    return f"{server.base_url}{name}"


@pytest.mark.parametrize(
    "bad, shown",
    [
        ("file:///etc/passwd", "file:///etc/passwd"),
        ("/etc/passwd", "/etc/passwd"),
        ("http://169.254.169.254/latest/meta-data", "http://169.254.169.254/latest/meta-data"),
        ("https://other.example.org/a.tiff?X-Amz-Signature=SECRET", "other.example.org/a.tiff"),
    ],
)
def test_a_remote_catalog_naming_what_it_may_not_fails_on_first_use(catalog_server, bad, shown):
    server, _ = catalog_server
    url = serve_index(catalog_server, "bad-origin.parquet", path=["a.tiff", bad, "c.tiff"])
    server.log.clear()
    con = aefsql.connect(catalog=url)
    try:
        for query in ("SELECT count(*) FROM aef_index()", "SELECT aef_locate(1.2, 1.2, 2023)"):
            with pytest.raises(Exception, match="row 2") as error:
                con.execute(query).fetchall()
            message = str(error.value)
            assert shown in message and "SECRET" not in message
    finally:
        con.close()
    # The catalog was read; no tile was.
    assert {path for _, path, _ in server.log.requests} == {"/bad-origin.parquet"}


@pytest.fixture(scope="module")
def expected(http_collection):
    """Embeddings at points of tile 0 read through the collection's own (relative) catalog."""
    lon, lat, _, _ = tile_points(0, 5, seed=3)
    return lon, lat, embeddings(aefsql.connect(catalog=http_collection.index), lon, lat)


def embeddings(con, lon, lat) -> list:
    try:
        return [
            con.execute("SELECT aef_embedding(?, ?, 2023)", [x, y]).fetchone()[0]
            for x, y in zip(lon, lat, strict=True)
        ]
    finally:
        con.close()


def absolute_catalog(http_collection, tile_base: str, target) -> None:
    """The collection's catalog with every path an absolute URL under tile_base."""
    table = pq.read_table(http_collection.folder / "index.parquet")
    paths = [tile_base + p for p in table["path"].to_pylist()]
    table = table.set_column(table.schema.get_field_index("path"), "path", pa.array(paths))
    pq.write_table(table, target)


def test_same_origin_absolute_paths_are_read(http_collection, http_server, expected):
    lon, lat, values = expected
    folder = http_collection.folder.parent / "same-origin"
    folder.mkdir(exist_ok=True)
    base = http_collection.index.rsplit("/", 1)[0] + "/"
    absolute_catalog(http_collection, base, folder / "index.parquet")
    url = f"{http_server.base_url}same-origin/index.parquet"
    assert embeddings(aefsql.connect(catalog=url), lon, lat) == values
    assert all(v is not None for v in values)


def test_another_host_needs_allowed_hosts(http_collection, catalog_server, expected):
    lon, lat, values = expected
    server, folder = catalog_server
    base = http_collection.index.rsplit("/", 1)[0] + "/"  # http_server: another port
    absolute_catalog(http_collection, base, folder / "cross.parquet")
    url = f"{server.base_url}cross.parquet"
    con = aefsql.connect(catalog=url)
    try:
        with pytest.raises(Exception, match=r"row 1: .*allowed_hosts=\['127.0.0.1'\]"):
            con.execute("SELECT count(*) FROM aef_index()").fetchall()
    finally:
        con.close()
    allowed = aefsql.connect(catalog=url, allowed_hosts=["127.0.0.1"])
    assert embeddings(allowed, lon, lat) == values


def test_a_remote_catalog_bad_bounds_fail_on_first_use(catalog_server):
    url = serve_index(catalog_server, "bad-bounds.parquet", wgs84_south=[1.0, math.nan, 3.0])
    con = aefsql.connect(catalog=url)
    try:
        with pytest.raises(Exception, match=r"row 2: .*south=nan"):
            con.execute("SELECT aef_locate(1.2, 1.2, 2023)").fetchall()
    finally:
        con.close()


# -- local catalogs: checked at registration ------------------------------------------


def write_index(target, row_group_size=None, **overrides) -> str:
    columns = {
        "fid": [1, 2, 3],
        "year": [2023, 2023, 2023],
        "path": ["a.tiff", "b.tiff", "c.tiff"],
        "wgs84_west": [1.0, 2.0, 3.0],
        "wgs84_south": [1.0, 2.0, 3.0],
        "wgs84_east": [1.5, 2.5, 3.5],
        "wgs84_north": [1.5, 2.5, 3.5],
    }
    columns.update(overrides)
    table = pa.table(
        {
            name: pa.array(values, pa.float64()) if name.startswith("wgs84") else values
            for name, values in columns.items()
        }
    )
    pq.write_table(table, target, row_group_size=row_group_size)
    return str(target)


def test_a_local_catalog_names_local_files_and_urls(tmp_path):
    paths = [str(tmp_path / "elsewhere" / "a.tiff"), "s3://public/b.tiff", "https://h/c.tiff"]
    index = write_index(tmp_path / "index.parquet", path=paths)
    con = aefsql.connect(catalog=index)
    try:
        assert [
            r[0] for r in con.execute("SELECT path FROM aef_index() ORDER BY fid").fetchall()
        ] == paths
    finally:
        con.close()


def test_a_local_catalog_naming_metadata_fails_at_registration(tmp_path):
    index = write_index(
        tmp_path / "index.parquet", path=["a.tiff", "b.tiff", "http://169.254.169.254/x"]
    )
    with pytest.raises(CatalogError, match=r"row 3: .*169\.254\.169\.254.*metadata"):
        aefsql.connect(catalog=index)


NAN, INF = math.nan, math.inf


@pytest.mark.parametrize(
    "west, south, east, north, reason",
    [
        (None, 2.0, 2.5, 2.5, "NULL"),
        (2.0, NAN, 2.5, 2.5, "NaN"),
        (2.0, 2.0, INF, 2.5, "infinite"),
        (2.0, 2.0, 2.5, -INF, "infinite"),
        (2.0, 2.5, 2.5, 2.0, "south > north"),
        (2.0, 90.5, 2.5, 91.0, r"latitude outside \[-90, 90\]"),
        (2.0, -95.0, 2.5, -89.5, r"latitude outside \[-90, 90\]"),
        (180.5, 2.0, 181.0, 2.5, r"longitude outside \[-180, 180\]"),
        (-200.0, 2.0, -179.5, 2.5, r"longitude outside \[-180, 180\]"),
        (-180.0, -90.0, 180.0, 90.0, "(taller|wider) than 20"),  # the whole world
        (2.0, 2.0, 25.0, 2.5, "wider than 20"),
        (2.0, 2.0, 2.5, 30.0, "taller than 20"),
        (10.0, 2.0, 5.0, 2.5, "antimeridian"),  # west > east: 355° wide across 180
    ],
)
def test_wrong_bounds_fail_at_registration_naming_the_row(
    tmp_path, west, south, east, north, reason
):
    # Rows 1 and 3 are good tiles; row 2 has the bounds under test.
    index = write_index(
        tmp_path / "index.parquet",
        wgs84_west=[1.0, west, 3.0],
        wgs84_south=[1.0, south, 3.0],
        wgs84_east=[1.5, east, 3.5],
        wgs84_north=[1.5, north, 3.5],
    )
    with pytest.raises(CatalogError, match=rf"row 2: bounds .*{reason}") as error:
        aefsql.connect(catalog=index)
    shown = "NULL" if west is None else repr(float(west))
    assert f"west={shown}, south=" in str(error.value)


def test_the_row_number_counts_across_row_groups(tmp_path):
    index = write_index(tmp_path / "index.parquet", row_group_size=1, wgs84_north=[1.5, 2.5, 95.0])
    with pytest.raises(CatalogError, match=r"row 3: bounds .*north=95\.0"):
        aefsql.connect(catalog=index)


def test_a_box_across_the_antimeridian_is_a_tile(tmp_path):
    index = write_index(
        tmp_path / "index.parquet",
        wgs84_west=[1.0, 179.6, 3.0],
        wgs84_east=[1.5, -179.7, 3.5],
    )
    aefsql.connect(catalog=index).close()
    tiles = catalog.Catalog(index, ByteStore()).tiles()
    assert 1 in tiles.candidates(2023, 179, 2) and 1 in tiles.candidates(2023, -180, 2)


def test_the_shell_takes_allow_host(http_collection, catalog_server, expected):
    """`aefsql --allow-host HOST` is `allowed_hosts=[HOST]`: refused without, read with."""
    lon, lat, values = expected
    server, folder = catalog_server
    base = http_collection.index.rsplit("/", 1)[0] + "/"
    absolute_catalog(http_collection, base, folder / "cross-cli.parquet")
    url = f"{server.base_url}cross-cli.parquet"
    query = f"SELECT aef_embedding({lon[0]}, {lat[0]}, 2023).A05"
    command = [sys.executable, "-m", "aefsql.cli", "--catalog", url, "-csv", "-c", query]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "allowed_hosts" in refused.stderr
    allowed = subprocess.run(
        [*command, "--allow-host", "127.0.0.1"], capture_output=True, text=True, timeout=120
    )
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.splitlines()[1] == str(values[0]["A05"])


# -- catalogs that repeat a file, or leave out its year ---------------------------------


def repeated_catalog(http_collection, tile_base: str, target, spelling=lambda p: p) -> None:
    """The collection's catalog with paths under tile_base (absolute, or relative when
    tile_base is ""), and its first row again at the end (another fid), its path spelled
    `spelling(path)`."""
    absolute_catalog(http_collection, tile_base, target)
    table = pq.read_table(target)
    extra = table.slice(0, 1).to_pylist()[0]
    extra["fid"] = max(table["fid"].to_pylist()) + 1
    extra["path"] = spelling(extra["path"])
    pq.write_table(pa.concat_tables([table, pa.Table.from_pylist([extra], table.schema)]), target)


def area_of_tile_0() -> list[float]:
    lon, lat, _, _ = tile_points(0, 1, seed=11)
    lon, lat = float(lon[0]), float(lat[0])
    return [lon - 0.002, lat - 0.002, lon + 0.002, lat + 0.002]


def test_a_local_catalog_naming_a_file_twice_fails_at_registration(http_collection, tmp_path):
    target = tmp_path / "index.parquet"
    repeated_catalog(http_collection, str(http_collection.folder) + "/", target)
    n = pq.read_metadata(target).num_rows
    with pytest.raises(CatalogError, match=rf"rows 1 and {n} name the same file for 2023"):
        aefsql.connect(catalog=str(target))


def test_two_spellings_of_one_file_are_the_same_file(http_collection):
    """`a.tiff` and `./a.tiff` resolve to one path: refused as well."""
    folder = http_collection.folder.parent / "repeated-relative"
    folder.mkdir(exist_ok=True)
    for name in ("2023", "2024"):  # the tiles, beside the catalog (links: no copy)
        if not (folder / name).exists():
            (folder / name).symlink_to(http_collection.folder / name)
    repeated_catalog(http_collection, "", folder / "index.parquet", lambda p: "./" + p)
    n = pq.read_metadata(folder / "index.parquet").num_rows
    with pytest.raises(CatalogError, match=rf"rows 1 and {n} name the same file for 2023"):
        aefsql.connect(catalog=str(folder / "index.parquet"))


def envelope_table(con, area) -> None:
    """A table `parcels` of one WKT polygon: the box `area`."""
    w, s, e, n = area
    ring = f"{w} {s}, {e} {s}, {e} {n}, {w} {n}, {w} {s}"
    con.execute(f"CREATE TABLE parcels AS SELECT 'POLYGON(({ring}))' AS geom")


@pytest.mark.parametrize(
    "query",
    [
        "SELECT count(*) FROM aef_pixels({area}, years := 2023)",
        "SELECT pixels FROM aef_zonal('parcels', years := 2023)",
    ],
    ids=["aef_pixels", "aef_zonal"],
)
def test_a_remote_catalog_naming_a_file_twice_fails_every_function(
    http_collection, catalog_server, query
):
    """Followed, such a catalog doubled each pixel of aef_pixels and each count of
    aef_zonal: it is refused, the rows named, by whichever function reads it first."""
    server, folder = catalog_server
    base = http_collection.index.rsplit("/", 1)[0] + "/"
    repeated_catalog(http_collection, base, folder / "repeated.parquet")
    n = pq.read_metadata(folder / "repeated.parquet").num_rows
    area = area_of_tile_0()
    url = f"{server.base_url}repeated.parquet"
    con = aefsql.connect(catalog=url, allowed_hosts=["127.0.0.1"])
    try:
        envelope_table(con, area)
        with pytest.raises(Exception, match=rf"rows 1 and {n} name the same file for 2023"):
            con.execute(query.format(area=area)).fetchall()
    finally:
        con.close()


def test_the_same_catalog_without_the_repeat_counts_each_pixel_once(
    http_collection, catalog_server
):
    """The baseline of the test above: its catalog less the repeated row is read, and
    aef_pixels gives as many rows as aef_zonal counts pixels."""
    server, folder = catalog_server
    base = http_collection.index.rsplit("/", 1)[0] + "/"
    absolute_catalog(http_collection, base, folder / "once.parquet")
    area = area_of_tile_0()
    con = aefsql.connect(catalog=f"{server.base_url}once.parquet", allowed_hosts=["127.0.0.1"])
    try:
        envelope_table(con, area)
        pixels = con.execute(f"SELECT count(*) FROM aef_pixels({area}, years := 2023)")
        pixels = pixels.fetchone()[0]
        zonal = con.execute("SELECT pixels FROM aef_zonal('parcels', years := 2023)").fetchone()[0]
        distinct = con.execute(
            f"SELECT count(DISTINCT location) FROM aef_pixels({area}, years := 2023)"
        ).fetchone()[0]
    finally:
        con.close()
    assert pixels == zonal == distinct > 0


def test_a_null_year_is_refused_naming_the_row(tmp_path, catalog_server):
    index = write_index(tmp_path / "index.parquet", year=[2023, None, 2023])
    with pytest.raises(CatalogError, match=r"row 2: year is NULL"):
        aefsql.connect(catalog=index)
    url = serve_index(catalog_server, "null-year.parquet", year=[2023, 2023, None])
    con = aefsql.connect(catalog=url)
    try:
        for query in ("SELECT aef_locate(1.2, 1.2, 2023)", "SELECT count(*) FROM aef_index()"):
            with pytest.raises(Exception, match=r"row 3: year is NULL"):
                con.execute(query).fetchall()
    finally:
        con.close()


def test_a_null_year_prints_no_warning(tmp_path):
    """Its tile table used to be built with numpy's cast warning on stderr."""
    index = write_index(tmp_path / "index.parquet", year=[2023, None, 2023])
    script = (
        "import aefsql\n"
        "from aefsql.catalog.index import Catalog\n"
        "from aefsql.storage.store import ByteStore\n"
        f"try: Catalog({str(index)!r}, ByteStore()).tiles()\n"
        "except aefsql.CatalogError as e: print(e)\n"
    )
    run = subprocess.run(
        [sys.executable, "-W", "default", "-c", script], capture_output=True, text=True
    )
    assert "year is NULL" in run.stdout and run.stderr == ""


# -- catalogs too large to decode: bounded from the footer, before any row is decoded ----


def constant_catalog(target, rows: int, path: str = "2023/33N/tile.tiff") -> None:
    """`rows` identical rows (no fid: aefsql numbers them): a few hundred KB of Parquet."""
    chunk = min(rows, 500_000)
    schema = pa.schema(
        [("year", pa.int32()), ("path", pa.string())]
        + [(name, pa.float64()) for name in catalog.WGS84_SIDES]
    )
    constant = {
        "year": pa.array(np.full(chunk, 2023, np.int32)),
        "path": pa.DictionaryArray.from_arrays(np.zeros(chunk, np.int32), [path]).cast(pa.string()),
        **{
            name: np.full(chunk, value)
            for name, value in zip(catalog.WGS84_SIDES, (12.0, 45.0, 12.75, 45.75), strict=True)
        },
    }
    with pq.ParquetWriter(target, schema, compression="zstd") as out:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            out.write_table(pa.table({k: v[:n] for k, v in constant.items()}, schema=schema))


def test_a_catalog_over_the_row_bound_is_refused_and_the_bound_raised(tmp_path, monkeypatch):
    index = write_index(tmp_path / "index.parquet")
    monkeypatch.setenv("AEFSQL_MAX_CATALOG_ROWS", "2")
    with pytest.raises(CatalogError, match=r"has 3 rows, over the 2 .*AEFSQL_MAX_CATALOG_ROWS"):
        aefsql.connect(catalog=index)
    monkeypatch.setenv("AEFSQL_MAX_CATALOG_ROWS", "3")
    aefsql.connect(catalog=index).close()
    monkeypatch.setenv("AEFSQL_MAX_CATALOG_ROWS", "many")
    with pytest.raises(CatalogError, match="AEFSQL_MAX_CATALOG_ROWS='many': expected a positive"):
        aefsql.connect(catalog=index)


def test_a_long_value_repeated_by_its_dictionary_is_bounded(tmp_path, catalog_server):
    """120,000 rows naming one 10 KB path: 1.2 GB once decoded, in a file of a few hundred
    KB (the value is stored once, in the column's dictionary): refused before it is expanded, local
    (at registration) or remote (on first use)."""
    target = tmp_path / "index.parquet"
    constant_catalog(target, 120_000, path="a" * 10_000 + ".tiff")
    assert target.stat().st_size < 1_000_000
    refusal = r"decodes to 1,2[\d,]+ bytes, over the 1,073,741,824 .*AEFSQL_MAX_CATALOG_BYTES"
    with pytest.raises(CatalogError, match=refusal):
        aefsql.connect(catalog=str(target))
    server, folder = catalog_server
    constant_catalog(folder / "long-paths.parquet", 120_000, path="a" * 10_000 + ".tiff")
    con = aefsql.connect(catalog=f"{server.base_url}long-paths.parquet")
    try:
        with pytest.raises(Exception, match=refusal):
            con.execute("SELECT aef_locate(12.3, 45.3, 2023)").fetchall()
    finally:
        con.close()


BOMB_SCRIPT = """
import json, sys
import aefsql
con = aefsql.connect(catalog=sys.argv[1])
outcome = []
for query in ("SELECT count(*) FROM aef_index()", "SELECT aef_locate(12.3, 45.3, 2023)"):
    try:
        con.execute(query).fetchall()
        outcome.append("read")
    except Exception as exc:
        outcome.append(str(exc))
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"outcome": outcome, "peak_kb": peak}))
"""


def test_a_remote_catalog_bomb_is_refused_from_its_footer(catalog_server):
    """3 million identical rows in a few hundred KB, over HTTP: aef_index() and aef_locate
    refuse it naming the bound, and the process (a child: its peak memory is its own) stays
    small. Decoded, it took tens of seconds and gigabytes."""
    server, folder = catalog_server
    constant_catalog(folder / "bomb.parquet", 3_000_000)
    assert (folder / "bomb.parquet").stat().st_size < 1_000_000
    run = subprocess.run(
        [sys.executable, "-c", BOMB_SCRIPT, f"{server.base_url}bomb.parquet"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    for message in result["outcome"]:
        assert "has 3,000,000 rows, over the 2,000,000" in message
        assert "AEFSQL_MAX_CATALOG_ROWS" in message
    # The bound does not depend on this figure's precision: decoded, the catalog alone
    # took gigabytes.
    assert result["peak_kb"] < 600 * 1024


def test_repeats_are_per_year_and_counted(tmp_path):
    """The same file in two years is two tiles (no pixel read twice for one year); three rows
    of one file are named, and further repeated files counted."""
    index = write_index(
        tmp_path / "two-years.parquet", year=[2023, 2024, 2023], path=["a.tiff", "a.tiff", "c.tiff"]
    )
    aefsql.connect(catalog=index).close()
    index = write_index(
        tmp_path / "thrice.parquet",
        fid=[1, 2, 3, 4, 5, 6],
        year=[2023] * 6,
        path=["b.tiff", "a.tiff", "./a.tiff", "c.tiff", "a.tiff", "c.tiff"],
        **{side: [1.0, 1.0, 1.0, 1.0, 1.0, 1.0] for side in ("wgs84_west", "wgs84_south")},
        **{side: [1.5] * 6 for side in ("wgs84_east", "wgs84_north")},
    )
    with pytest.raises(
        CatalogError, match=r"rows 2, 3, 5 name the same file for 2023, .*/a\.tiff: .*1 more file"
    ):
        aefsql.connect(catalog=index)


def test_a_catalog_zone_the_file_contradicts_is_refused_naming_both(gdal_collection, tmp_path):
    """The catalog's zone decides which tile owns a place at a seam; a catalog that puts a
    33N file in 32N made another tile own some of its pixels, unsaid (8 pixels of a box
    across 12°E changed hands). Now the file's header refuses it, naming both zones; the
    other files read as ever."""
    table = pq.read_table(gdal_collection.index)
    paths = table["path"].to_pylist()
    crs = table["crs"].to_pylist()
    wrong = next(k for k, c in enumerate(crs) if c == "EPSG:32633")
    crs[wrong] = "EPSG:32632"
    table = table.set_column(table.column_names.index("crs"), "crs", pa.array(crs))
    if "utm_zone" in table.column_names:
        zones = table["utm_zone"].to_pylist()
        zones[wrong] = "32N"
        table = table.set_column(table.column_names.index("utm_zone"), "utm_zone", pa.array(zones))
    absolute = [p if p.startswith("/") else f"{gdal_collection.folder}/{p}" for p in paths]
    table = table.set_column(table.column_names.index("path"), "path", pa.array(absolute))
    index = tmp_path / "index.parquet"
    pq.write_table(table, index)
    year = table["year"][wrong].as_py()
    box = "[11.99, 44.99, 12.01, 45.01]"
    with aefsql.connect(catalog=str(index)) as con:
        with pytest.raises(
            Exception, match=r"the catalog puts it in UTM zone 32N, its header in EPSG:32633"
        ):
            con.sql(f"SELECT count(*) FROM aef_pixels({box}, years := {year})").fetchall()
        (other,) = {y for y in table["year"].to_pylist() if y != year}
        query = f"SELECT count(*) FROM aef_pixels({box}, years := {other})"
        assert con.sql(query).fetchall()[0][0] > 0
