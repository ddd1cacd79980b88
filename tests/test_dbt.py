"""The dbt-duckdb plugin in real `dbt` runs: models that sample embeddings (locally, and over S3
with several threads), an incremental model that samples only new plots, the warning about
views, and a catalog that cannot be reached."""

import socket
import time
from pathlib import Path

import duckdb
import pytest
from helpers import (
    SAMPLE_PLOTS,
    dbt,
    node_results,
    plots_in_tile,
    tile_points,
    write_plots_seed,
    write_project,
)

import aefsql

pytestmark = pytest.mark.dbt

pytest.importorskip("dbt.adapters.duckdb")

# The incremental pattern of the README: only plots not yet sampled go through aef_*.
SAMPLE_NEW_PLOTS = """{{ config(materialized='incremental', unique_key=['plot', 'year']) }}
WITH new_plots AS (
    SELECT * FROM {{ ref('plots') }}
    {% if is_incremental() %}
    WHERE plot NOT IN (SELECT plot FROM {{ this }})
    {% endif %}
)
SELECT *, '{{ invocation_id }}' AS run_id
FROM aef_sample_points('new_plots', years := [2023, 2024], bands := ['A00', 'A63'])
"""
COUNT_PLOTS = "SELECT count(*) AS n FROM {{ ref('plots') }}"  # a view: nothing from aefsql
VIEW_WARNING = (
    "view model plot_embeddings_view calls aef_* functions: the view fails in any process "
    "that has not registered aefsql"
)


def query(database: Path, sql: str) -> list:
    con = duckdb.connect(str(database), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_dbt_run_materialises_sampled_embeddings(gdal_collection, tmp_path):
    project, database = tmp_path / "project", tmp_path / "warehouse.duckdb"
    lon, lat, _, _ = tile_points(3, 5, seed=14)
    values = ", ".join(
        f"('plot{i}', {a}, {b})" for i, (a, b) in enumerate(zip(lon, lat, strict=True))
    )
    plots = (
        "{{ config(materialized='table') }}\n"
        f"SELECT * FROM (VALUES {values}, ('sea', 0.0, 0.0)) t(plot, lon, lat)"
    )
    models = {"plots": plots, "plot_embeddings": SAMPLE_PLOTS}
    write_project(project, database, {"catalog": gdal_collection.index}, models)
    run = dbt(project, "run")
    assert run.returncode == 0, run.stdout[-3000:]
    rows = query(database, "SELECT plot, year, A00, A63 FROM plot_embeddings ORDER BY plot, year")
    assert len(rows) == 12  # 6 plots x 2 years, none lost
    assert [r[:2] for r in rows if r[0] == "sea"] == [("sea", 2023), ("sea", 2024)]
    assert all(r[2] is None for r in rows if r[0] == "sea")
    assert sum(r[2] is not None for r in rows) >= 8
    assert "calls aef_* functions" not in run.stdout  # no view here


@pytest.fixture(scope="module")
def s3_builds(s3_collection, tmp_path_factory):
    """A project over the S3 catalog built twice with `dbt build --threads 4`, plots added to
    its seed in between: (project, database, first build, incremental rows after it, second
    build)."""
    folder = tmp_path_factory.mktemp("dbt_s3")
    project, database = folder / "project", folder / "warehouse.duckdb"
    plugin_config = {
        "catalog": s3_collection.index,
        "storage_options": s3_collection.storage_options,
    }
    models = {
        "plot_embeddings": SAMPLE_PLOTS,
        "plot_embeddings_view": SAMPLE_PLOTS.replace("'table'", "'view'"),
        "plot_embeddings_incremental": SAMPLE_NEW_PLOTS,
        "plot_tiles": "{{ config(materialized='table') }}\nSELECT * FROM aef_index()",
        "plot_count": COUNT_PLOTS,
    }
    write_project(project, database, plugin_config, models, threads=4)
    first_plots = [*plots_in_tile(6, seed=1), ("sea", 0.0, 0.0)]
    write_plots_seed(project, first_plots)
    first = dbt(project, "build", "--threads", "4")
    incremental = query(database, "SELECT * FROM plot_embeddings_incremental ORDER BY ALL")
    write_plots_seed(project, first_plots + plots_in_tile(3, seed=2))
    second = dbt(project, "build", "--threads", "4")
    return project, database, first, incremental, second


def expected_samples(database: Path, collection) -> list:
    """aef_sample_points over the warehouse's plots, sampled here from the local files."""
    plots = query(database, "SELECT plot, lon, lat FROM plots")
    con = aefsql.connect(catalog=collection.index)
    try:
        con.execute("CREATE TABLE plots (plot VARCHAR, lon DOUBLE, lat DOUBLE)")
        con.executemany("INSERT INTO plots VALUES (?, ?, ?)", plots)
        return con.execute(
            "SELECT plot, year, A00, A63 FROM aef_sample_points('plots', years := [2023, 2024])"
            " ORDER BY plot, year"
        ).fetchall()
    finally:
        con.close()


def test_dbt_build_with_threads_over_s3(s3_builds, gdal_collection):
    project, database, first, _, second = s3_builds
    assert first.returncode == 0, first.stdout[-3000:]
    assert second.returncode == 0, second.stdout[-3000:]
    rows = query(database, "SELECT plot, year, A00, A63 FROM plot_embeddings ORDER BY plot, year")
    assert len(rows) == 2 * 10  # 10 plots (the sea one included) x 2 years
    assert rows == expected_samples(database, gdal_collection)
    assert sum(r[2] is not None for r in rows) == 18  # every plot but the sea one is covered
    assert query(database, "SELECT count(*) FROM plot_tiles") == [(8,)]
    assert {r["status"] for r in node_results(project, second).values()} == {"success"}


def test_view_model_calling_aef_warns(s3_builds):
    _, _, first, _, _ = s3_builds
    assert first.stdout.count(VIEW_WARNING) == 1, first.stdout[-3000:]
    assert first.stdout.count("calls aef_* functions") == 1  # the table models do not warn


def test_incremental_model_samples_only_new_plots(s3_builds, gdal_collection):
    _, database, _, first_rows, _ = s3_builds
    rows = query(database, "SELECT * FROM plot_embeddings_incremental ORDER BY ALL")
    columns = [c[0] for c in query(database, "DESCRIBE plot_embeddings_incremental")]
    run_id = columns.index("run_id")
    assert len(first_rows) == 2 * 7 and len(rows) == 2 * 10
    assert set(first_rows) <= set(rows)  # the first build's rows kept, not sampled again
    new = [r for r in rows if r not in set(first_rows)]
    assert {r[0] for r in new} == {name for name, _, _ in plots_in_tile(3, seed=2)}
    assert len({r[run_id] for r in new}) == 1 and new[0][run_id] != first_rows[0][run_id]
    plot, year, a00, a63 = (columns.index(c) for c in ("plot", "year", "A00", "A63"))
    sampled = sorted((r[plot], r[year], r[a00], r[a63]) for r in rows)
    assert sampled == expected_samples(database, gdal_collection)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def test_unreachable_catalog_fails_only_models_calling_aef(tmp_path):
    catalog = f"http://127.0.0.1:{closed_port()}/index.parquet"
    project, database = tmp_path / "project", tmp_path / "warehouse.duckdb"
    models = {
        "plot_count": COUNT_PLOTS,
        "plot_embeddings": SAMPLE_PLOTS,
    }
    write_project(project, database, {"catalog": catalog}, models)
    write_plots_seed(project, plots_in_tile(2, seed=3))
    started = time.monotonic()
    build = dbt(project, "build")
    elapsed = time.monotonic() - started
    results = node_results(project, build)
    # Opening connections reads nothing: the seed and the model without aef_* succeed ...
    assert results["plots"]["status"] == "success", build.stdout[-3000:]
    assert results["plot_count"]["status"] == "success", build.stdout[-3000:]
    assert query(database, "SELECT n FROM plot_count") == [(2,)]
    # ... and the model calling aef_* fails, saying on one line which catalog and why.
    assert results["plot_embeddings"]["status"] == "error"
    message = results["plot_embeddings"]["message"]
    assert [line for line in message.splitlines() if catalog in line and "catalog" in line], message
    assert "Traceback" not in build.stdout
    assert elapsed < 60, f"dbt build took {elapsed:.0f} s"


def test_unknown_plugin_config_is_a_clear_error():
    from aefsql.dbt import Plugin
    from aefsql.errors import AefsqlError

    with pytest.raises(AefsqlError, match=r"unknown config \['catlog'\]"):
        Plugin("aefsql", {"catlog": "x"})
