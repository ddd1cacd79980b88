"""The DuckDB versions aefsql claims: pyproject's floor is the one connect() enforces, and an
older DuckDB is refused by name before anything is registered (DuckDB 1.4.5 failed deep in
registration with "Scalar Function with name st_crs does not exist!")."""

import re
import tomllib
from pathlib import Path

import duckdb
import pytest

from aefsql.duck.registration import MIN_DUCKDB, check_duckdb_version
from aefsql.errors import AefsqlError

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def test_pyproject_declares_the_floor_connect_enforces():
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    floor = next(d for d in dependencies if re.match(r"duckdb\s*>=", d))
    assert floor == "duckdb>=" + ".".join(map(str, MIN_DUCKDB))


def test_this_duckdb_is_new_enough():
    check_duckdb_version(duckdb.__version__)


@pytest.mark.parametrize("version", ["1.4.5", "1.5.6", "1.4.0-dev123", "v1.3.2", "0.10.3"])
def test_an_older_duckdb_is_refused_naming_the_fix(version):
    with pytest.raises(AefsqlError) as refused:
        check_duckdb_version(version)
    assert str(refused.value) == (
        "aefsql needs DuckDB 2.0 or later (its core GEOMETRY type and ST_ functions); this "
        f"Python has duckdb {version}: pip install --upgrade 'duckdb>=2.0'"
    )


@pytest.mark.parametrize("version", ["2.0.0", "2.0.1", "2.1.0.dev42", "10.0.0", "unknown"])
def test_newer_or_unreadable_versions_pass(version):
    check_duckdb_version(version)


def test_connect_checks_before_reading_the_catalog(monkeypatch):
    """The version is the first thing to fix: before a missing catalog is reported."""
    import aefsql

    monkeypatch.setattr(duckdb, "__version__", "1.4.5")
    with pytest.raises(AefsqlError, match=r"needs DuckDB 2\.0 .*duckdb 1\.4\.5"):
        aefsql.connect(catalog="/nonexistent/index.parquet")
