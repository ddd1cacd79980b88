"""The aefsql shell: scripts, -c, dot-commands, output modes, and an interactive session."""

import csv
import io
import json
import socket
import subprocess
import sys
import time

import duckdb
import numpy as np
import pexpect
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.memory import MemoryFileSystem

import aefsql
from aefsql.cli import main
from aefsql.shell import Shell, render_rows

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
    assert "aef_file_embedding(path, lon, lat)\n    The embedding at (lon, lat)" in result.stdout
    for name in (
        "aef_index",
        "aef_locate",
        "aef_embedding",
        "aef_sample_points",
        "aef_plan",
        "aef_dequantize",
        "aef_vector",
        "aef_headers",
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
    child.sendline(f"SELECT aef_file_embedding('{url}', -75.0, -13.5) IS NULL AS outside;")
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


def in_process_shell(con=None, **options) -> tuple[Shell, io.StringIO, io.StringIO]:
    """A shell as at the prompt (no bail), its output and errors in strings."""
    out, err = io.StringIO(), io.StringIO()
    return Shell(con or duckdb.connect(), out=out, err=err, **options), out, err


def test_failing_dot_commands_print_one_line_and_the_shell_goes_on(tmp_path):
    (tmp_path / "binary.sql").write_bytes(bytes(range(256)))
    (tmp_path / "self.sql").write_text(f".read {tmp_path / 'self.sql'}\n")
    (tmp_path / "a.sql").write_text(f".read {tmp_path / 'b.sql'}\n")
    (tmp_path / "b.sql").write_text(f".read {tmp_path / 'a.sql'}\n")
    shell, out, err = in_process_shell()
    failing = [
        f".output {tmp_path}",  # a directory
        f".output {tmp_path / 'no' / 'such' / 'dir.txt'}",
        f".read {tmp_path / 'binary.sql'}",
        f".read {tmp_path / 'self.sql'}",
        f".read {tmp_path / 'a.sql'}",  # a.sql reads b.sql reads a.sql
        f".read {tmp_path / 'missing.sql'}",
        "SELECT nope;",
    ]
    try:
        shell.feed("CREATE TABLE kept AS SELECT 42 AS answer;")
        for line in failing:
            assert shell.feed(line)
        shell.feed("SELECT answer FROM kept;")  # the in-memory table survived
    finally:
        shell.close()
    errors = err.getvalue().splitlines()
    assert len(errors) == len(failing) and all(e.startswith("Error: ") for e in errors), errors
    assert errors[0] == f"Error: .output {tmp_path}: Is a directory; results go to the screen"
    assert errors[2] == f"Error: cannot read {tmp_path / 'binary.sql'}: not a text file (not UTF-8)"
    assert "nested .read (does a file read itself?)" in errors[3]
    assert "nested .read" in errors[4]
    assert errors[5].endswith("missing.sql: No such file or directory")
    assert "│     42 │" in out.getvalue()


class Unreachable(MemoryFileSystem):
    """A filesystem whose files exist but cannot be read: DuckDB quotes the Python exception
    with its traceback."""

    protocol = ("unreachable",)

    def info(self, path, **kwargs):
        return {"name": path, "size": 100, "type": "file"}

    def _open(self, path, mode="rb", **kwargs):
        raise ConnectionError(f"{path}: no network")


def test_unexpected_errors_are_one_line_naming_their_type():
    con = duckdb.connect()
    con.register_filesystem(Unreachable())

    def broken_udf(x):
        raise ValueError("the UDF broke")

    con.create_function("broken_udf", broken_udf, ["INTEGER"], "INTEGER")

    def reconnect(url):
        raise RuntimeError(f"no catalog at {url}")

    shell, _, err = in_process_shell(con, reconnect=reconnect)
    try:
        shell.feed("SELECT * FROM read_parquet('unreachable://bucket/index.parquet');")
        shell.feed("SELECT broken_udf(1);")
        shell.feed(".catalog elsewhere.parquet")
    finally:
        shell.close()
        con.close()
    assert err.getvalue().splitlines() == [
        "Error: ConnectionError: unreachable://bucket/index.parquet: no network",
        "Error: ValueError: the UDF broke",
        "Error: RuntimeError: no catalog at elsewhere.parquet",
    ]


def test_aefsqls_own_errors_say_why_without_a_class_name(gdal_collection):
    """An aef_* function's refusal reads as its reason, as DuckDB's own errors do; a foreign
    exception (a bug) keeps its class (above)."""
    result = shell(
        "-c",
        "SELECT count(*) FROM aef_pixels([11.9, 44.9, 12.1, 45.1], years := 2023, "
        "max_bytes := 1000);",
        catalog=gdal_collection.index,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("Error: the area covers about "), result.stderr
    assert "AefsqlError" not in result.stderr


def test_a_misspelt_argument_is_named_with_the_one_meant(gdal_collection):
    """DuckDB says only that a macro "does not support the supplied arguments": the shell
    names each argument the macro has no parameter of, the likely one, and its parameters;
    right names in a wrong shape get the macro's signature."""
    result = shell(
        "-c",
        "SELECT * FROM aef_index() LIMIT 0; "
        "SELECT * FROM aef_zonal('t', yaers := 2023, on_eror := 'null', crs := 4326);",
        catalog=gdal_collection.index,
    )
    assert result.returncode == 1
    assert result.stderr == (
        "Error: aef_zonal() has no parameters yaers (did you mean years?), on_eror (did you mean "
        "on_error?); it takes polygons_table, years, year, geometry_column, crs, level, "
        "on_error, max_bytes, status\n"
    )
    shape = shell(
        "-c",
        "SELECT * FROM aef_pixels([0, 0, 1, 1], [1], years := 2023);",
        catalog=gdal_collection.index,
    )
    assert shape.stderr.startswith(
        "Error: Binder Error: Macro aef_pixels() does not support the supplied arguments: it "
        "takes aef_pixels(area, years := NULL, year := NULL, bands := NULL"
    ), shape.stderr


def test_a_year_the_catalog_lacks_is_a_warning_line(gdal_collection):
    result = shell(
        "-csv",
        "-c",
        "SELECT count(*) AS n FROM aef_pixels([11.99, 45.0, 12.0, 45.005], years := [2023, 2031]);",
        catalog=gdal_collection.index,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("n\n") and int(result.stdout.split()[1]) > 0
    assert result.stderr == (
        "Warning: aef_pixels: the catalog has no tile of year(s) 2031 (it has 2023, 2024)\n"
    )


def test_startup_failures_are_one_line_and_exit_1(gdal_collection, tmp_path):
    missing = shell("-f", str(tmp_path / "missing.sql"), catalog=gdal_collection.index)
    assert missing.returncode == 1
    assert (
        missing.stderr
        == f"Error: cannot read {tmp_path / 'missing.sql'}: No such file or directory\n"
    )
    unknown_scheme = shell(
        "-c", "SELECT count(*) FROM aef_index();", catalog="foo://bucket/index.parquet"
    )
    assert unknown_scheme.returncode == 1
    assert unknown_scheme.stderr.count("\n") == 1 and "foo" in unknown_scheme.stderr
    assert unknown_scheme.stderr.startswith(("aefsql: error: ", "Error: "))


@pytest.mark.parametrize(
    "flag, expected",
    [
        ("-csv", "a,b\n1,x\n"),
        ("-json", '[{"a": 1, "b": "x"}]\n'),
        ("-line", "a = 1\nb = x\n"),
        ("-markdown", "| a | b |\n|---|---|\n| 1 | x |\n"),
        ("-table", "+---+---+\n| a | b |\n+---+---+\n| 1 | x |\n+---+---+\n"),
        ("-box", "┌───────┬─────────┐\n│   a   │    b    │\n"),
    ],
)
def test_duckdb_mode_flags(gdal_collection, capsys, flag, expected):
    argv = ["--catalog", gdal_collection.index, flag, "-c", "SELECT 1 AS a, 'x' AS b"]
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith(expected)


def test_unknown_flags_are_refused_and_version_is_printed(capsys):
    for flag in ("-foo", "-cat"):  # argparse would read them as "-f oo" and "-c at"
        with pytest.raises(SystemExit) as exited:
            main([flag])
        assert exited.value.code == 2
        assert f"unknown option {flag}" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"aefsql {aefsql.__version__} (duckdb {duckdb.__version__})\n"


@pytest.mark.parametrize("source", ["-f", "-c", "stdin"])
def test_scripts_stop_at_the_first_error_and_show_its_place(gdal_collection, tmp_path, source):
    script = "SELECT 'before' AS marker;\nSELEC 2;\nSELECT 'after' AS marker;\n"
    path = tmp_path / "script.sql"
    path.write_text(script)
    args = {"-f": ["-f", str(path)], "-c": ["-c", script], "stdin": []}[source]
    result = shell(*args, stdin=script, catalog=gdal_collection.index)
    assert result.returncode == 1
    assert "before" in result.stdout and "after" not in result.stdout
    assert result.stderr.splitlines() == [
        'Error: Parser Error: syntax error at or near "SELEC"',
        "LINE 1: SELEC 2;",
        "        ^^^^^",
    ]


def test_the_default_catalog_starts_offline_and_a_failing_query_says_why(monkeypatch, capsys):
    connections = []

    def no_network(*args, **kwargs):
        connections.append(args[:1])
        raise OSError("the network is off in this test")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    for name in ("AEFSQL_CATALOG", "AEFSQL_CACHE_DIR", "AEFSQL_HEADERS", "AEFSQL_COLLECTION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # fail fast
    assert main(["-c", "SELECT 42 AS answer"]) == 0
    assert "42" in capsys.readouterr().out and connections == []
    assert main(["-c", "SELECT count(*) FROM aef_index()"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("Error: ") and "Traceback" not in err
    assert "aef_index.parquet" in err  # names what could not be read


def test_a_subquery_argument_gets_the_cte_advice(gdal_collection):
    result = shell(
        "-c",
        "SELECT * FROM aef_sample_points((SELECT 1.0 AS lon, 2.0 AS lat), years := 2023);",
        catalog=gdal_collection.index,
    )
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "Table function cannot contain subqueries" in result.stderr
    assert "WITH p AS (SELECT …) SELECT * FROM aef_sample_points('p', …)" in result.stderr


@pytest.mark.slow  # 3 million rows, twice: ~35 s
@pytest.mark.parametrize("mode", ["-csv", "-json"])
def test_csv_and_json_results_stream(gdal_collection, mode):
    """3 million rows in csv or json go out as they come: the shell's peak memory stays far
    below the result's size (it held every row and the whole text before: 10 M rows took
    3-5 GB)."""
    query = "SELECT range AS i, 'row ' || range AS label FROM range(3000000)"
    script = (
        "import sys\n"
        "from aefsql.cli import main\n"
        "sys.stdout = open('/dev/null', 'w')\n"
        f"code = main(['--catalog', {gdal_collection.index!r}, {mode!r}, '-c', {query!r}])\n"
        # VmHWM: this process's own peak (ru_maxrss starts at the forking parent's).
        "peak = open('/proc/self/status').read().split('VmHWM:')[1].split()[0]\n"
        "print(code, peak, file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    code, peak_kib = done.stderr.strip().splitlines()[-1].split()
    assert code == "0"
    assert int(peak_kib) < 400 * 1024  # the rows' tuples and text alone exceed 600 MB


def test_streamed_csv_and_json_equal_the_whole_text(gdal_collection):
    for mode in ("-csv", "-json"):
        done = shell(
            mode,
            "-c",
            "SELECT range AS i, [range, 1] AS l FROM range(25003)",
            catalog=gdal_collection.index,
        )
        rows = [(i, [i, 1]) for i in range(25003)]
        assert done.stdout == render_rows(mode[1:], ["i", "l"], rows) + "\n"


def _float_table(path) -> str:
    """A Parquet file of FLOATs from every range (random bit patterns, finite), embeddings
    and cosines, one DOUBLE, and the nested shapes an export has: FLOAT[4], FLOAT[], a STRUCT
    and a MAP of them. Returns the query that reads it."""
    rng = np.random.default_rng(21)
    bits = rng.integers(0, 2**32, 3000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    values = np.concatenate(
        [bits[np.isfinite(bits)][:1000], rng.uniform(-1, 1, 1000).astype(np.float32)]
    )
    values = np.concatenate([values, np.float32([0.1359, 343126.125, 1e-7, -0.0, 1.0])])
    n = len(values) // 4 * 4
    pq.write_table(pa.table({"f": pa.array(values[:n], pa.float32())}), path)
    return (
        f"WITH v AS (SELECT row_number() OVER () - 1 AS i, f FROM '{path}'), "
        "g AS (SELECT i // 4 AS k, list(f ORDER BY i) AS l FROM v GROUP BY k) "
        "SELECT k, l[1] AS f, l[1]::DOUBLE / 3 AS d, l::FLOAT[4] AS a, l[2:3] AS l, "
        "{'x': l[4], 'y': [l[1]]} AS s, map([k], [l[2]]) AS m FROM g ORDER BY k"
    )


def _duckdb_text(query: str) -> list[list[str]]:
    """DuckDB's own text of every FLOAT and DOUBLE in the query's result, column by column."""
    return duckdb.sql(
        f"SELECT f::VARCHAR, d::VARCHAR, list_transform(a, lambda x: x::VARCHAR), "
        f"list_transform(l, lambda x: x::VARCHAR), s.x::VARCHAR, s.y[1]::VARCHAR, "
        f"map_values(m)[1]::VARCHAR, a::VARCHAR, l::VARCHAR, s::VARCHAR FROM ({query})"
    ).fetchall()


@pytest.mark.parametrize("flag", ["-csv", "-json", "-line", "-markdown", "-table"])
def test_floats_print_as_duckdb_prints_them(tmp_path, capsys, flag):
    """0.1359::FLOAT printed 0.13590000569820404 (Python's double of the float32) in every
    mode but box: each FLOAT and DOUBLE, nested ones too, prints DuckDB's own text of it."""
    query = _float_table(tmp_path / "floats.parquet")
    assert main([flag, "-c", query]) == 0
    out = capsys.readouterr().out
    expected = _duckdb_text(query)
    if flag == "-json":
        rows = json.loads(out, parse_float=str)  # the numbers' text as printed
        got = [
            (r["f"], r["d"], r["a"], r["l"], r["s"]["x"], r["s"]["y"][0], *r["m"].values())
            for r in rows
        ]
        assert got == [tuple(e[:7]) for e in expected]
        return
    if flag == "-csv":
        rows = list(csv.DictReader(io.StringIO(out)))
        got = [(r["f"], r["d"], r["a"], r["l"], r["s"]) for r in rows]
    elif flag == "-line":
        blocks = [block.split("\n") for block in out.strip().split("\n\n")]
        rows = [dict(line.strip().split(" = ") for line in block) for block in blocks]
        got = [(r["f"], r["d"], r["a"], r["l"], r["s"]) for r in rows]
    else:
        lines = [line for line in out.splitlines() if line.startswith("| ")][1:]
        cells = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines]
        got = [(c[1], c[2], c[3], c[4], c[5]) for c in cells]
    assert got == [(e[0], e[1], e[7], e[8], e[9]) for e in expected]


@pytest.mark.parametrize("flag", ["-csv", "-line", "-markdown", "-table"])
def test_text_modes_print_every_value_as_duckdb_does(capsys, flag):
    """Booleans, decimals, dates and the values inside a STRUCT printed as Python's str
    (True, Decimal('1.50'), datetime.date(2024, 1, 2)): text modes print DuckDB's text."""
    query = (
        "SELECT true AS b, 1.50::DECIMAL(4, 2) AS dec, "
        "{'s': 'x', 'd': DATE '2024-01-02', 'n': 1.50::DECIMAL(4, 2)} AS st, "
        "[true, NULL] AS l"
    )
    assert main([flag, "-c", query]) == 0
    out = capsys.readouterr().out
    [expected] = duckdb.sql(f"SELECT COLUMNS(*)::VARCHAR FROM ({query})").fetchall()
    assert expected == ("true", "1.50", "{'s': x, 'd': 2024-01-02, 'n': 1.50}", "[true, NULL]")
    if flag == "-csv":
        got = tuple(next(csv.DictReader(io.StringIO(out))).values())
    elif flag == "-line":
        got = tuple(line.split(" = ", 1)[1] for line in out.strip().splitlines())
    else:
        line = [line for line in out.splitlines() if line.startswith("| ")][1]
        got = tuple(cell.strip() for cell in line.strip("|").split(" | "))
    assert got == expected


def test_a_macros_own_arguments_are_told_from_a_nested_calls():
    """The misspelt-argument hint reads the call's own `name :=` arguments: not those of a
    call inside it, nor text inside a string literal."""
    from aefsql.shell import _named_arguments

    nested = (
        "SELECT * FROM aef_pixels((SELECT geom FROM aef_grid([0, 0, 1, 1], cell := 100, "
        "years := 2023)), yeers := 2023)"
    )
    assert _named_arguments(nested, "aef_pixels") == ["yeers"]
    quoted = "FROM aef_pixels('POLYGON((0 0, 1 1)) x := 1', yeers := 2023, crs := 4326)"
    assert _named_arguments(quoted, "aef_pixels") == ["yeers", "crs"]
