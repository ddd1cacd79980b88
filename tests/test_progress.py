"""The progress line: counts what was done, stays silent when off."""

import io

import numpy as np
import pyarrow as pa
from test_collection import tile_points

import aefsql
from aefsql.progress import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_reports_points_blocks_and_bytes(gdal_collection):
    lon, lat, _, _ = tile_points(3, 40, seed=3)
    stream = Terminal()
    report = Progress(stream=stream, interval=0.0)
    con = aefsql.connect(catalog=gdal_collection.index, progress=report)
    try:
        con.register("p", pa.table({"lon": lon, "lat": lat}))
        report.start(total=80)
        con.sql("SELECT * FROM aef_sample_points('p', years := [2023, 2024])").fetchall()
        report.close()
    finally:
        con.close()
    last = stream.getvalue().rstrip("\n").split("\r")[-1]
    assert last.startswith("aefsql: 80/80 points, ") and " MB read, " in last
    blocks = int(last.split(" points, ")[1].split(" blocks")[0].replace(",", ""))
    assert blocks >= 2 * 64  # at least one block per band in each year's file
    assert stream.getvalue().endswith("\n")


def test_progress_is_silent_when_off_or_not_a_terminal():
    for report in (Progress(stream=Terminal(), enabled=False), Progress(stream=io.StringIO())):
        report.start(total=10)
        report.add(points=10, blocks=3, nbytes=100)
        report.close()
        assert report.stream.getvalue() == ""


def test_sample_points_has_no_progress_in_a_pipe(gdal_collection, capsys):
    lon, lat, _, _ = tile_points(2, 5, seed=1)
    aefsql.sample_points(
        pa.table({"lon": lon, "lat": np.asarray(lat)}), year=2023, catalog=gdal_collection.index
    )
    assert capsys.readouterr().err == ""
