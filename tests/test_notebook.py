"""The tutorial notebook runs from top to bottom (on the synthetic data)."""

import nbformat
import pytest

from tests.conftest import REPO

nbclient = pytest.importorskip(
    "nbclient", reason="nbclient is a test extra: pip install -e .[test]"
)


@pytest.mark.slow  # 35 s: a kernel that trains for 10 epochs
def test_notebook_executes_and_is_committed_without_outputs(tmp_path):
    path = REPO / "notebooks" / "kitti_road_fcn8.ipynb"
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
    client = nbclient.NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    texts = [out.get("text", "") for cell in notebook.cells for out in cell.get("outputs", [])]
    assert any("validation road IoU" in text for text in texts)
    images = [
        out
        for cell in notebook.cells
        for out in cell.get("outputs", [])
        if "image/png" in out.get("data", {})
    ]
    assert len(images) >= 4  # data, batch, curves, overlays
