"""The `aefsql sample` verb: every row out, plans without reads, quoted user strings."""

import io
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import pixel_lonlat, tile_points

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
    assert code == 1 and err.count("\n") == 1 and "--years 'last year'" in err


def test_on_error_null_keeps_every_row_and_lists_the_failed_ones(broken_catalog, tmp_path):
    _, folder = broken_catalog
    lon, lat = pixel_lonlat(np.array([30, 2, 7]), np.array([30, 3, 9]))
    points = tmp_path / "plots.csv"
    points.write_text(
        "plot,lon,lat\n"
        + "".join(f"p{i},{a},{b}\n" for i, (a, b) in enumerate(zip(lon, lat, strict=True)))
    )
    out = tmp_path / "out.csv"
    argv = ["sample", str(points), "--year", "2023,2024", "--bands", "A00", "-o", str(out)]
    argv += ["--catalog", str(folder / "index.parquet")]
    code, _, err = run(*argv)
    assert code == 1 and "missing.tif: file not found" in err  # the default fails loudly
    code, stdout, err = run(*argv, "--on-error", "null")
    assert code == 0 and "wrote" in stdout
    lines = out.read_text().splitlines()
    assert lines[0] == "plot,lon,lat,year,A00,aef_error"
    assert [line.split(",")[0] + "/" + line.split(",")[3] for line in lines[1:]] == [
        f"p{i}/{year}" for i in range(3) for year in (2023, 2024)
    ]
    assert "3 of 6 rows could not be read" in err
    assert "3 rows (output rows 2, 4, 6): " in err and "missing.tif: file not found" in err


def test_duplicate_years_utm_points_and_geometry(gdal_collection, tmp_path):
    """--years 2023,2023 counts once; --crs takes UTM x/y; --geometry takes WKT/WKB points:
    all three give the same values as lon/lat."""
    lon, lat, x, y = tile_points(3, 12, seed=21)
    path = tmp_path / "utm.csv"
    rows = ["plot,lon,lat,e,n,wkt"] + [
        f"p{i},{a},{b},{c},{d},POINT({a} {b})"
        for i, (a, b, c, d) in enumerate(zip(lon, lat, x, y, strict=True))
    ]
    path.write_text("\n".join(rows) + "\n")
    outputs = {}
    for name, extra in {
        "lonlat": [],
        "utm": ["--x", "e", "--y", "n", "--crs", "EPSG:32718"],
        "geometry": ["--geometry", "wkt"],
    }.items():
        out = tmp_path / f"{name}.parquet"
        code, _, err = run(
            "sample",
            str(path),
            "--years",
            "2023,2023",
            "--bands",
            "A00,A63",
            "-o",
            str(out),
            "--catalog",
            gdal_collection.index,
            *extra,
        )
        assert code == 0, err
        outputs[name] = pq.read_table(out)
    reference = outputs["lonlat"].select(["plot", "year", "A00", "A63"])
    assert reference.num_rows == 12 and reference["A00"].null_count == 0
    for table in outputs.values():
        assert table.select(["plot", "year", "A00", "A63"]).equals(reference)


def test_missing_year_warns_and_huge_year_ranges_are_refused(gdal_collection, points_csv):
    sample = ["sample", str(points_csv), "--years", "2024,2031", "--x", "x", "--y", "y"]
    sample += ["--catalog", gdal_collection.index]
    code, _, err = run(*sample, "--bands", "A00")
    assert code == 0
    assert "aefsql: warning: aef_sample_points: the catalog has no tile of year(s) 2031" in err
    assert err.count("\n") == 1  # said once
    code, _, err = run(*sample, "--dry-run")
    assert code == 0 and "aefsql: warning: aef_plan: the catalog has no tile of year(s) 2031" in err
    code, _, err = run(
        "sample", str(points_csv), "--years", "2023-20230000", "--catalog", gdal_collection.index
    )
    assert code == 1 and err.count("\n") == 1 and "at most 1000" in err


def test_a_misspelt_option_is_named_with_the_nearest_one(gdal_collection, points_csv):
    # argparse alone reports the required --years as missing, not the misspelt one.
    with pytest.raises(SystemExit) as exit_:
        run("sample", str(points_csv), "--yeers", "2024")
    assert exit_.value.code == 2
    with pytest.raises(SystemExit), redirect_stderr(io.StringIO()) as err:
        main(["sample", str(points_csv), "--years", "2024", "--on-eror=null"])
    assert "unknown option --on-eror (did you mean --on-error?)" in err.getvalue()
    with pytest.raises(SystemExit), redirect_stderr(io.StringIO()) as err:
        main(["picture", "--bbox", "1,2,3,4", "--yeer", "2024", "-o", "x.png"])
    assert "unknown option --yeer (did you mean --year?)" in err.getvalue()
    # A prefix argparse accepts is not refused here.
    code, stdout, _ = run(
        "sample",
        str(points_csv),
        "--years",
        "2024",
        "--x",
        "x",
        "--y",
        "y",
        "--catalog",
        gdal_collection.index,
        "--dry",
    )
    assert code == 0 and stdout.strip().splitlines()[-1].startswith("plan: 1 files")


def test_points_in_no_tile_are_warned_about(gdal_collection, points_csv, tmp_path):
    """--x and --y swapped: no point lies in a tile, and sample says so, as the SQL function
    and aefsql.sample_points do (it printed nothing and exited 0 with every band NULL)."""
    out = tmp_path / "swapped.csv"
    code, _, err = run(
        "sample",
        str(points_csv),
        "--years",
        "2023",
        "--x",
        "y",
        "--y",
        "x",
        "--bands",
        "A00",
        "--catalog",
        gdal_collection.index,
        "-o",
        str(out),
    )
    assert code == 0 and out.exists()
    assert "aefsql: warning: aef_sample_points:" in err and "no point lies in a tile" in err
