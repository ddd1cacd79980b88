"""aefsql.spark from a Python whose venv is not activated (issue 21): Spark's local workers
start `python3` from PATH, which lacks aefsql; aefsql gives them the driver's Python, checks
once that the executors import aefsql (one line with the fix when they cannot), and its
calls show none of PySpark's pandas-3 FutureWarnings. Each test runs a real local[2] Spark in
a child process whose environment has no PYSPARK_PYTHON (tests/conftest.py sets one here)."""

import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.spark

pytest.importorskip("pyspark", minversion="4.1")

CHILD = textwrap.dedent(
    """
    import sys, warnings
    import pyarrow as pa
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[2]")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("FATAL")
    import aefsql, aefsql.spark  # after the user's own PySpark calls, whose warnings are theirs

    index = sys.argv[1]
    points = pa.table({"name": ["sf", "lima", "sea"], "lon": [-122.4194, -77.0428, -30.0],
                       "lat": [37.7749, -12.0464, 30.0]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            got = aefsql.spark.sample_points(
                spark.createDataFrame(points), years=2024, bands=["A00", "A63"], catalog=index
            ).toArrow()
            aefsql.spark.register(spark, index)
            located = spark.sql(
                "SELECT aef_locate(-77.0428D, -12.0464D, 2024) AS path"
            ).collect()[0].path
        except aefsql.AefsqlError as exc:
            print("ERROR", exc)
            sys.exit(3)
    pandas_3 = [w for w in caught if "does not yet fully support pandas" in str(w.message)]
    print("PANDAS3", len(pandas_3))
    expected = aefsql.sample_points(points, years=2024, bands=["A00", "A63"], catalog=index)
    key = lambda r: r["name"]
    same = sorted(got.to_pylist(), key=key) == sorted(expected.to_pylist(), key=key)
    print("SAME", same, got.num_rows)
    print("LOCATED", located.endswith(".tiff"))
    spark.stop()
    """
)


@pytest.fixture(scope="module")
def demo_index(tmp_path_factory):
    from aefsql.demo import write_demo_collection

    return str(write_demo_collection(tmp_path_factory.mktemp("demo")))


@pytest.fixture(scope="module")
def bare_python():
    """A python3 on a plain PATH that cannot import aefsql (the system's, not this venv's)."""
    found = shutil.which("python3", path="/usr/bin:/bin")
    if found is None or os.path.realpath(found) == os.path.realpath(sys.executable):
        pytest.skip("no python3 besides this one on /usr/bin:/bin")
    if subprocess.run([found, "-c", "import aefsql"], capture_output=True).returncode == 0:
        pytest.skip(f"{found} imports aefsql: it cannot stand for an unprepared worker")
    return found


def run_child(tmp_path, index, **env):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "VIRTUAL_ENV", "PATH")
    }
    clean["PATH"] = "/usr/bin:/bin"  # its python3 lacks aefsql (bare_python)
    clean.update(env)
    return subprocess.run(
        [sys.executable, str(script), index],
        env=clean,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_local_workers_run_the_drivers_python_and_no_pandas_warning(
    tmp_path, demo_index, bare_python
):
    """Before: the workers ran PATH's python3 and failed with ModuleNotFoundError in a long
    trace; and aefsql's calls printed PySpark's pandas-3 FutureWarning."""
    result = run_child(tmp_path, demo_index)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "SAME True 3" in result.stdout and "LOCATED True" in result.stdout
    assert "PANDAS3 0" in result.stdout


def test_executors_that_cannot_import_aefsql_say_so_in_one_line(tmp_path, demo_index, bare_python):
    """A Python the user chose for the workers (as a cluster's would be) that lacks aefsql:
    one line naming that Python and the fix, before any job of the call runs."""
    result = run_child(tmp_path, demo_index, PYSPARK_PYTHON=bare_python)
    assert result.returncode == 3, result.stdout + result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("ERROR")]
    assert len(lines) == 1 and re.fullmatch(
        rf"ERROR the Spark executors' Python \({re.escape(bare_python)}\) cannot import "
        r"aefsql \(ModuleNotFoundError: No module named '\w+'\): install aefsql there, or "
        r"set spark.pyspark.python \(or \$PYSPARK_PYTHON\) to a Python that has it",
        lines[0],
    ), lines
