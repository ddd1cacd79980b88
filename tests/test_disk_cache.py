"""The persistent cache: a re-run reads no bytes from the network; a changed file is re-read;
local files are read in place, never copied."""

import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
from gdal_fixtures import COLLECTION_TILES, write_collection
from servers import http_range_server
from test_collection import tile_points

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
