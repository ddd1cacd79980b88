"""The one builder of aef_* call text (aefsql/duck/calls.py) that the CLI, the Python API and
Spark share: values become literals by one quoting rule."""

import duckdb
import numpy as np
import pytest

from aefsql.duck.calls import sql_identifier, sql_literal, table_call


@pytest.mark.parametrize(
    "value, text",
    [
        ("lon", "'lon'"),
        ("it's", "'it''s'"),
        (None, "NULL"),
        (True, "true"),
        (False, "false"),
        (32633, "32633"),
        (np.int64(2024), "2024"),
        ((2023, 2024), "[2023, 2024]"),
        (["A00", "A'1"], "['A00', 'A''1']"),
        ([], "[]"),
    ],
)
def test_literal_text(value, text):
    assert sql_literal(value) == text


@pytest.mark.parametrize("value", [1.5, {"a": 1}, b"wkb"])
def test_values_without_a_literal_are_refused(value):
    with pytest.raises(TypeError, match="no SQL literal"):
        sql_literal(value)


def test_literals_read_back_as_the_values():
    """What DuckDB reads from the literals is the value itself: a string cannot end early."""
    values = ["it's'); DROP TABLE t; --", "", "\\n", "A00"], 2024, None, True
    with duckdb.connect() as con:
        row = con.execute(f"SELECT {', '.join(map(sql_literal, values))}").fetchall()[0]
    assert row == values


def test_call_text():
    assert table_call(
        "aef_sample_points",
        "points.csv",
        years=[2023, 2024],
        crs="EPSG:4326",
        geometry_column=None,  # left out: the macro's default applies
        x_column="lon",
        bands=("A00",),
        as_vector=False,
    ) == (
        "aef_sample_points('points.csv', years := [2023, 2024], crs := 'EPSG:4326', "
        "x_column := 'lon', bands := ['A00'], as_vector := false)"
    )
    assert table_call("__aef_located", "t", None, "g") == "__aef_located('t', NULL, 'g')"
    assert table_call("f") == "f()"


def test_call_runs_on_duckdb():
    """A table macro called with the text: positional and named arguments arrive as given,
    and a named parameter left out keeps its default."""
    with duckdb.connect() as con:
        con.execute("CREATE TABLE t AS SELECT 1 AS id")
        con.execute(
            "CREATE MACRO echo(tbl, name := 'default', years := [], flag := false) AS TABLE "
            "SELECT id, name, years, flag FROM query_table(tbl)"
        )
        call = table_call("echo", "t", name="it's", years=(2023, 2024), flag=None)
        assert con.execute(f"FROM {call}").fetchall() == [(1, "it's", [2023, 2024], False)]


@pytest.mark.parametrize("name", ["lon", "select", 'a "quoted" name', "año 2024"])
def test_identifiers_come_back_as_the_name(name):
    """Any column name, keywords and quotes too, is one identifier to DuckDB."""
    assert duckdb.sql(f"SELECT 1 AS {sql_identifier(name)}").columns == [name]
