"""The Colab notebook runs end to end (install skipped, a few training steps) and shows its results; opened
outside a checkout it clones a default repository URL instead of failing."""

from __future__ import annotations

import json
import os
import re

import nbformat
from nbclient import NotebookClient

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, "experiments", "lmae_colab.ipynb")


def test_notebook_has_a_repository_default_and_detects_a_checkout():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
  assert re.search(r'REPO_URL = os.environ.get\("MASKSEG_REPO_URL", "https://github.com/[^"]+"\)', code)
  assert "find_checkout()" in code and '"git", "clone"' in code and '"pip", "install"' in code
  assert "colab.research.google.com/github/" in nb.cells[0].source


def test_lmae_colab_notebook_completes_labels(tmp_path, monkeypatch):
  monkeypatch.setenv("MASKSEG_SKIP_INSTALL", "1")
  monkeypatch.setenv("LMAE_NOTEBOOK_STEPS", "30")
  monkeypatch.setenv("LMAE_NOTEBOOK_DIR", str(tmp_path / "work"))
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")  # the kernel is its own process
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("PYTHONPATH", REPO)  # the kernel imports this checkout's package
  nb = nbformat.read(NOTEBOOK, as_version=4)
  NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
  outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
  assert not [o for o in outputs if o.output_type == "error"]
  text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
  assert "scene_1.png:" in text and "pixels changed" in text and "wrote 8 completed labels" in text
  summary = json.loads(next(line for line in text.splitlines() if line.startswith('{"miou_vs_truth"')))
  assert summary["miou_vs_truth"]["changed_pixels"] > 0
  assert 0.0 <= summary["miou_vs_truth"]["completed"] <= 1.0
  assert any("image/png" in o.get("data", {}) for o in outputs if o.output_type == "display_data")
  completed = sorted(os.listdir(tmp_path / "work" / "completed"))
  assert completed == sorted([f"scene_{i}.png" for i in range(8)] + ["review"])
  review = tmp_path / "work" / "completed" / "review"
  assert (review / "report.csv").is_file() and len(list(review.glob("*.png"))) == 8
  assert "mean confidence" in text and "run: lmae, mode train" in text
