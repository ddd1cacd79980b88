"""The persistent cache: a re-run reads no bytes from the network; a changed file is re-read;
local files are read in place, never copied."""

import errno
import os
import re
import shutil
import stat
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from gdal_fixtures import COLLECTION_TILES, write_collection
from helpers import tile_points
from servers import http_range_server

import aefsql


def gets(log) -> list:
    return [(path, r) for method, path, r in log.requests if method == "GET"]


def run(index: str, cache_dir, lon, lat):
    con = aefsql.connect(catalog=index, cache_dir=str(cache_dir))
    try:
        con.register("p", pa.table({"lon": lon, "lat": lat}))
        return con.sql("SELECT * FROM aef_sample_points('p', years := [2023, 2024])").fetchall()
    finally:
        con.close()


def test_rerun_reads_nothing_and_changed_files_are_reread(tmp_path):
    served = tmp_path / "served"
    write_collection(served / "aef")
    parts = [tile_points(k, 30, seed=k) for k in range(len(COLLECTION_TILES))]
    lon = np.concatenate([p[0] for p in parts])
    lat = np.concatenate([p[1] for p in parts])
    with http_range_server(served) as server:
        index = f"{server.base_url}aef/index.parquet"
        cold = run(index, tmp_path / "cache", lon, lat)
        assert gets(server.log)  # the first run reads the catalog, headers and blocks

        server.log.clear()
        warm = run(index, tmp_path / "cache", lon, lat)
        assert warm == cold
        assert gets(server.log) == []  # only HEADs: each file's version is checked

        # Replace one file's content (same name): its version changes, its bytes are re-read.
        changed = "aef/2024/18S/tile3-0000000000-0000000000.tiff"
        other = "aef/2023/18S/tile3-0000000000-0000000000.tiff"
        shutil.copyfile(served / other, served / changed)
        server.log.clear()
        after = run(index, tmp_path / "cache", lon, lat)
        assert {path.lstrip("/") for path, _ in gets(server.log)} == {changed}
        tile3 = [i for i, row in enumerate(cold) if i // 2 >= 90 and row[2] == 2024]
        assert tile3 and all(after[i][3:] == cold[i - 1][3:] for i in tile3)  # 2023's values
        assert all(after[i] == cold[i] for i in range(len(cold)) if i not in set(tile3))


def test_local_files_are_not_copied_remote_ones_are(gdal_collection, http_collection, tmp_path):
    lon, lat, _, _ = tile_points(0, 20, seed=5)
    local = run(gdal_collection.index, tmp_path / "local", lon, lat)
    remote = run(http_collection.index, tmp_path / "remote", lon, lat)
    assert local == remote and any(row[3] is not None for row in local)

    def cached(folder: Path) -> list:
        return [p.name for p in folder.rglob("*") if p.is_file()]

    assert cached(tmp_path / "local") == []
    assert [name for name in cached(tmp_path / "remote") if re.fullmatch(r"\d+-\d+", name)]


# Entries are bound to their object version and verified; folders are private; a folder that
# cannot be written turns the cache off rather than failing the query.

URL, VERSION = "https://example.com/aef/tile.tiff", 'etag "abc"'


def entry_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if re.fullmatch(r"\d+-\d+|whole", p.name)]


def cold_run(http_collection, folder, lon, lat):
    """The rows of a run filling `folder`, the server's log cleared after it."""
    cold = run(http_collection.index, folder, lon, lat)
    http_collection.log.clear()
    return cold


def test_entries_that_do_not_verify_are_read_again_never_served(http_collection, tmp_path):
    lon, lat, _, _ = tile_points(0, 20, seed=7)
    folder = tmp_path / "cache"
    cold = cold_run(http_collection, folder, lon, lat)
    entries = entry_files(folder)
    assert entries and any(p.name == "whole" for p in entries)  # blocks and the catalog
    for path in entries:  # one bit flipped in each: torn writes, bit rot or tampering
        raw = bytearray(path.read_bytes())
        raw[-1] ^= 1
        path.write_bytes(bytes(raw))
    assert run(http_collection.index, folder, lon, lat) == cold
    fetched = {path for path, _ in gets(http_collection.log)}
    assert any(p.endswith("index.parquet") for p in fetched) and len(fetched) > 1
    http_collection.log.clear()  # the bad entries were replaced by good ones
    assert run(http_collection.index, folder, lon, lat) == cold
    assert gets(http_collection.log) == []


def test_a_file_planted_under_an_entrys_name_is_not_served(tmp_path):
    from aefsql.storage.disk import DiskCache

    cache = DiskCache(tmp_path / "cache")
    planted = cache._path(URL, VERSION, 0, 10)  # the name is predictable from url and version
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.write_bytes(b"0123456789")
    assert cache.get(URL, VERSION, 0, 10) is None
    assert not planted.exists()  # dropped
    # A genuine entry of another file or version, copied under this one's name, is refused.
    cache.put(URL, "etag other", 0, 10, b"abcdefghij")
    cache._path(URL, "etag other", 0, 10).replace(planted)
    assert cache.get(URL, VERSION, 0, 10) is None
    cache.put(URL, VERSION, 0, 10, b"abcdefghij")
    assert cache.get(URL, VERSION, 0, 10) == b"abcdefghij"
    assert cache.get(URL, VERSION, 0, 9) is None


def test_a_folder_at_an_entrys_name_is_a_miss(http_collection, tmp_path):
    """A folder where an entry (a block's bytes, a file's kept values) should be: the run
    reads what it needs from the network and gives the same rows."""
    lon, lat, _, _ = tile_points(3, 5, seed=1)
    folder = tmp_path / "cache"
    cold = cold_run(http_collection, folder, lon, lat)
    for entry in [*folder.rglob("values-*"), *entry_files(folder)]:
        entry.unlink()
        entry.mkdir()
    assert run(http_collection.index, folder, lon, lat) == cold
    assert gets(http_collection.log)  # read again, since nothing could be served


@pytest.mark.parametrize("level", ["key", "prefix"])
def test_a_linked_folder_inside_the_cache_is_never_followed(tmp_path, level):
    """An entry's folders (`aa/<key>/`) replaced by links to a folder outside (a cache copied
    or unpacked from elsewhere): nothing there is read, deleted or written."""
    import numpy as np

    from aefsql.storage.disk import DiskCache, PixelValues, values_entry_name

    cache = DiskCache(tmp_path / "cache")
    name = values_entry_name(0, [0, 1])
    kept = PixelValues(np.array([1, 2]), np.ones((2, 2), np.int8))
    cache.put_values(URL, VERSION, name, kept)
    cache.put(URL, VERSION, 0, 10, b"abcdefghij")
    entry = cache._path(URL, VERSION, 0, 10)
    linked = entry.parent if level == "key" else entry.parent.parent
    outside = tmp_path / "outside"
    shutil.copytree(linked, outside)  # genuine entries, now outside the cache
    shutil.rmtree(linked)
    linked.symlink_to(outside, target_is_directory=True)
    before = sorted(p.relative_to(outside) for p in outside.rglob("*"))
    assert cache.get(URL, VERSION, 0, 10) is None
    assert cache.get_values(URL, VERSION, name, 2) is None
    cache.put(URL, VERSION, 10, 20, b"0123456789")
    cache.put_values(URL, VERSION, name, kept)
    assert sorted(p.relative_to(outside) for p in outside.rglob("*")) == before


def test_what_the_cache_creates_is_private_whatever_the_umask(http_collection, tmp_path):
    lon, lat, _, _ = tile_points(1, 10, seed=3)
    folder = tmp_path / "parent" / "cache"
    old = os.umask(0)
    try:
        run(http_collection.index, folder, lon, lat)
    finally:
        os.umask(old)
    assert entry_files(folder)
    for path in [folder, *folder.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))


def test_a_cache_folder_others_can_write_is_refused(http_collection, tmp_path):
    from aefsql.storage.disk import check_cache_folder

    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o777)
    with pytest.raises(aefsql.AefsqlError, match=rf"{re.escape(str(folder))}.*chmod 700"):
        aefsql.connect(catalog=http_collection.index, cache_dir=str(folder))
    folder.chmod(0o700)
    aefsql.connect(catalog=http_collection.index, cache_dir=str(folder)).close()

    def fake_stat(uid, mode):
        return os.stat_result((stat.S_IFDIR | mode, 0, 0, 2, uid, 0, 4096, 0, 0, 0))

    check_cache_folder(folder, fake_stat(1000, 0o700), uid=1000)
    with pytest.raises(aefsql.AefsqlError, match="another user.*cache_dir"):
        check_cache_folder(folder, fake_stat(1001, 0o700), uid=1000)
    with pytest.raises(aefsql.AefsqlError, match="chmod 700"):
        check_cache_folder(folder, fake_stat(1000, 0o720), uid=1000)


def cache_warnings(record) -> list[str]:
    return [str(w.message) for w in record if "cache" in str(w.message)]


@pytest.mark.parametrize(
    "fails, code",
    [("rename", errno.ENOSPC), ("rename", errno.EDQUOT), ("create", errno.EROFS)]
    + [("create", errno.EACCES)],
)
def test_a_cache_folder_that_cannot_be_written_turns_the_cache_off_with_one_warning(
    http_collection, tmp_path, monkeypatch, fails, code
):
    """A full disk fails the rename, a read-only folder the creation of any file (simulated:
    tests may run as root, whom permissions do not stop)."""
    lon, lat, _, _ = tile_points(2, 20, seed=11)
    expected = run(http_collection.index, tmp_path / "roomy", lon, lat)
    folder = tmp_path / "unwritable"
    replace, open_, calls = os.replace, os.open, []

    def failure(path):
        calls.append(path)
        return OSError(code, os.strerror(code), str(path))

    def rename(src, dst, *args, **kwargs):
        if fails == "rename" and str(folder) in str(dst):
            raise failure(dst)
        return replace(src, dst, *args, **kwargs)

    def create(path, flags, *args, **kwargs):  # reads go on
        if fails == "create" and flags & os.O_CREAT and str(folder) in str(path):
            raise failure(path)
        return open_(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "replace", rename)
    monkeypatch.setattr(os, "open", create)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert run(http_collection.index, folder, lon, lat) == expected
    messages = cache_warnings(record)
    assert len(messages) == 1 and str(folder) in messages[0]
    assert os.strerror(code) in messages[0]
    assert len(calls) == 1  # off after the first failure
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_read_only_cache_folder_serves_what_it_holds_and_warns_once(http_collection, tmp_path):
    lon, lat, _, _ = tile_points(3, 20, seed=13)
    folder = tmp_path / "cache"
    cold = run(http_collection.index, folder, lon, lat)
    for path in [folder, *folder.rglob("*")]:
        if path.is_dir():
            path.chmod(0o500)
    try:
        http_collection.log.clear()
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            assert run(http_collection.index, folder, lon, lat) == cold  # all held: no write
            more_lon, more_lat, _, _ = tile_points(0, 20, seed=17)
            run(http_collection.index, folder, more_lon, more_lat)  # new entries: cannot write
        assert len(cache_warnings(record)) == 1 and str(folder) in cache_warnings(record)[0]
        assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]
    finally:
        for path in [folder, *folder.rglob("*")]:
            if path.is_dir():
                path.chmod(0o700)


def test_a_rerun_decodes_nothing_and_other_bands_keep_their_own(
    http_collection, tmp_path, monkeypatch
):
    """Whole-table jobs keep the values they read per file version and pixel: a re-run
    decodes no block. Another band list has its own entry; a corrupt entry is decoded anew."""
    from aefsql.kernels import engine as block_engine

    decoded = []
    real = block_engine.decode_block
    monkeypatch.setattr(
        block_engine, "decode_block", lambda *a, **k: decoded.append(1) or real(*a, **k)
    )
    parts = [tile_points(k, 25, seed=30 + k) for k in range(len(COLLECTION_TILES))]
    lon = np.concatenate([p[0] for p in parts])
    lat = np.concatenate([p[1] for p in parts])
    folder = tmp_path / "cache"
    cold = cold_run(http_collection, folder, lon, lat)
    assert decoded  # the counter sees the cold run's decoding
    decoded.clear()
    http_collection.log.clear()
    assert run(http_collection.index, folder, lon, lat) == cold
    assert decoded == [] and gets(http_collection.log) == []

    def two_bands():
        con = aefsql.connect(catalog=http_collection.index, cache_dir=str(folder))
        con.register("p", pa.table({"lon": lon, "lat": lat}))
        sql = "SELECT A00, A63 FROM aef_sample_points('p', years := 2023, bands := ['A00', 'A63'])"
        try:
            return con.sql(sql).fetchall()
        finally:
            con.close()

    first = two_bands()
    assert decoded  # its own entry: read once
    assert first == [(row[3], row[66]) for row in cold if row[2] == 2023]
    decoded.clear()
    assert two_bands() == first and decoded == []
    # One point more: only its blocks are decoded, the kept points' values are taken.
    more_lon, more_lat, _, _ = tile_points(0, 1, seed=99)
    grown = run(http_collection.index, folder, np.append(lon, more_lon), np.append(lat, more_lat))
    assert grown[: len(cold)] == cold
    assert 0 < len(decoded) <= 2 * 64  # the new point's block, a band, in each year
    decoded.clear()
    kept = list(folder.rglob("values-*"))
    assert len(kept) == 2 * len(COLLECTION_TILES) + len(COLLECTION_TILES)  # 64 bands, and 2
    for path in kept:
        raw = bytearray(path.read_bytes())
        raw[-1] ^= 1
        path.write_bytes(bytes(raw))
    assert run(http_collection.index, folder, lon, lat) == cold
    assert len(decoded) > 2 * 64  # the corrupt entries were not served


def test_kept_values_are_read_one_file_at_a_time(tmp_path):
    """A job over many files holds the kept entry of one file at a time (an entry may be up
    to 256 MiB), never every file's at once."""
    import tracemalloc
    from types import SimpleNamespace

    from aefsql.kernels.points import _KeptValues
    from aefsql.storage.disk import DiskCache, PixelValues, values_entry_name

    files, pixels, bands = 8, 50_000, 64
    cache, name = DiskCache(tmp_path / "cache"), values_entry_name(0, list(range(bands)))
    headers = {}
    for k in range(files):
        url = f"https://example.com/aef/tile{k}.tiff"
        headers[url] = SimpleNamespace(width=8192, version=f'etag "{k}"')
        kept = PixelValues(np.arange(pixels) * 7, np.full((pixels, bands), k, np.int8))
        cache.put_values(url, headers[url].version, name, kept)
    entry_bytes = kept.pixels.nbytes + kept.values.nbytes
    del kept
    located = [(url, np.array([k]), np.array([0]), np.array([7])) for k, url in enumerate(headers)]
    values = np.zeros((files, bands), np.int8)
    tracemalloc.start()
    try:
        left = _KeptValues(cache, headers, name, bands).fill(located, values)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert left == [] and (values == np.arange(files)[:, None]).all()  # all kept, all served
    assert peak < 3 * entry_bytes  # one entry's bytes and arrays; eight were held before
