"""The aefsql shell: scripts, -c, dot-commands, output modes, and an interactive session."""

import subprocess
import sys
import time

import pexpect
import pyarrow as pa
import pyarrow.parquet as pq

AEFSQL = [sys.executable, "-m", "aefsql.cli"]


def shell(*args, stdin: str = "", catalog=None) -> subprocess.CompletedProcess:
    command = [*AEFSQL, *(["--catalog", catalog] if catalog else []), *args]
    return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=120)


def test_command_runs_statements_and_exits(gdal_collection):
    result = shell(
        "-c",
        "SELECT count(*) AS tiles FROM aef_index(); SELECT 41 + 1 AS answer;",
        catalog=gdal_collection.index,
    )
    assert result.returncode == 0
    assert "tiles" in result.stdout and "8" in result.stdout and "42" in result.stdout


def test_piped_script_with_dot_commands(gdal_collection, tmp_path):
    out = tmp_path / "out.csv"
    script = f"""
.mode csv
CREATE TABLE p AS
  SELECT * FROM (VALUES (1, 0.0, 0.0)) t(id, lon, lat);
SELECT id, year, A00 FROM aef_sample_points('p', year := 2023);
.mode markdown
SELECT 1 AS a, NULL AS b;
.output {out}
.mode json
SELECT 'x' AS s;
.output
.tables
"""
    result = shell(stdin=script, catalog=gdal_collection.index)
    assert result.returncode == 0, result.stderr
    assert "id,year,A00\n1,2023,\n" in result.stdout
    assert "| a | b    |\n|---|------|\n| 1 | NULL |" in result.stdout
    assert out.read_text().strip() == '[{"s": "x"}]'
    assert result.stdout.rstrip().endswith('[{"name": "p"}]')  # .tables, in json mode


def test_errors_are_one_line_and_set_the_exit_code(gdal_collection):
    result = shell("-c", "SELECT nope; SELECT 1;", catalog=gdal_collection.index)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: ")
    assert "Traceback" not in result.stderr
    bad_catalog = shell("-c", "SELECT 1;", catalog="/nonexistent/index.parquet")
    assert bad_catalog.returncode == 1 and bad_catalog.stderr.startswith("aefsql: error: ")


def test_functions_lists_every_aef_function_with_its_doc(gdal_collection):
    result = shell("-c", ".functions", catalog=gdal_collection.index)
    assert "aef_sample(path, lon, lat)\n    The embedding at (lon, lat)" in result.stdout
    for name in (
        "aef_index",
        "aef_locate",
        "aef_embedding",
        "aef_sample_points",
        "aef_plan",
        "aef_dequantize",
        "aef_vector",
        "aef_build_collection",
    ):
        assert f"\n{name}(" in "\n" + result.stdout


def interactive_shell(catalog: str, tmp_path) -> pexpect.spawn:
    """The shell on a terminal, at its first prompt."""
    child = pexpect.spawn(
        sys.executable,
        ["-m", "aefsql.cli", "--catalog", catalog],
        env={"AEFSQL_HISTORY": str(tmp_path / "history"), "PATH": "/usr/bin:/bin"},
        encoding="utf-8",
        timeout=60,
    )
    child.expect("aefsql> ")
    return child


def interrupt_then_keep_working(child: pexpect.spawn) -> float:
    """Ctrl-C the running query; check the shell still answers; return the seconds from the
    Ctrl-C to the prompt."""
    interrupted = time.monotonic()
    child.sendintr()
    child.expect("Interrupted")
    child.expect("aefsql> ")
    seconds = time.monotonic() - interrupted
    child.sendline("SELECT 41 + 1 AS answer;")
    child.expect("42")
    child.expect("aefsql> ")
    child.sendline(".quit")
    child.expect(pexpect.EOF)
    return seconds


def test_interactive_session_ctrl_c_cancels_the_query(gdal_collection, tmp_path):
    child = interactive_shell(gdal_collection.index, tmp_path)
    child.sendline("SELECT count(*) FROM range(1000000000000) a")
    child.expect(r"\.\.\.> ")  # the statement is not finished without ';'
    child.sendline(";")
    time.sleep(1.5)  # the query is running
    interrupt_then_keep_working(child)
    assert "answer;" in (tmp_path / "history").read_text()


def test_ctrl_c_ends_a_query_stuck_on_a_stalled_server_at_once(
    http_collection, http_server, tmp_path
):
    """Ctrl-C during sampling abandons the request in flight: the prompt is back in seconds,
    not when the 20 s stall or the read timeout ends."""
    tile = "2023/18S/tile3-0000000000-0000000000.tiff"
    url = f"{http_collection.index.rsplit('/', 1)[0]}/{tile}"
    child = interactive_shell(http_collection.index, tmp_path)
    http_server.faults.add(tile, "stall 20")
    child.sendline(f"SELECT aef_sample('{url}', -75.0, -13.5) IS NULL AS outside;")
    time.sleep(1.5)  # the header request is in flight, its answer stalled
    assert http_server.faults.planned == []
    assert interrupt_then_keep_working(child) < 5


def test_read_schema_timer_and_catalog_switch(gdal_collection, tmp_path):
    script = tmp_path / "model.sql"
    script.write_text("CREATE TABLE plots AS SELECT 1 AS id, 0.0 AS lon, 0.0 AS lat;\n")
    other = tmp_path / "other"
    other.mkdir()
    empty_index = other / "index.parquet"
    pq.write_table(
        pa.table(
            {
                "year": pa.array([], pa.int32()),
                "path": pa.array([], pa.string()),
                **{
                    f"wgs84_{s}": pa.array([], pa.float64())
                    for s in ("west", "south", "east", "north")
                },
            }
        ),
        empty_index,
    )
    result = shell(
        stdin=f""".read {script}
.schema plots
.timer on
SELECT 7 AS seven;
.timer off
.catalog
.catalog {empty_index}
.catalog
""",
        catalog=gdal_collection.index,
    )
    assert result.returncode == 0, result.stderr
    assert "CREATE TABLE plots(id INTEGER, lon DECIMAL(2,1), lat DECIMAL(2,1));" in result.stdout
    assert "Run Time: " in result.stdout
    tiles = [line for line in result.stdout.splitlines() if line.startswith("│") and "│" in line]
    assert any(" 8 " in line for line in tiles)  # the first catalog: 8 tiles
    assert f"catalog: {empty_index}" in result.stdout
    assert any(" 0 " in line for line in tiles)  # the new one: none


def test_readonly_database_refuses_writes(gdal_collection, tmp_path):
    database = tmp_path / "w.duckdb"
    assert (
        shell(
            str(database), "-c", "CREATE TABLE t AS SELECT 1 AS x;", catalog=gdal_collection.index
        ).returncode
        == 0
    )
    result = shell(
        str(database),
        "--readonly",
        "-c",
        "SELECT x FROM t; CREATE TABLE u (y INT);",
        catalog=gdal_collection.index,
    )
    assert result.returncode == 1 and "read-only" in result.stderr.lower()
    assert "│   x   │" in result.stdout and "│     1 │" in result.stdout  # reads still work
