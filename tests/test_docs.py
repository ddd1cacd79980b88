"""The docs stay true: README's commands are CI's, docs/functions.md documents exactly the
registered functions, and every SQL and Python example in them runs."""

import ast
import json
import re
import sys
import tomllib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import (
    README,
    ROOT,
    blocks,
    readme_fast_loop,
    readme_python,
    registered_aef_functions,
)

import aefsql
from aefsql.cli import main
from aefsql.demo import DEMO_POINTS, write_demo_collection

FUNCTIONS = (ROOT / "docs" / "functions.md").read_text()


@pytest.fixture(scope="module")
def demo_con(tmp_path_factory):
    index = write_demo_collection(tmp_path_factory.mktemp("docs"), tile_px=256)
    con = aefsql.connect(catalog=str(index))
    names, lons, lats = zip(*DEMO_POINTS, strict=True)
    con.register("places", pa.table({"name": names, "lon": lons, "lat": lats}))
    yield con, index
    con.close()


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = next(block for block in blocks(README, "sh") if "pytest" in block)
    assert test_command in ci.splitlines()


def test_readme_fast_loop_leaves_out_every_registered_marker():
    """The fast loop's -m, and the command for the rest, name exactly the markers
    pyproject.toml registers (without --strict-markers, pytest takes a misspelt name in -m
    for a marker no test has, and leaves out nothing)."""
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]
    markers = [line.split(":")[0] for line in options["ini_options"]["markers"]]
    assert readme_fast_loop() == " and ".join(f"not {name}" for name in markers)
    assert f'`-m "{" or ".join(markers)}"`' in README


def test_readme_main_job_is_the_demo():
    assert any(block.endswith("aefsql demo") for block in blocks(README, "sh"))


def test_functions_page_documents_exactly_the_registered_functions(demo_con):
    con, _ = demo_con
    documented = set(re.findall(r"^## (aef_\w+)\(", FUNCTIONS, flags=re.MULTILINE))
    assert documented == registered_aef_functions(con)
    for name in documented:  # and the README names each one
        assert f"`{name}(" in README


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    """The demo's folder as `aefsql demo --dir DIR` writes it (tiles of its size,
    index.parquet, places.csv), without the queries the command then runs (test_demo's)."""
    folder = tmp_path_factory.mktemp("demo")
    write_demo_collection(folder)
    return folder


def test_every_function_example_runs(demo_dir, monkeypatch, capsys):
    """As the page says: in the demo's folder, in the shell it names, after its setup."""
    monkeypatch.chdir(demo_dir)  # the COPY examples write files here
    command = next(b for b in blocks(FUNCTIONS, "sh") if "--catalog" in b).splitlines()[-1]
    arguments = command.split("aefsql ")[-1].split()
    setup = [block for block in blocks(FUNCTIONS, "sql") if "places.csv" in block]
    examples = [block for block in blocks(FUNCTIONS, "sql") if block not in setup]
    assert len(setup) == 1 and len(examples) >= 10
    for sql in examples:
        code = main([*arguments, "-json", "-c", f"{setup[0]}\n{sql}"])
        out, err = capsys.readouterr()
        assert code == 0, (sql, err)
        if sql.startswith("COPY"):  # prints nothing: the file it writes has the rows
            target = re.search(r"TO '([^']+)'", sql).group(1)
            assert pq.read_metadata(demo_dir / target).num_rows > 0, sql
            continue
        assert json.loads(out), sql


def test_readme_python_examples_run(demo_con, tmp_path, monkeypatch):
    _, index = demo_con
    monkeypatch.setenv("AEFSQL_CATALOG", str(index))  # connect() without a catalog uses it
    monkeypatch.chdir(tmp_path)
    lines = ["name,lon,lat"] + [f"{n},{a},{b}" for n, a, b in DEMO_POINTS]
    (tmp_path / "plots.csv").write_text("\n".join(lines) + "\n")

    namespace = {}
    exec(readme_python("sample_points(plots"), namespace)  # the Python section
    table = namespace["table"]
    assert table.num_rows == 4 and table.column_names[-2:] == ["A00", "A01"]
    assert table["A00"].null_count == 0  # both plots lie in demo tiles

    namespace = {}
    code = readme_python("aef_locate(p.lon")  # the canonical join
    exec(code.replace('con.sql("""', 'result = con.sql("""', 1), namespace)
    joined = namespace["result"]
    assert joined.num_rows == 6  # the seven places but the one outside every tile
    namespace["con"].close()


@pytest.mark.torch
def test_readme_chips_example_runs(demo_con, monkeypatch):
    pytest.importorskip("torch")
    _, index = demo_con
    monkeypatch.setenv("AEFSQL_CATALOG", str(index))
    namespace = {}
    exec(readme_python("ChipDataset(points"), namespace)
    batch = namespace["batch"]
    assert batch["image"].shape[1:] == (64, 64, 64)
    assert batch["image"].dtype.is_floating_point
    assert set(batch["name"]) <= {"canal", "field"} and all(batch["found"].tolist())


@pytest.mark.spark
def test_readme_spark_example_runs(demo_con, monkeypatch):
    pytest.importorskip("pyspark", minversion="4.1")
    _, index = demo_con
    monkeypatch.setenv("AEFSQL_CATALOG", str(index))
    namespace = {}
    code = readme_python("aefsql.spark.sample_points(plots")
    try:
        exec(code, namespace)
        embedded = namespace["embedded"].toArrow()
        embedded = embedded.sort_by([("name", "ascending"), ("year", "ascending")])
        assert embedded.column_names == ["name", "lon", "lat", "year", "A00", "A01"]
        assert embedded["year"].to_pylist() == [2023, 2024, 2023, 2024]
        assert embedded["A00"].null_count == 0  # both lie in demo tiles
        rows = namespace["rows"]
        assert sorted(r["name"] for r in rows) == ["canal", "field"]
        assert all(r["year"] == 2024 and r["A63"] is not None for r in rows)
    finally:
        if "spark" in namespace:
            namespace["spark"].stop()


def extra(name: str) -> set[str]:
    """The distributions `pip install 'aefsql[name]'` brings, through nested aefsql[...] extras."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    found = set()
    for requirement in extras[name]:
        dist = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower()
        if dist == "aefsql":
            for nested in re.search(r"\[(.*)\]", requirement).group(1).split(","):
                found |= extra(nested.strip())
        else:
            found.add(dist)
    return found


def test_extras_bring_what_the_docs_and_the_notebook_use():
    """[xarray] lacked rioxarray, whose .rio the README uses; [notebook] lacked xarray, which
    the notebook's read_area needs."""
    assert ".rio.crs" in README and {"xarray", "rioxarray"} <= extra("xarray")
    notebook = json.loads((ROOT / "examples" / "notebook.ipynb").read_text())
    code = "\n".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code")
    imported = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    core = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    core = {re.match(r"[A-Za-z0-9_.-]+", requirement).group(0) for requirement in core}
    provider = {"IPython": "ipykernel"}  # IPython comes with the kernel
    needed = {provider.get(m, m).lower() for m in imported - sys.stdlib_module_names - core}
    needed -= {"aefsql"}
    if "read_area(" in code:
        needed.add("xarray")
    assert needed <= extra("notebook"), needed - extra("notebook")


def test_readme_gives_the_cpu_torch_before_the_extra():
    """`pip install 'aefsql[torch]'` alone brings a CUDA build of several GB to a CPU machine:
    the README gives PyTorch's CPU-only install first."""
    cpu = README.find("pip install torch --index-url https://download.pytorch.org/whl/cpu")
    assert 0 <= cpu < README.find("pip install 'aefsql[torch]'")
    assert cpu < README.find("pip install 'aefsql[torchgeo]'")
