"""examples/analysis.ipynb: committed without outputs, and run headless
(nbclient, matplotlib Agg) on the quickstart's store."""

from pathlib import Path

import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "analysis.ipynb"


def test_the_notebook_is_committed_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)


def _text(cell) -> str:
    parts = []
    for output in cell.outputs:
        parts.append(output.get("text", ""))
        parts.append(output.get("data", {}).get("text/plain", ""))
    return "".join(parts)


@pytest.mark.slow
def test_the_analysis_notebook_runs_on_the_quickstart_store(quickstart_store, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("RAYLTH_STORAGE", str(quickstart_store))
    monkeypatch.delenv("RAYLTH_SWEEP", raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")  # headless, as in CI
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()  # raises on a failing cell
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert "60 results in" in _text(code[0]) and "'random_prune'" in _text(code[0])
    assert (tmp_path / "accuracy_vs_sparsity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    comparison = _text(code[-1])
    assert "imp_wins" in comparison and "gain (pts)" in comparison
    assert "of 14 levels" in comparison  # the quickstart's levels 1..14, both seeds each
