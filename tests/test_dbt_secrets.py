"""A presigned catalog URL in a real `dbt build`: its signature and credential never reach
what dbt prints or writes (stdout, logs/dbt.log, target/run_results.json, every file under
target/ and logs/), whether a model fails or passes. (The loopback S3 server does not check
signatures: a wrong one cannot be tested against it.)"""

from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from helpers import SAMPLE_PLOTS, dbt, node_results, plots_in_tile, write_plots_seed, write_project

pytestmark = pytest.mark.dbt

pytest.importorskip("dbt.adapters.duckdb")

TILES = "{{ config(materialized='table') }}\nSELECT * FROM aef_index()"


def secrets_of(url: str) -> list[str]:
    """The signature and credential a presigned URL carries, in the forms they could be
    written in, and the names of their parameters."""
    query = parse_qs(urlsplit(url).query)
    credential = query["X-Amz-Credential"][0]
    secrets = [query["X-Amz-Signature"][0], credential, unquote(credential)]
    return [*secrets, credential.replace("/", "%2F"), "X-Amz-Signature", "X-Amz-Credential"]


def build(folder: Path, catalog: str) -> tuple:
    """`dbt build` through `catalog` of a seed of plots, a table model sampling them and one
    listing the catalog's tiles: (project, run, {file: text} of what dbt printed and wrote)."""
    project, database = folder / "project", folder / "warehouse.duckdb"
    models = {"plot_embeddings": SAMPLE_PLOTS, "plot_tiles": TILES}
    write_project(project, database, {"catalog": catalog}, models)
    write_plots_seed(project, plots_in_tile(3, seed=4))
    run = dbt(project, "build")
    written = {"stdout": run.stdout, "stderr": run.stderr}
    for sub in ("target", "logs"):
        for path in sorted((project / sub).rglob("*")):
            if path.is_file():
                written[str(path.relative_to(project))] = path.read_bytes().decode(errors="replace")
    return project, run, written


def leaks(written: dict, secrets: list[str]) -> list:
    return [(name, s) for name, text in written.items() for s in secrets if s in text]


def test_a_missing_presigned_catalog_is_named_in_dbt_output_without_its_signature(
    presigned, tmp_path
):
    _, missing, _ = presigned
    project, run, written = build(tmp_path, missing)
    results = node_results(project, run)
    assert run.returncode != 0, run.stdout[-3000:]
    assert results["plot_embeddings"]["status"] == results["plot_tiles"]["status"] == "error"
    # The failure names the catalog (its path) where users look: the summary, the log, the
    # run results.
    for name in ("stdout", "logs/dbt.log", "target/run_results.json"):
        assert "no-such-index.parquet" in written[name], (name, written[name][-3000:])
    assert "no-such-index.parquet" in results["plot_embeddings"]["message"]
    assert not leaks(written, secrets_of(missing))


def test_a_presigned_catalog_passes_and_fails_without_its_signature_in_dbt_output(
    presigned, tmp_path
):
    """The signature grants the catalog, not its tiles: listing them passes, sampling them
    fails on the first tile (access denied), named by its path."""
    present, _, _ = presigned
    project, run, written = build(tmp_path, present)
    results = node_results(project, run)
    assert results["plot_tiles"]["status"] == "success", run.stdout[-3000:]
    assert results["plot_embeddings"]["status"] == "error", run.stdout[-3000:]
    tile = "/aef/v1/annual/20"  # the tiles' folders are years
    for name in ("stdout", "logs/dbt.log", "target/run_results.json"):
        assert tile in written[name] and "access denied" in written[name], name
    assert not leaks(written, secrets_of(present))
