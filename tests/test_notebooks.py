"""The notebooks are committed without outputs and run top to bottom on the sample stores."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from pupsnr_dask import query
from pupsnr_dask.store.zarr_io import open_store

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert [p.name for p in NOTEBOOKS] == ["explore.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


def test_explore_notebook_runs_on_the_sample_stores(
    results_store, images_store, tmp_path, monkeypatch
):
    monkeypatch.setenv("PUPSNR_RESULTS", str(results_store))
    monkeypatch.setenv("PUPSNR_IMAGES", str(images_store))
    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    client = NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    texts = "\n".join(o.get("data", {}).get("text/plain", "") for o in outputs)
    assert str(results_store) in texts and str(images_store) in texts  # paths from the env
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) >= 5  # two worst-image grids, one best-image grid, the scatter, the plot
    worst = query.extremes(open_store(str(results_store), "psnr"), "gray", 8, n=3, progress=False)
    for source in worst.source.values.tolist():
        assert source in texts
    assert all(c.execution_count for c in nb.cells if c.cell_type == "code")
