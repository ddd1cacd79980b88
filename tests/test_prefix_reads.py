"""Prefix reads: a block is fetched only as far as its points' rows need, extended when the
estimate falls short. Checked on GDAL-written files, against GDAL's values and tifffile's
block table."""

import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
import tifffile
import zstandard
from affine import Affine
from servers import http_range_server

from aefsql.errors import TiffFormatError
from aefsql.format.codecs import DEFLATE, ZSTD, ShortBlock, _zstd_walk, decode_block, prefix_length
from aefsql.kernels import engine as block_engine
from aefsql.kernels import points
from aefsql.kernels.engine import BlockEngine
from aefsql.storage.store import ByteStore

EPSG, WEST, SOUTH, PIXEL = 32633, 400000.0, 5000000.0, 10.0
BLOCK, BANDS = 1024, 8  # AEF's blocks; fewer bands than its 64 keep the files quick


def landscape(seed: int) -> np.ndarray:
    """int8 (bands, 1024, 4096): four blocks across, each compressing unlike the others:
    smooth structure with noise (as embeddings do, ~2x), pure noise (the codec stores it
    raw), the first with still water in its last rows (its ratio understates what its first
    rows take: a prefix estimated from it falls short) and a constant."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:BLOCK, 0:BLOCK]
    out = np.empty((BANDS, BLOCK, 4 * BLOCK), np.int8)
    for band in range(BANDS):
        smooth = 50 * np.sin(x / (30 + band)) * np.cos(y / (45 + band))
        textured = np.clip(smooth + rng.normal(0, 6, smooth.shape), -127, 127).astype(np.int8)
        water = textured.copy()
        water[600:] = 3  # rows 600.. in file order: the last the decoder meets
        noise = rng.integers(-127, 128, smooth.shape, dtype=np.int8)
        out[band] = np.hstack([textured, noise, water, np.full_like(textured, band)])
    return out


@pytest.fixture(scope="module")
def tiffs(tmp_path_factory) -> dict[str, Path]:
    """The landscape written by GDAL, south-up as the published files, in ZSTD and DEFLATE."""
    folder = tmp_path_factory.mktemp("prefix")
    data = landscape(1)
    paths = {}
    for compression in ("zstd", "deflate"):
        paths[compression] = folder / f"{compression}.tif"
        with rasterio.open(
            paths[compression],
            "w",
            driver="GTiff",
            width=4 * BLOCK,
            height=BLOCK,
            count=BANDS,
            dtype="int8",
            crs=f"EPSG:{EPSG}",
            transform=Affine(PIXEL, 0, WEST, 0, PIXEL, SOUTH),  # south-up
            nodata=-128,
            tiled=True,
            blockxsize=BLOCK,
            blockysize=BLOCK,
            compress=compression.upper(),
            interleave="band",
        ) as ds:
            ds.write(data)
    return paths


def block_table(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, byte counts) of the file's blocks, as tifffile reads them."""
    page = tifffile.TiffFile(path).pages[0]
    return np.asarray(page.dataoffsets), np.asarray(page.databytecounts)


def raw_block(path: Path, block: int) -> bytes:
    offsets, counts = block_table(path)
    with open(path, "rb") as f:
        f.seek(int(offsets[block]))
        return f.read(int(counts[block]))


@pytest.mark.parametrize("compression", ["zstd", "deflate"])
def test_a_prefix_and_its_extensions_decode_the_rows_gdal_reads(tiffs, compression):
    path = tiffs[compression]
    code = ZSTD if compression == "zstd" else DEFLATE
    with rasterio.open(path) as ds:
        gdal = ds.read(5)  # band 5, rows in file order (GDAL keeps them as stored)
    total = BLOCK * BLOCK
    for tile in range(4):
        raw = raw_block(path, 4 * 4 + tile)  # band 5's blocks: four a band
        for rows_needed in (1, 100, 129, 300, 511, 700, 1000, 1024):
            have, got, rounds = b"", 0, 0  # the prefix at hand, the bytes it decoded to
            while True:
                want = prefix_length(len(raw), code, rows_needed * BLOCK, total, have, got)
                assert len(have) < want <= len(raw) or want == len(raw) == len(have)
                have, rounds = raw[:want], rounds + 1
                try:
                    block = decode_block(
                        have,
                        compression=code,
                        predictor=1,
                        rows=BLOCK,
                        cols=BLOCK,
                        samples=1,
                        dtype=np.dtype("i1"),
                        rows_needed=rows_needed,
                    )
                    break
                except ShortBlock as exc:
                    got = exc.decoded
            np.testing.assert_array_equal(
                block[:, :, 0], gdal[:rows_needed, tile * BLOCK : (tile + 1) * BLOCK]
            )
            assert rounds <= 3
            if tile == 0 and rows_needed <= 300:  # the textured block: well short of whole
                assert len(have) < 0.5 * len(raw)


def test_the_zstd_walk_agrees_with_the_decoder(tiffs):
    """Cut anywhere, the stream decodes exactly as far as its last complete block, as the walk
    says; the next block's end is where decoding the next block becomes possible."""
    raw = raw_block(tiffs["zstd"], 16)
    decoded = zstandard.ZstdDecompressor()

    def out(n: int) -> int:
        with decoded.stream_reader(raw[:n]) as reader:
            return len(reader.read(BLOCK * BLOCK + 1))

    for n in np.linspace(0, len(raw), 40).astype(int).tolist():
        complete, next_end = _zstd_walk(raw[:n])
        if n >= 6:
            assert out(complete) == out(n)
        if next_end is not None:
            assert out(next_end) > out(n) and out(next_end - 1) == out(n)


def block_ranges(log, name: str) -> list[tuple[int, int]]:
    ranges = []
    for method, path, byte_range in log.requests:
        if method == "GET" and path.endswith(name):
            start, end = map(int, re.fullmatch(r"bytes=(\d+)-(\d+)", byte_range).groups())
            ranges.append((start, end + 1))
    return sorted(ranges)


def whole_blocks(offsets, counts, tile: int) -> list[tuple[int, int]]:
    """The byte ranges of a tile's band blocks."""
    blocks = [tile + 4 * band for band in range(BANDS)]
    return sorted((int(offsets[b]), int(offsets[b] + counts[b])) for b in blocks)


def points_at(tile, rows, cols) -> tuple[np.ndarray, np.ndarray]:
    """UTM x/y of pixels (row in file order: south-up, row 0 at the south edge)."""
    rows, cols = np.asarray(rows), np.asarray(cols)
    return WEST + (tile * BLOCK + cols + 0.5) * PIXEL, SOUTH + (rows + 0.5) * PIXEL


def gdal_values(path: Path, x, y) -> np.ndarray:
    with rasterio.open(path) as ds:
        return np.array(list(ds.sample(zip(x, y, strict=True))))


def sample_over_http(path: Path, x, y):
    with http_range_server(path.parent) as server:
        url = f"{server.base_url}{path.name}"
        engine = BlockEngine(ByteStore())
        engine.headers.headers_for([url])  # the header read is not what is measured
        server.log.clear()
        bands = list(range(BANDS))
        samples = points.sample(engine, [url] * len(x), x, y, bands, crs=EPSG, keep_blocks=False)
        return samples.values, block_ranges(server.log, path.name)


@pytest.mark.parametrize("compression", ["zstd", "deflate"])
def test_isolated_points_read_less_than_their_blocks(tiffs, compression):
    path = tiffs[compression]
    offsets, counts = block_table(path)
    x, y = points_at(0, [200], [40])  # low in file order, in the textured block
    values, ranges = sample_over_http(path, x, y)
    np.testing.assert_array_equal(values, gdal_values(path, x, y))
    blocks = whole_blocks(offsets, counts, tile=0)
    assert [start for start, _ in ranges] == [start for start, _ in blocks]  # one each
    assert all(end < whole_end for (_, end), (_, whole_end) in zip(ranges, blocks, strict=True))
    read = sum(end - start for start, end in ranges)
    assert read < 0.45 * sum(end - start for start, end in blocks)  # rows 0..200 of 1024


def test_neighbouring_blocks_keep_their_one_request(tiffs):
    """Blocks side by side in the file made one request when read whole: the first is still
    read whole (cut, it would make two requests), the last only as far as its rows."""
    path = tiffs["zstd"]
    offsets, counts = block_table(path)
    x, y = points_at(np.array([0, 1]), [300, 300], [10, 10])
    values, ranges = sample_over_http(path, x, y)
    np.testing.assert_array_equal(values, gdal_values(path, x, y))
    first, second = whole_blocks(offsets, counts, 0), whole_blocks(offsets, counts, 1)
    assert len(ranges) == BANDS
    for (start, end), (first_start, first_end), (second_start, second_end) in zip(
        ranges, first, second, strict=True
    ):
        assert start == first_start and first_end == second_start < end < second_end


def test_points_near_the_end_of_their_block_read_it_whole(tiffs):
    path = tiffs["zstd"]
    offsets, counts = block_table(path)
    x, y = points_at(0, [1000], [5])
    values, ranges = sample_over_http(path, x, y)
    np.testing.assert_array_equal(values, gdal_values(path, x, y))
    assert ranges == whole_blocks(offsets, counts, tile=0)


def test_a_prefix_that_falls_short_is_extended_not_refetched(tiffs):
    """The block with still water in its last rows compresses them to almost nothing: the
    estimate from its ratio falls short of its first rows, and the rest comes in a second
    request that starts where the first ended."""
    path = tiffs["zstd"]
    offsets, counts = block_table(path)
    x, y = points_at(2, [300], [512])
    values, ranges = sample_over_http(path, x, y)
    np.testing.assert_array_equal(values, gdal_values(path, x, y))
    for band in range(BANDS):
        start, size = int(offsets[2 + 4 * band]), int(counts[2 + 4 * band])
        mine = [r for r in ranges if start <= r[0] < start + size]
        assert 2 <= len(mine) <= 3 and mine[0][0] == start
        assert all(a[1] == b[0] for a, b in zip(mine, mine[1:], strict=False))  # no byte twice
        assert mine[-1][1] <= start + size


def test_whole_blocks_when_prefix_reads_are_off(tiffs, monkeypatch):
    """The switch the benchmark compares with: every block read whole, values the same."""
    path = tiffs["zstd"]
    offsets, counts = block_table(path)
    x, y = points_at(0, [200], [40])
    monkeypatch.setattr(block_engine, "PREFIX_READS", False)
    values, ranges = sample_over_http(path, x, y)
    np.testing.assert_array_equal(values, gdal_values(path, x, y))
    assert ranges == whole_blocks(offsets, counts, tile=0)


def test_a_corrupt_block_is_reported_after_reading_it_whole(tiffs, tmp_path):
    """A prefix that does not decode may only be cut short: it is read on to the end, and the
    whole block's failure is the error, named as before."""
    path = tmp_path / "corrupt.tif"
    path.write_bytes(tiffs["zstd"].read_bytes())
    offsets, counts = block_table(path)
    with open(path, "r+b") as f:
        f.seek(int(offsets[0]) + 20)
        f.write(b"\xff" * 64)  # inside the first zstd block of band 0's first tile
    x, y = points_at(0, [200], [40])
    with pytest.raises(TiffFormatError, match="block 0: ZSTD stream is corrupt"):
        sample_over_http(path, x, y)


def test_prefixes_of_other_codecs_and_whole_reads():
    """Uncompressed blocks are cut exactly; LZW blocks (no prefix decoding here) and blocks
    whose every row is needed are read whole."""
    from aefsql.format.codecs import LZW, NONE

    assert prefix_length(4096, NONE, 1000, 4096) == 1000
    assert prefix_length(900, LZW, 10, 4096) == 900
    assert prefix_length(900, ZSTD, 4096, 4096) == 900
    assert prefix_length(900, DEFLATE, 4096, 4096) == 900


def test_a_block_is_read_in_three_parts_at_most(tiffs, monkeypatch):
    """However wrong the estimates (here 1% of what the ratio says), a block comes in at most
    three requests, each starting where the last ended, the third reaching its end."""
    from aefsql.format import codecs

    monkeypatch.setattr(codecs, "PREFIX_SLACK", 0.01)
    path = tiffs["zstd"]
    offsets, counts = block_table(path)
    x, y = points_at(0, [900], [3])
    values, ranges = sample_over_http(path, x, y)
    np.testing.assert_array_equal(values, gdal_values(path, x, y))
    for start, end in whole_blocks(offsets, counts, tile=0):
        mine = [r for r in ranges if start <= r[0] < end]
        assert mine[0][0] == start and len(mine) == 3 and mine[-1][1] == end
        assert all(a[1] == b[0] for a, b in zip(mine, mine[1:], strict=False))


def set_block_table(path: Path, offsets: dict | None = None, counts: dict | None = None):
    """Overwrite entries of the file's TileOffsets/TileByteCounts ({block: value}), as a
    deduplicating writer, a truncated upload or a hostile header would have them."""
    page = tifffile.TiffFile(path).pages[0]
    with open(path, "r+b") as f:
        for name, changes in (("TileOffsets", offsets), ("TileByteCounts", counts)):
            tag = page.tags[name]
            itemsize = {3: 2, 4: 4, 16: 8}[int(tag.dtype)]
            for block, value in (changes or {}).items():
                f.seek(tag.valueoffset + block * itemsize)
                f.write(int(value).to_bytes(itemsize, "little"))


@pytest.mark.parametrize("compression", ["zstd", "deflate"])
def test_a_block_whose_whole_bytes_decode_short_is_a_format_error(tiffs, tmp_path, compression):
    """A byte count that cuts the stream (a truncated block): read whole, it still decodes
    short, and that is the file's format error, named (not a crash of the error itself)."""
    path = tmp_path / f"truncated-{compression}.tif"
    path.write_bytes(tiffs[compression].read_bytes())
    offsets, counts = block_table(path)
    set_block_table(path, counts={0: int(counts[0]) // 2})
    x, y = points_at(0, [1000], [5])  # a row the first half of the stream does not reach
    with pytest.raises(TiffFormatError, match="block 0: block decodes to .* truncated"):
        sample_over_http(path, x, y)


def test_an_uncompressed_prefix_stays_inside_its_block():
    """Rows beyond what the block's byte count holds are never read from the bytes after
    it (another block's, or another object's): the block is read whole and found short."""
    from aefsql.format.codecs import NONE

    assert prefix_length(100, NONE, 1000, 4096) == 100
    assert prefix_length(4096, NONE, 1000, 4096) == 1000


@pytest.mark.parametrize("slack", [1.03, 0.3])
def test_blocks_that_share_their_bytes_read_them_once(tiffs, tmp_path, monkeypatch, slack):
    """Two blocks of the table naming the same bytes (a deduplicating writer, or a hostile
    header): one prefix is read for both, as far as the farther row needs, and extended once;
    both blocks' values are those bytes' values, as GDAL reads them. With a low slack every
    prefix falls short, twice."""
    from aefsql.format import codecs

    monkeypatch.setattr(codecs, "PREFIX_SLACK", slack)
    path = tmp_path / "shared.tif"
    path.write_bytes(tiffs["zstd"].read_bytes())
    offsets, counts = block_table(path)
    tile_2 = [2 + 4 * band for band in range(BANDS)]
    set_block_table(
        path,
        offsets={block + 1: offsets[block] for block in tile_2},  # tile 3 reads tile 2's bytes
        counts={block + 1: counts[block] for block in tile_2},
    )
    x, y = points_at(np.array([2, 3]), [450, 300], [512, 512])
    values, ranges = sample_over_http(path, x, y)
    np.testing.assert_array_equal(values, gdal_values(path, x, y))
    with rasterio.open(path) as ds:  # GDAL agrees: tile 3 now holds tile 2's pixels
        band = ds.read(1)
    np.testing.assert_array_equal(band[:, 3 * BLOCK :], band[:, 2 * BLOCK : 3 * BLOCK])
    for block in tile_2:
        start, size = int(offsets[block]), int(counts[block])
        mine = [r for r in ranges if start <= r[0] < start + size]
        assert mine[0][0] == start and len(mine) <= 3 and mine[-1][1] <= start + size
        assert all(a[1] == b[0] for a, b in zip(mine, mine[1:], strict=False))  # no byte twice


def test_a_cut_block_never_sits_inside_a_request():
    """Blocks A and B (1 MiB each) and C (8 MiB), back to back: read whole, A and B make one
    request and C, over the 4 MiB cap, another, so B and C end requests. B's rows need all but
    its last 30 kB: cut, it would leave a 30 kB gap across which the store merges it with C's
    prefix, fetching B's tail anyway (and again if B's prefix fell short). So B is read whole,
    and only C is cut."""
    from types import SimpleNamespace

    from aefsql.format.codecs import NONE
    from aefsql.storage.ranges import merge_ranges

    mib = 1 << 20

    def read(start, end, needed):
        return SimpleNamespace(
            url="u", byte_range=(start, end), size=end - start,
            decoded_bytes=lambda header: (needed, end - start),
        )  # fmt: skip

    reads = [read(0, mib, mib), read(mib, 2 * mib, mib - 30_000), read(2 * mib, 10 * mib, mib)]
    spans = block_engine.fetch_spans(reads, {"u": SimpleNamespace(compression=NONE)}, keep=False)
    assert spans == [(0, mib), (mib, 2 * mib), (2 * mib, 3 * mib)]
    assert [(m.start, m.end) for m in merge_ranges(spans)] == [(0, 3 * mib)]
