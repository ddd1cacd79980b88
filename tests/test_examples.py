"""The examples run and print what they promise."""

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_quickstart_runs(tmp_path):
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "same_place_2023_vs_2024" in result.stdout
    assert "4 rows" in result.stdout  # the LEFT JOIN keeps the point in the open ocean
    assert (tmp_path / "index.parquet").exists()
    # Areas too: read_area's cube, picture's PNG, aef_pixels' rows and aef_zonal's means.
    assert "read_area: {'year': 2, 'band': 3," in result.stdout
    assert (tmp_path / "area.png").read_bytes().startswith(b"\x89PNG")
    assert "with_data" in result.stdout
    assert "across_the_seam" in result.stdout and "mean_2023_vs_2024" in result.stdout
