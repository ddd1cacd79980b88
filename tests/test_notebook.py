"""examples/notebook.ipynb runs top to bottom and draws its three pictures."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "notebook.ipynb"


def test_notebook_executes_and_draws(tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    outputs = [o for cell in notebook.cells for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 3
    text = "".join(o.get("text", "") for o in outputs)
    assert "28800 rows = 14400 points x 2 years" in text
    # Areas, not only points: read_area, picture (the third image), aef_pixels and aef_zonal.
    assert "read_area: {'year': 2, 'band': 3," in text
    assert (tmp_path / "area.png").read_bytes().startswith(b"\x89PNG")
    assert "aef_pixels (year, pixels, with data): [(2023, " in text
    zonal = "aef_zonal (parcel, pixels, cosine of its 2023 and 2024 means): "
    assert zonal + "[('across_the_seam'" in text
