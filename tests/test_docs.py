"""The README stays true: its commands are CI's, and it documents every registered function."""

import re
from pathlib import Path

import aefsql

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)\n```", text, flags=re.DOTALL)


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = next(block for block in shell_blocks(README) if "pytest" in block)
    assert test_command in ci.splitlines()


def test_readme_main_job_is_the_demo():
    assert any(block.endswith("aefsql demo") for block in shell_blocks(README))


def registered_aef_functions(con) -> set[str]:
    rows = con.execute(
        "SELECT DISTINCT function_name FROM duckdb_functions() WHERE function_name LIKE 'aef%'"
    ).fetchall()
    return {name for (name,) in rows}


def test_every_registered_function_is_documented():
    con = aefsql.connect()
    try:
        names = registered_aef_functions(con)
    finally:
        con.close()
    table = README.split("## Functions", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(aef_\w+)\(", table, flags=re.MULTILINE))
    assert names == documented
