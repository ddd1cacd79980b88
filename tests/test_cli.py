"""The `aefsql sample` verb: every row out, plans without reads, quoted user strings."""

import io
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pyarrow.parquet as pq
import pytest
from test_collection import tile_points

from aefsql.cli import main, parse_years


def run(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def points_csv(tmp_path):
    lon, lat, _, _ = tile_points(3, 20, seed=8)
    lines = ["plot,x,y"] + [f"p{i},{a},{b}" for i, (a, b) in enumerate(zip(lon, lat, strict=True))]
    lines.append("nowhere,0.0,0.0")
    path = tmp_path / "plots.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_sample_writes_every_row_per_year(gdal_collection, points_csv, tmp_path):
    out = tmp_path / "out.parquet"
    code, stdout, _ = run(
        "sample",
        str(points_csv),
        "-o",
        str(out),
        "--year",
        "2023-2024",
        "--x",
        "x",
        "--y",
        "y",
        "--bands",
        "A00,A63",
        "--catalog",
        gdal_collection.index,
    )
    assert code == 0 and "wrote" in stdout
    table = pq.read_table(out)
    assert table.column_names == ["plot", "x", "y", "year", "A00", "A63"]
    assert table["plot"].to_pylist() == [
        p for p in [f"p{i}" for i in range(20)] + ["nowhere"] for _ in (2023, 2024)
    ]
    assert table["A00"].null_count >= 2  # "nowhere" in both years
    assert np.all(np.array(table["year"].to_pylist()) == [2023, 2024] * 21)


def test_dry_run_plans_without_reading_pixels(gdal_collection, points_csv):
    code, stdout, _ = run(
        "sample",
        str(points_csv),
        "--year",
        "2024",
        "--x",
        "x",
        "--y",
        "y",
        "--catalog",
        gdal_collection.index,
        "--dry-run",
    )
    assert code == 0
    summary = stdout.strip().splitlines()[-1]
    assert summary.startswith("plan: 1 files, 21 point-years, ")
    assert "MB to read" in summary


def test_user_strings_are_quoted_not_executed(gdal_collection, points_csv):
    code, _, err = run(
        "sample",
        str(points_csv),
        "--year",
        "2024",
        "--x",
        "x'); DROP TABLE t; --",
        "--y",
        "y",
        "--catalog",
        gdal_collection.index,
    )
    # The payload is a column name that does not exist, nothing more.
    assert code == 1
    assert err.startswith("aefsql: error: ") and 'has no column "x\'); DROP TABLE t; --"' in err
    code, _, err = run(
        "sample",
        str(points_csv),
        "--year",
        "2024",
        "--x",
        "x",
        "--y",
        "y",
        "--bands",
        "A00'] , years := [1",
        "--catalog",
        gdal_collection.index,
    )
    assert code == 1 and "unknown band name" in err


@pytest.mark.parametrize(
    "text, years",
    [("2023", [2023]), ("2023,2024", [2023, 2024]), ("2018-2020", [2018, 2019, 2020])],
)
def test_parse_years(text, years):
    assert parse_years(text) == years


def test_bad_year_is_one_clear_line(points_csv):
    code, _, err = run("sample", str(points_csv), "--year", "last year")
    assert code == 1 and err.count("\n") == 1 and "--year 'last year'" in err
