"""The dbt-duckdb plugin: a real `dbt run` of a model that samples embeddings."""

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from test_collection import tile_points

pytest.importorskip("dbt.adapters.duckdb")


def write_project(folder, catalog: str, database) -> None:
    lon, lat, _, _ = tile_points(3, 5, seed=14)
    values = ", ".join(
        f"('plot{i}', {a}, {b})" for i, (a, b) in enumerate(zip(lon, lat, strict=True))
    )
    (folder / "models").mkdir(parents=True)
    (folder / "dbt_project.yml").write_text(
        "name: aef_demo\nversion: '1.0'\nprofile: aef_demo\nmodel-paths: [models]\n"
    )
    (folder / "profiles.yml").write_text(f"""
aef_demo:
  target: dev
  outputs:
    dev:
      type: duckdb
      path: {database}
      threads: 2
      plugins:
        - module: aefsql.dbt
          config:
            catalog: {catalog}
""")
    (folder / "models" / "plots.sql").write_text(
        "{{ config(materialized='table') }}\n"
        f"SELECT * FROM (VALUES {values}, ('sea', 0.0, 0.0)) t(plot, lon, lat)"
    )
    (folder / "models" / "plot_embeddings.sql").write_text(
        "{{ config(materialized='table') }}\n"
        "SELECT * FROM aef_sample_points('{{ ref(\"plots\") }}', years := [2023, 2024],\n"
        "                                bands := ['A00', 'A63'])"
    )


def test_dbt_run_materialises_sampled_embeddings(gdal_collection, tmp_path):
    project = tmp_path / "project"
    database = tmp_path / "warehouse.duckdb"
    write_project(project, gdal_collection.index, database)
    # dbt in a process of its own, as users run it (it holds the database file while alive).
    run = subprocess.run(
        [
            str(Path(sys.executable).parent / "dbt"),
            "run",
            "--project-dir",
            str(project),
            "--profiles-dir",
            str(project),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:]
    con = duckdb.connect(str(database), read_only=True)
    try:
        rows = con.execute(
            "SELECT plot, year, A00, A63 FROM main.plot_embeddings ORDER BY plot, year"
        ).fetchall()
    finally:
        con.close()
    assert len(rows) == 12  # 6 plots x 2 years, none lost
    assert [r[:2] for r in rows if r[0] == "sea"] == [("sea", 2023), ("sea", 2024)]
    assert all(r[2] is None for r in rows if r[0] == "sea")
    assert sum(r[2] is not None for r in rows) >= 8


def test_unknown_plugin_config_is_a_clear_error():
    from aefsql.dbt import Plugin
    from aefsql.errors import AefsqlError

    with pytest.raises(AefsqlError, match=r"unknown config \['catlog'\]"):
        Plugin("aefsql", {"catlog": "x"})
