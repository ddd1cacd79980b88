"""The in-memory caches keep to their byte budgets, and sampling stays right when they drop
entries: a dropped header is read again, or rebuilt from a headers file."""

import dataclasses
import gc
import weakref

import numpy as np
from helpers import TILES, points_in_every_tile, tile_ranges_of

from aefsql.format.tiff import BlockTable
from aefsql.headers.table import HeadersFile, headers_to_table
from aefsql.kernels import points
from aefsql.kernels.engine import BlockEngine
from aefsql.storage.memory import BlockCache, HeaderCache
from aefsql.storage.store import ByteStore


def test_block_cache_drops_least_recently_used_within_its_budget():
    cache = BlockCache(max_bytes=3000)
    blocks = {k: np.full(1000, k, np.int8) for k in range(4)}
    for k in range(3):
        cache.put(("f", k), blocks[k])
    cache.get(("f", 0))  # now the most recently used
    cache.put(("f", 3), blocks[3])
    assert cache.nbytes == 3000
    assert cache.get(("f", 1)) is None  # the least recently used went
    assert all(cache.get(("f", k)) is not None for k in (0, 2, 3))
    cache.put(("f", 9), np.zeros(5000, np.int8))  # larger than the whole budget: not kept
    assert cache.get(("f", 9)) is None and cache.nbytes == 3000


def test_header_cache_drops_least_recently_used_within_its_budget(gdal_collection):
    paths = [str(gdal_collection.folder / tile) for tile in TILES]
    headers = BlockEngine(ByteStore()).headers.headers_for(paths)
    size = headers[paths[0]].nbytes
    assert size > 1024 and all(h.nbytes == size for h in headers.values())
    cache = HeaderCache(max_bytes=2 * size)
    for path in paths[:2]:
        cache.put(path, headers[path])
    cache.get(paths[0])
    cache.put(paths[2], headers[paths[2]])
    assert len(cache) == 2 and cache.nbytes == 2 * size
    assert cache.get(paths[1]) is None and cache.get(paths[0]) is headers[paths[0]]
    cache.discard(paths[0], version="another version")  # replaced meanwhile: kept
    assert cache.get(paths[0]) is not None
    cache.discard(paths[0], version=headers[paths[0]].version)
    assert cache.get(paths[0]) is None and cache.nbytes == size


def test_sampling_with_room_for_one_header_reads_the_others_again(http_collection):
    base = http_collection.index.rsplit("/", 1)[0]
    urls = [f"{base}/{tile}" for tile in TILES]
    tile, lon, lat = points_in_every_tile()
    roomy = BlockEngine(ByteStore())
    cramped = BlockEngine(ByteStore(), header_cache=HeaderCache(max_bytes=1))
    expected = points.sample(roomy, np.array(urls, object)[tile], lon, lat)
    http_collection.log.clear()
    for _ in range(2):  # the second round finds at most one header cached
        got = points.sample(cramped, np.array(urls, object)[tile], lon, lat)
        assert np.array_equal(got.values, expected.values)
        assert np.array_equal(got.covered, expected.covered)
    assert len(cramped.headers.cache) == 1
    header_reads = sum(tile_ranges_of(http_collection.log, t).count((0, 65536)) for t in TILES)
    assert header_reads >= 2 * len(TILES) - 1  # all in the first round, all but one after


def test_a_collection_rebuilds_dropped_headers_without_reading_them(http_collection):
    base = http_collection.index.rsplit("/", 1)[0]
    urls = [f"{base}/{tile}" for tile in TILES]
    tile, lon, lat = points_in_every_tile()
    table = headers_to_table(BlockEngine(ByteStore()).headers.complete(urls))
    engine = BlockEngine(ByteStore(), header_cache=HeaderCache(max_bytes=1))
    engine.headers.file = HeadersFile(table)
    expected = points.sample(BlockEngine(ByteStore()), np.array(urls, object)[tile], lon, lat)
    http_collection.log.clear()
    for _ in range(2):
        got = points.sample(engine, np.array(urls, object)[tile], lon, lat)
        assert np.array_equal(got.values, expected.values)
    assert all((0, 65536) not in tile_ranges_of(http_collection.log, t) for t in TILES)
    assert any(tile_ranges_of(http_collection.log, t) for t in TILES)  # blocks were read


def test_block_cache_counts_the_memory_a_view_keeps_alive():
    cache = BlockCache(max_bytes=4 << 20)
    tile = np.zeros(1 << 20, np.uint8)  # a decoded tile; the cache is given views of it
    cache.put(("f", 0), tile[:1000])  # a sliver: kept as a copy, the tile is not held
    assert cache.nbytes == 1000
    tile_alive = weakref.ref(tile)
    del tile
    gc.collect()
    assert tile_alive() is None
    tile = np.zeros(1 << 20, np.uint8)
    cache.put(("f", 1), tile[: 700 << 10])  # most of it: kept as is, the whole tile counted
    assert cache.nbytes == 1000 + (1 << 20)
    raw = b"\0" * 10_000  # decoded straight from the bytes read
    cache.put(("f", 2), np.frombuffer(memoryview(raw)[:9000], np.uint8))
    assert cache.nbytes == 1000 + (1 << 20) + 10_000
    small = BlockCache(max_bytes=1_000_000)
    small.put(("f", 3), tile[: 700 << 10])  # holds 1 MiB: over the budget, not kept
    assert small.get(("f", 3)) is None and small.nbytes == 0


def test_header_cache_counts_the_memory_of_block_tables(gdal_collection):
    path = str(gdal_collection.folder / TILES[0])
    header = BlockEngine(ByteStore()).headers.headers_for([path])[path]
    count = header.block_offsets.size
    # Tables that view a larger buffer hold all of it.
    buffer = np.arange(1 << 20, dtype=np.uint64)
    viewing = dataclasses.replace(
        header,
        block_offsets=BlockTable(count, np.dtype("<u8"), 0, buffer[:count]),
        block_byte_counts=BlockTable(count, np.dtype("<u8"), 0, buffer[count : 2 * count]),
    )
    cache = HeaderCache()
    cache.put("own", header)
    own = cache.nbytes
    tables = (header.block_offsets, header.block_byte_counts)
    assert own >= sum(t.values.nbytes + t.loaded.nbytes for t in tables)
    cache.put("viewing", viewing)
    assert cache.nbytes - own >= buffer.nbytes
    cache.put("viewing", header)  # replaced: its own size counted, not the old one's
    assert cache.nbytes == 2 * own


def test_pixel_values_round_trip_and_refuse_what_is_not_an_entry():
    from aefsql.storage.disk import VALUES_PREFIX, PixelValues

    kept = PixelValues(np.zeros(0, np.int64), np.zeros((0, 2), np.int8))
    found, _ = kept.lookup(np.array([1, 2]))
    assert not found.any()
    kept = kept.merged(np.array([9, 3]), np.array([[1, -128], [2, 7]], np.int8))
    kept = kept.merged(np.array([3, 4]), np.array([[5, 5], [6, 6]], np.int8))  # 3 read again
    assert kept.pixels.tolist() == [3, 4, 9]
    assert kept.values.tolist() == [[5, 5], [6, 6], [1, -128]]
    found, at = kept.lookup(np.array([4, 5, 9]))
    assert found.tolist() == [True, False, True] and kept.values[at[found]].tolist() == [
        [6, 6],
        [1, -128],
    ]
    data = kept.encode()
    assert kept.nbytes == len(data)  # what put_values checks against its limit, unencoded
    again = PixelValues.decode(data, 2)
    assert again.pixels.tolist() == [3, 4, 9] and again.values.tolist() == kept.values.tolist()
    assert PixelValues.decode(data, 3) is None  # another band list
    assert PixelValues.decode(data[:-1], 2) is None  # torn
    assert PixelValues.decode(data + b"\0", 2) is None
    unsorted = VALUES_PREFIX.pack(2, 1) + np.array([4, 3], ">i8").tobytes() + b"\1\2"
    assert PixelValues.decode(unsorted, 1) is None
    huge = VALUES_PREFIX.pack(2**60, 64)  # a count no entry can hold: refused, not allocated
    assert PixelValues.decode(huge, 64) is None
