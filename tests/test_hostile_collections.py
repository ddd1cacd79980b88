"""Collections are untrusted: a record that is not a usable header (Rasteret's, or a row of
aefsql's own), a path with two records, or an unreadable shard is not used, with a warning
naming the file and why, and that file's header is read from the file: values stay GDAL's.
A shard is read from the collection's folder only, however its path is spelt."""

import shutil
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import (
    RASTERET_FILES,
    RASTERET_FIXTURE,
    band_matrix,
    gdal_values,
    rasteret_gdal,
    rasteret_points,
    rasteret_values,
    tile_points,
    with_rasteret_fixture,
)
from servers import http_range_server

import aefsql
from aefsql.errors import TiffFormatError
from aefsql.headers.table import header_from_row
from aefsql.session import open_session

NORTHUP = f"collection/tiffs/{RASTERET_FILES[2024]}"


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """The Rasteret fixture under collection/, and a catalog of its two files."""
    return with_rasteret_fixture(tmp_path_factory.mktemp("hostile-rasteret"))


def records(root: Path) -> pa.Table:
    """2024's Rasteret record, its path absolute."""
    table = pq.read_table(next((RASTERET_FIXTURE / "year=2024").rglob("*.parquet")))
    paths = [str(root / "collection" / p) for p in table["path"].to_pylist()]
    return table.set_column(table.schema.get_field_index("path"), "path", pa.array(paths))


def with_band(table: pa.Table, band: int, **changes) -> pa.Table:
    """`table` with these fields of band `band`'s struct changed."""
    name = f"A{band:02d}_metadata"
    column = table.schema.get_field_index(name)
    rows = [{**r, **changes} for r in table[name].to_pylist()]
    field = table.schema.field(column)
    return table.set_column(column, field, pa.array(rows, type=field.type))


def with_all_bands(table: pa.Table, **changes) -> pa.Table:
    for band in range(64):
        table = with_band(table, band, **changes)
    return table


def export_folder(folder: Path, *tables: pa.Table) -> Path:
    """A folder in Rasteret's export layout holding these record files."""
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "year=2024").mkdir(parents=True)
    for k, table in enumerate(tables):
        pq.write_table(table, folder / "year=2024" / f"part-{k}.parquet")
    return folder


def assert_gdal_values(root: Path, collection: str, **options) -> None:
    table, x, y = rasteret_points(2024, n=40, seed=9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # asserted by the callers
        got = aefsql.sample_points(
            table,
            years=2024,
            catalog=str(root / "index.parquet"),
            headers=collection,
            progress=False,
            **options,
        )
    assert (rasteret_values(got) == rasteret_gdal(2024, x, y)).all()


def _tile_offsets(table: pa.Table, band: int) -> list[int]:
    return table[f"A{band:02d}_metadata"].to_pylist()[0]["tile_offsets"]


def _tile_byte_counts(table: pa.Table, band: int) -> list[int]:
    return table[f"A{band:02d}_metadata"].to_pylist()[0]["tile_byte_counts"]


# (change to 2024's record, what the warning says)
RASTERET_RECORDS = {
    "negative offset": (
        lambda t: with_band(t, 0, tile_offsets=[-5] + _tile_offsets(t, 0)[1:]),
        "block_offsets holds -5",
    ),
    "negative byte count": (
        lambda t: with_band(t, 3, tile_byte_counts=[-5] + _tile_byte_counts(t, 3)[1:]),
        "block_byte_counts holds -5",
    ),
    "null in the transform": (
        lambda t: with_all_bands(t, transform=[None, 500000.0, -10.0, 4001500.0]),
        "transform holds None",
    ),
    "zero pixel size": (
        lambda t: with_all_bands(t, transform=[0.0, 500000.0, -10.0, 4001500.0]),
        "zero pixel size",
    ),
    "unknown compression": (lambda t: with_all_bands(t, compression=99), "compression"),
    "unknown dtype": (lambda t: with_all_bands(t, dtype="complex128"), "sample type"),
    "planar 3": (lambda t: with_all_bands(t, planar_configuration=3), "PlanarConfiguration 3"),
    "a band's table one entry long, the next one short": (
        lambda t: with_band(
            with_band(
                t,
                0,
                tile_offsets=_tile_offsets(t, 0) + _tile_offsets(t, 1)[:1],
                tile_byte_counts=_tile_byte_counts(t, 0) + _tile_byte_counts(t, 1)[:1],
            ),
            1,
            tile_offsets=_tile_offsets(t, 1)[1:],
            tile_byte_counts=_tile_byte_counts(t, 1)[1:],
        ),
        "differ in length",
    ),
    "40,000 samples in one struct": (
        lambda t: with_band(
            t.drop_columns([f"A{b:02d}_metadata" for b in range(1, 64)]),
            0,
            samples_per_pixel=40000,
            planar_configuration=1,
            image_width=1,
            image_height=1,
            tile_width=1,
            tile_height=1,
            tile_offsets=_tile_offsets(t, 0)[:1],
            tile_byte_counts=_tile_byte_counts(t, 0)[:1],
        ),
        "40000 samples per pixel",
    ),
}


@pytest.mark.parametrize("case", RASTERET_RECORDS)
def test_a_rasteret_record_that_is_no_header_is_not_used(root, tmp_path, case):
    change, why = RASTERET_RECORDS[case]
    folder = export_folder(tmp_path / "hostile", change(records(root)))
    with pytest.warns(UserWarning, match=rf"2024-northup\.tif: .*{why}.*own header is read"):
        session = open_session(str(root / "index.parquet"), headers=str(folder))
    assert session.engine.headers.file.get(str(root / NORTHUP)) is None
    assert_gdal_values(root, str(folder))


def published(folder: Path, shard: pa.Table | bytes, paths) -> Path:
    """A published-layout collection: index.parquet naming data/part-0.parquet as the shard
    of `paths`, which holds `shard` (records, or bytes)."""
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "data").mkdir(parents=True)
    part = folder / "data" / "part-0.parquet"
    if isinstance(shard, bytes):
        part.write_bytes(shard)
    else:
        pq.write_table(shard, part)
    index = pa.table({"path": paths, "source_part": ["data/part-0.parquet"] * len(paths)})
    pq.write_table(index, folder / "index.parquet")
    return folder / "index.parquet"


@pytest.mark.parametrize("on_error", ["raise", "null"])
def test_a_bad_shard_record_is_not_used(root, tmp_path, on_error):
    shard = RASTERET_RECORDS["negative offset"][0](records(root))
    index = published(tmp_path / "published", shard, shard["path"])
    session = open_session(str(root / "index.parquet"), headers=str(index))
    with pytest.warns(UserWarning, match=r"2024-northup\.tif: block_offsets holds -5"):
        assert session.engine.headers.file.get(str(root / NORTHUP)) is None
    assert_gdal_values(root, str(index), on_error=on_error)


@pytest.mark.parametrize("on_error", ["raise", "null"])
def test_a_shard_that_is_not_parquet_is_not_used(root, tmp_path, on_error):
    paths = records(root)["path"]
    index = published(tmp_path / "published", b"PAR1 not really parquet PAR1", paths)
    session = open_session(str(root / "index.parquet"), headers=str(index))
    with pytest.warns(UserWarning, match=r"shard .*part-0\.parquet, not Parquet"):
        assert session.engine.headers.file.get(str(root / NORTHUP)) is None
    assert_gdal_values(root, str(index), on_error=on_error)


def test_a_file_with_two_rasteret_records_uses_neither(root, tmp_path):
    good = records(root)
    shifted = with_band(good, 0, tile_offsets=[o + 1 for o in _tile_offsets(good, 0)])
    for first, second in ((good, shifted), (shifted, good)):
        folder = export_folder(tmp_path / "twice", first, second)
        with pytest.warns(UserWarning, match=r"1 file\(s\) with two records .*2024-northup"):
            session = open_session(str(root / "index.parquet"), headers=str(folder))
        assert session.engine.headers.file.get(str(root / NORTHUP)) is None
        assert_gdal_values(root, str(folder))


def test_a_file_the_index_names_twice_is_not_used(root, tmp_path):
    shard = records(root)
    folder = tmp_path / "published-twice"
    (folder / "data").mkdir(parents=True)
    pq.write_table(shard, folder / "data" / "a.parquet")
    pq.write_table(shard, folder / "data" / "b.parquet")
    path = shard["path"][0].as_py()
    index = pa.table({"path": [path, path], "source_part": ["data/a.parquet", "data/b.parquet"]})
    pq.write_table(index, folder / "index.parquet")
    with pytest.warns(UserWarning, match=r"the index names twice"):
        session = open_session(str(root / "index.parquet"), headers=str(folder))
    assert len(session.engine.headers.file) == 0


# Shard paths that could leave the collection's folder once a client decodes them.
ESCAPING_PARTS = [
    "%2e%2e/outside/shard.parquet",
    "data/%2E%2E/%2e%2e/outside/shard.parquet",
    "..%2foutside/shard.parquet",
    "data\\..\\..\\outside\\shard.parquet",
    "./../outside/shard.parquet",
    "data//../../outside/shard.parquet",
    "/outside/shard.parquet",
    "OUTSIDE_URL",  # the absolute URL of the shard outside
]


@pytest.mark.parametrize("part", ESCAPING_PARTS)
def test_a_shard_is_read_from_the_collections_folder_only(root, tmp_path, part):
    """Over HTTP, whose client decodes '%2e' and drops '..' segments: the collection's
    folder is coll/, a shard outside/shard.parquet; nothing outside coll/ is asked for."""
    site = tmp_path / "site"
    shutil.copytree(root, site)
    with http_range_server(site) as server:
        shard = pq.read_table(next((RASTERET_FIXTURE / "year=2024").rglob("*.parquet")))
        remote = [server.base_url + "collection/" + p for p in shard["path"].to_pylist()]
        shard = shard.set_column(shard.schema.get_field_index("path"), "path", pa.array(remote))
        for folder in ("outside", "coll/data"):
            (site / folder).mkdir(parents=True)
            pq.write_table(shard, site / folder / "shard.parquet")
        part = part.replace("OUTSIDE_URL", server.base_url + "outside/shard.parquet")
        for index, named in (("good.parquet", "data/shard.parquet"), ("bad.parquet", part)):
            table = pa.table({"path": remote, "source_part": [named]})
            pq.write_table(table, site / "coll" / index)
        catalog = server.base_url + "index.parquet"
        good = open_session(catalog, headers=server.base_url + "coll/good.parquet")
        bad = open_session(catalog, headers=server.base_url + "coll/bad.parquet")
        server.log.clear()
        assert good.engine.headers.file.get(remote[0]) is not None  # a shard in coll/ is read
        assert len(bad.engine.headers.file) == 0
        assert bad.engine.headers.file.get(remote[0]) is None
        gets = [p for m, p, _ in server.log.requests if m == "GET"]
        assert gets and all(p.startswith("/coll/") for p in gets), gets


@pytest.fixture(scope="module")
def built(gdal_collection, tmp_path_factory) -> pa.Table:
    """aefsql's own headers file of 2023's files, as write_headers writes it."""
    out = tmp_path_factory.mktemp("built") / "collection.parquet"
    assert aefsql.write_headers(str(out), catalog=gdal_collection.index, years=[2023]) == 4
    return pq.read_table(out)


TILE = "2023/18S/tile3-0000000000-0000000000.tiff"

# (changes to tile 3's row, what the warning says)
OWN_ROWS = {
    "block tables empty": (
        {"block_offsets": [], "block_byte_counts": []},
        r"expected \d+ block offsets and byte counts, found 0 and 0",
    ),
    "block tables one short": (
        {
            "block_offsets": lambda r: r["block_offsets"][:-1],
            "block_byte_counts": lambda r: r["block_byte_counts"][:-1],
        },
        r"expected (\d+) block offsets and byte counts, found \d+ and \d+",
    ),
    "block width 0": ({"block_width": 0}, "invalid block size 0x128"),
    "width -5": ({"width": -5}, "width is -5"),
    "40,000 samples": (
        {"samples_per_pixel": 40000, "planar_separate": False},
        "40000 samples per pixel",
    ),
    "dtype bogus": ({"dtype": "not-a-dtype"}, "dtype is 'not-a-dtype'"),
    "dtype null": ({"dtype": None}, "dtype is None"),
    "dtype text": ({"dtype": "<U4"}, "unsupported sample type"),
    "tiled null": ({"tiled": None}, "tiled is None"),
    "transform with a null": (
        {"transform": lambda r: [None, *r["transform"][1:]]},
        "transform holds None",
    ),
    "offset past 2**63": (
        {"block_offsets": lambda r: [2**64 - 1, *r["block_offsets"][1:]]},
        "block_offsets holds",
    ),
    "unknown predictor": ({"predictor": 7}, "predictor 7"),
}


def tampered(built: pa.Table, folder: Path, changes: dict, schema=None) -> Path:
    rows = built.to_pylist()
    for row in rows:
        if row["path"].endswith(TILE):
            for field, value in changes.items():
                row[field] = value(row) if callable(value) else value
    out = folder / "tampered.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema or built.schema), out)
    return out


def assert_tile_values(gdal_collection, collection: Path) -> None:
    lon, lat, x, y = tile_points(3, 30, seed=6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # asserted by the callers
        got = aefsql.sample_points(
            pa.table({"lon": lon, "lat": lat}),
            year=2023,
            catalog=gdal_collection.index,
            headers=str(collection),
            progress=False,
        )
    assert np.array_equal(band_matrix(got), gdal_values(gdal_collection.folder, 2023, 3, x, y))


@pytest.mark.parametrize("case", OWN_ROWS)
def test_a_row_of_aefsqls_collection_that_is_no_header_is_not_used(
    gdal_collection, built, tmp_path, case
):
    changes, why = OWN_ROWS[case]
    out = tampered(built, tmp_path, changes)
    session = open_session(gdal_collection.index, headers=str(out))
    path = next(p for p in built["path"].to_pylist() if p.endswith(TILE))
    with pytest.warns(UserWarning, match=rf"tile3-0000000000-0000000000\.tiff: .*{why}"):
        assert session.engine.headers.file.get(path) is None
    assert session.engine.headers.file.get(path) is None  # not built again
    with pytest.raises(TiffFormatError, match=why):
        [header_from_row(row) for row in pq.read_table(out).to_pylist()]
    assert_tile_values(gdal_collection, out)


def test_negative_offsets_in_a_signed_column_are_not_used(gdal_collection, built, tmp_path):
    """A collection written by another tool, its block tables int64: -5 reaches aefsql."""
    schema = built.schema.set(
        built.schema.get_field_index("block_offsets"),
        pa.field("block_offsets", pa.list_(pa.int64())),
    )
    out = tampered(
        built, tmp_path, {"block_offsets": lambda r: [-5, *r["block_offsets"][1:]]}, schema
    )
    session = open_session(gdal_collection.index, headers=str(out))
    path = next(p for p in built["path"].to_pylist() if p.endswith(TILE))
    with pytest.warns(UserWarning, match=r"block_offsets holds -5"):
        assert session.engine.headers.file.get(path) is None
    assert_tile_values(gdal_collection, out)


def test_a_file_with_two_rows_uses_neither(gdal_collection, built, tmp_path):
    row = next(r for r in built.to_pylist() if r["path"].endswith(TILE))
    shifted = {**row, "block_offsets": [o + 1 for o in row["block_offsets"]]}
    for extra in (row, shifted):
        out = tmp_path / "twice.parquet"
        pq.write_table(pa.concat_tables([built, pa.Table.from_pylist([extra], built.schema)]), out)
        with pytest.warns(UserWarning, match=r"1 file\(s\) with two records .*tile3-"):
            session = open_session(gdal_collection.index, headers=str(out))
        assert session.engine.headers.file.get(row["path"]) is None
        assert len(session.engine.headers.file) == 3
        assert_tile_values(gdal_collection, out)


def test_the_good_rows_are_used_as_they_were(gdal_collection, built, tmp_path):
    out = tmp_path / "good.parquet"
    pq.write_table(built, out)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        session = open_session(gdal_collection.index, headers=str(out))
        headers = [header_from_row(row) for row in built.to_pylist()]
        for path in built["path"].to_pylist():
            assert session.engine.headers.file.get(path) is not None
        assert len(headers) == 4
    assert_tile_values(gdal_collection, out)
