"""The fast loop stays fast: with the README's -m expression, collecting the suite imports
none of PySpark (a JVM), torch, TorchGeo or dbt. tests/conftest.py leaves out the modules
whose `pytestmark` that expression deselects; a test that imports one of them in its body
carries the marker itself."""

import json
import os
import subprocess
import sys

from helpers import ROOT, readme_fast_loop

HEAVY = ("pyspark", "torch", "torchgeo", "dbt")
# A plugin for the child pytest: which of HEAVY collecting the suite imported.
PROBE = f"""
import json, sys

def pytest_collection_finish(session):
    heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)
    print("HEAVY " + json.dumps({{"imported": heavy, "items": len(session.items)}}))
"""


def collect(tmp_path, markexpr: str) -> dict:
    (tmp_path / "heavy_probe.py").write_text(PROBE)
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
        + ["-p", "heavy_probe", "-m", markexpr, "tests"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    line = next(line for line in run.stdout.splitlines() if line.startswith("HEAVY "))
    return json.loads(line.removeprefix("HEAVY "))


def test_fast_loop_imports_no_heavy_library(tmp_path):
    found = collect(tmp_path, readme_fast_loop())
    assert found["items"] > 0
    assert found["imported"] == []
