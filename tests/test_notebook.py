"""The Colab notebook runs top to bottom on CPU (nbclient) and produces its figures."""

import os
import pathlib

import nbformat
from nbclient import NotebookClient
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "everest_jax_colab.ipynb"


def test_notebook_runs_end_to_end_and_writes_its_figures(tmp_path, monkeypatch):
    monkeypatch.setenv("FIGURES", str(tmp_path / "figures"))
    monkeypatch.setenv("STEPS", "20")
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    for name in ("selection.png", "loss.png", "reconstruction.png", "stmg_recompute.png"):
        with Image.open(tmp_path / "figures" / name) as image:
            assert image.format == "PNG" and min(image.size) > 100, name
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    first, last = (float(x) for x in text.split("loss ")[1].split()[0:3:2])
    assert last < first  # 20 steps already lower the reconstruction loss
    assert "frames/s" in text
