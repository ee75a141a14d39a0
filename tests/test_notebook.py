"""The review notebook runs headless, top to bottom, in demo mode (emulator + tiny models)."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "review.ipynb"

# Appended before the last cell (which stops the emulator): reads the pushed labels back
# through the real SDK, independently of the review module.
CHECK = """
import json
from segments import SegmentsClient
_sdk = SegmentsClient(API_KEY, api_url=API_URL)
_pushed = [o.sample_uuid for o in outcomes if o.result == "labeled"]
_status = [str(_sdk.get_label(u, labelset="ground-truth").label_status) for u in _pushed]
print(json.dumps({"pushed": _pushed, "status": _status}))
"""


@pytest.mark.slow
def test_review_notebook_runs_and_pushes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PRELABEL_DATASET", raising=False)
    monkeypatch.delenv("PRELABEL_API_URL", raising=False)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    notebook.cells.insert(len(notebook.cells) - 1, nbformat.v4.new_code_cell(CHECK))
    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    )
    client.execute()  # raises CellExecutionError if any cell fails
    check = notebook.cells[-2].outputs[-1]["text"].strip().splitlines()[-1]
    result = json.loads(check)
    assert len(result["pushed"]) == 2
    assert result["status"] == ["PRELABELED", "PRELABELED"]
    assert (tmp_path / "review-demo" / "state" / "state.sqlite").is_file()
