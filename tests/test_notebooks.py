"""Every notebook runs headless with nbclient on the embedded models, offline, and is stored without outputs.

Notebook 07 trains with ``VLE_TUTORIAL_QUICK=1`` (a few steps), so the whole set stays within a few minutes on two
cores.
"""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
ALL = sorted(NOTEBOOKS.glob("*.ipynb"))
NEEDS_SHIPPED = Path(__file__).resolve().parent.parent / "vle" / "checkpoints" / "vle-tiny-shapes-vqa" / "config.json"


def test_the_tutorials_are_numbered_and_the_explorer_is_there():
    names = [path.name for path in ALL]
    assert "explorer.ipynb" in names
    numbered = [name for name in names if name[:2].isdigit()]
    assert [int(name[:2]) for name in numbered] == list(range(1, len(numbered) + 1)) and len(numbered) >= 7


@pytest.mark.parametrize("path", ALL, ids=[path.stem for path in ALL])
def test_stored_without_outputs(path):
    book = nbformat.read(path, as_version=4)
    for cell in book.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name}: strip the outputs"


@pytest.mark.skipif(not NEEDS_SHIPPED.is_file(), reason="the embedded models are not shipped yet")
@pytest.mark.timeout(180)
@pytest.mark.parametrize("path", ALL, ids=[path.stem for path in ALL])
def test_runs_headless(path, monkeypatch):
    monkeypatch.setenv("VLE_TUTORIAL_QUICK", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "agg")
    book = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(book, timeout=150, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()
    errors = [output for cell in book.cells if cell.cell_type == "code" for output in cell.outputs
              if output.get("output_type") == "error"]
    assert not errors
