"""The progress line: counts what was done, stays silent when off."""

import io

import duckdb
import numpy as np
import pyarrow as pa
from helpers import tile_points

import aefsql
from aefsql import progress as progress_module
from aefsql.duck.registration import install
from aefsql.duck.udfs import SessionUdfs
from aefsql.progress import Progress
from aefsql.session import open_session
from aefsql.shell import Shell


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


class Clock:
    """time.monotonic for Progress, moved by hand."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self):
        return self.now


def last_line(stream) -> str:
    return stream.getvalue().rstrip("\n").split("\r")[-1].rstrip()


def test_progress_shows_a_rate_only_after_a_second_and_an_eta_only_with_a_total(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress_module, "time", clock)
    stream = Terminal()
    report = Progress(stream=stream, interval=0.0)
    report.start(total=1000)
    clock.now += 1e-6
    report.add(points=10, blocks=1, nbytes=1000)
    assert last_line(stream) == "aefsql: 10/1,000 points, 1 blocks, 0.0 MB read, 0.0 s"
    clock.now += 2
    report.add(points=240)
    assert last_line(stream).endswith(", 2.0 s, 125 points/s, ETA 6.0 s")
    report.close()
    assert stream.getvalue().endswith("\n")
    report.add(points=5)  # the next job, whose total is unknown: no ETA
    clock.now += 1
    report.add(points=5)
    assert last_line(stream) == "aefsql: 10 points, 0 blocks, 0.0 MB read, 1.0 s, 10 points/s"


def test_the_shell_ends_the_progress_line_before_printing_the_result(gdal_collection):
    terminal = Terminal()  # stdout and stderr on one screen
    report = Progress(stream=terminal, enabled=True, interval=0.0)
    con = duckdb.connect()
    session = open_session(gdal_collection.index, progress=report)
    install(con, SessionUdfs(session))
    shell = Shell(con, session=session, out=terminal, err=terminal)
    lon, lat, _, _ = tile_points(3, 40, seed=3)
    con.register("p", pa.table({"lon": lon, "lat": lat}))
    try:
        shell.feed("SELECT count(A00) AS n FROM aef_sample_points('p', years := [2023]);")
    finally:
        shell.close()
        con.close()
    screen = terminal.getvalue()
    assert "aefsql: 40 points, " in screen
    assert "\n┌" in screen and screen.index("points") < screen.index("┌")
