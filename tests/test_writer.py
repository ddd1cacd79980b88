"""aefsql's writer, read back by independent readers (GDAL through rasterio, and tifffile)."""

import io

import numpy as np
import pytest
import rasterio
import tifffile

import aefsql
from aefsql import writer
from aefsql.geometry import geo
from aefsql.writer import encode_aef_cog, encode_map_cog, write_aef_cog

CASES = [
    dict(compression="zstd", predictor=1, bigtiff=False, south_up=True, epsg=32633),
    dict(compression="zstd", predictor=2, bigtiff=True, south_up=True, epsg=32733),
    dict(compression="deflate", predictor=1, bigtiff=True, south_up=False, epsg=32610),
    dict(compression="deflate", predictor=2, bigtiff=False, south_up=False, epsg=32718),
]


def sample_data(rows=150, cols=170, bands=64, seed=0) -> np.ndarray:
    data = np.random.default_rng(seed).integers(-127, 128, (bands, rows, cols), dtype=np.int8)
    data[:, 10:30, 20:50] = -128
    return data


def transform_for(south_up: bool, rows: int):
    if south_up:
        return (10.0, 0.0, 500000.0, 0.0, 10.0, 4000000.0)
    return (10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0 + rows * 10.0)


def reference_overview(data: np.ndarray, factor: int) -> np.ndarray:
    """Mean of the valid pixels of each factor x factor cell, written out plainly."""
    bands, rows, cols = data.shape
    out = np.empty((bands, -(-rows // factor), -(-cols // factor)), dtype=np.int8)
    for r in range(out.shape[1]):
        for c in range(out.shape[2]):
            cell = data[:, r * factor : (r + 1) * factor, c * factor : (c + 1) * factor]
            cell = cell.reshape(bands, -1).astype(float)
            valid = cell != -128
            n = valid.sum(axis=1)
            mean = np.rint(np.where(valid, cell, 0).sum(axis=1) / np.maximum(n, 1))
            out[:, r, c] = np.where(n > 0, mean, -128)
    return out


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_gdal_reads_what_the_writer_wrote(tmp_path, case):
    data = sample_data()
    path = tmp_path / "w.tif"
    write_aef_cog(
        path,
        data,
        epsg=case["epsg"],
        transform=transform_for(case["south_up"], 150),
        block_size=64,
        compression=case["compression"],
        predictor=case["predictor"],
        bigtiff=case["bigtiff"],
        overview_levels=(2, 4),
    )
    with rasterio.open(path) as ds:
        assert np.array_equal(ds.read(), data)
        assert ds.crs.to_epsg() == case["epsg"]
        assert tuple(ds.transform)[:6] == transform_for(case["south_up"], 150)
        assert ds.nodata == -128
        assert ds.descriptions == tuple(f"A{i:02d}" for i in range(64))
        assert ds.overviews(1) == [2, 4]
        assert ds.profile["interleave"] == "band"
        assert (ds.profile["blockxsize"], ds.profile["blockysize"]) == (64, 64)
        if case["south_up"]:
            # The southern-most row is row 0: y just above the origin lies in row 0.
            assert ds.index(500005.0, 4000005.0) == (0, 0)
    for k, factor in enumerate((2, 4)):  # 4 is pooled from 2's sums: the same means
        with rasterio.open(path, overview_level=k) as ov:
            assert np.array_equal(ov.read(), reference_overview(data, factor))
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert tif.is_bigtiff == case["bigtiff"]
        assert page.planarconfig == 2 and page.predictor == case["predictor"]
        assert page.compression == {"zstd": 50000, "deflate": 8}[case["compression"]]
        assert "ModelTransformationTag" in page.tags and "ModelPixelScaleTag" not in page.tags
        assert np.array_equal(page.asarray(), data)
        # Every IFD lies before the first block: one header read sees the whole structure.
        first_block = min(min(p.dataoffsets) for p in tif.pages)
        assert all(p.offset < first_block for p in tif.pages)


def test_writer_output_is_reproducible_and_small_headers_fit_the_first_read():
    data = sample_data(rows=64, cols=64, bands=64)
    kw = dict(epsg=32633, transform=transform_for(True, 64), block_size=32)
    raw = encode_aef_cog(data, **kw)
    assert raw == encode_aef_cog(data, **kw)
    with tifffile.TiffFile(io.BytesIO(raw)) as tif:
        assert min(tif.pages[0].dataoffsets) < 64 * 1024


@pytest.mark.parametrize(
    "data, options, message",
    [
        (np.zeros((2, 8, 8), np.int16), {}, "must be int8"),
        (np.zeros((8, 8), np.int8), {}, "must be int8 shaped"),
        (np.zeros((2, 8, 8), np.int8), {"compression": "lzw"}, "compression must be one of"),
        (np.zeros((2, 8, 8), np.int8), {"predictor": 3}, "predictor must be 1 or 2"),
        (np.zeros((2, 8, 8), np.int8), {"block_size": 100}, "multiple of 16"),
        (np.zeros((2, 8, 8), np.int8), {"band_names": ["A00"]}, "1 band names for 2 bands"),
    ],
)
def test_bad_arguments_are_refused(data, options, message):
    with pytest.raises(ValueError, match=message):
        encode_aef_cog(data, epsg=32633, transform=transform_for(True, 8), **options)


def test_bigtiff_when_the_file_needs_it(tmp_path, monkeypatch):
    """Unless told, a file is BigTIFF exactly when a classic TIFF's 32-bit offsets cannot
    hold it, counting what is written: overviews and compressed blocks (before: a map was
    BigTIFF by its level-0 values' size alone, and a large map with overviews overflowed)."""
    data = sample_data(rows=150, cols=170, bands=4)
    kw = dict(epsg=32633, transform=transform_for(True, 150), block_size=64)
    small = encode_aef_cog(data, **kw)
    assert small[2:4] == bytes([42, 0])  # classic
    monkeypatch.setattr(writer, "CLASSIC_LAST_OFFSET", len(small) - 1)  # one byte too few
    for name, raw in (
        ("aef.tif", encode_aef_cog(data, **kw)),
        ("map.tif", encode_map_cog(data, nodata=-128, **kw)),
    ):
        assert raw[2:4] == bytes([43, 0]), name  # BigTIFF
        (tmp_path / name).write_bytes(raw)
        with rasterio.open(tmp_path / name) as ds:
            assert np.array_equal(ds.read(), data)
            assert ds.overviews(1) == [2, 4]
    monkeypatch.setattr(writer, "CLASSIC_LAST_OFFSET", len(small))  # just enough
    assert encode_aef_cog(data, **kw)[2:4] == bytes([42, 0])


def test_an_index_of_a_tile_across_the_antimeridian_is_one_the_catalog_reads(tmp_path):
    """A tile overhanging 180° gets wgs84_west > wgs84_east, as the catalog reads such a tile
    (it wrote -179.99 .. 179.99, which the catalog refuses as wider than a tile can be)."""
    from aefsql.writer import TileEntry, write_index

    x, y = geo.transform_points(geo.WGS84, 32760, np.array([179.99]), np.array([-16.0]))
    west, south = float(x[0]) - 1500.0, float(y[0]) - 1300.0
    tile = TileEntry(2023, "2023/60S/t.tiff", 32760, west, south, west + 3000.0, south + 2600.0)
    index = write_index(tmp_path / "index.parquet", [tile])
    with aefsql.connect(catalog=str(index)) as con:
        ((w, e),) = con.sql("SELECT wgs84_west, wgs84_east FROM aef_index()").fetchall()
        located = con.sql(
            "SELECT aef_locate(179.99, -16.0, 2023), aef_locate(-179.998, -16.0, 2023)"
        ).fetchall()
    assert 179.9 < w < 180.0 and -180.0 < e < -179.9
    assert all(path is not None and path.endswith("2023/60S/t.tiff") for path in located[0])
