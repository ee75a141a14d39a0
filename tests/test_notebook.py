"""The review notebook runs headless, top to bottom, in demo mode (emulator + tiny models).

The notebook itself never pushes on its own: a person does, with the buttons. So the test adds
a cell that presses them in the kernel, as the front-end would (accept the two least confident
samples, push, measure, tune, measure again, save the config), and a cell that reads the pushed
labels back through the real SDK, independently of the review package. Both go before the last
cell, which stops the emulator.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from prelabel.config import load_settings

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "review.ipynb"

DRIVE = """
_gallery = [e.score for e in app.entries]
app.cards[0].click()
app.accept_button.click()
app.cards[1].click()
app.accept_button.click()
app.push_button.click()
app.measure_button.click()
app.pipeline_controls["min_area"].value = 10**6
app.measure_button.click()
app.config_path.value = "tuned.yaml"
app.save_button.click()
"""

CHECK = """
import json
from segments import SegmentsClient
_sdk = SegmentsClient(API_KEY, api_url=API_URL)
_pushed = [e.sample.uuid for e in app.entries if e.outcome and e.outcome.result == "labeled"]
_status = [str(_sdk.get_label(u, labelset="ground-truth").label_status) for u in _pushed]
print(json.dumps({
    "pushed": _pushed,
    "status": _status,
    "gallery": _gallery,
    "outcomes": app.outcomes.value,
    "measurements": app.measurements.value,
    "message": app.message.value,
}))
"""


@pytest.mark.slow
def test_review_notebook_runs_and_its_buttons_push_measure_and_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("PRELABEL_DATASET", "PRELABEL_API_URL", "PRELABEL_CONFIG", "PRELABEL_MODELS"):
        monkeypatch.delenv(name, raising=False)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    notebook.cells.insert(len(notebook.cells) - 1, nbformat.v4.new_code_cell(DRIVE))
    notebook.cells.insert(len(notebook.cells) - 1, nbformat.v4.new_code_cell(CHECK))
    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    )
    client.execute()  # raises CellExecutionError if any cell fails
    check = notebook.cells[-2].outputs[-1]["text"].strip().splitlines()[-1]
    result = json.loads(check)
    assert len(result["pushed"]) == 2
    assert result["status"] == ["PRELABELED", "PRELABELED"]
    assert result["outcomes"].count("<td>labeled</td>") == 2
    assert len(result["gallery"]) == 4 and result["gallery"] == sorted(result["gallery"])
    assert "<td>before tuning</td>" in result["measurements"]
    assert "<td>now (1 changes)</td><td>0.0</td>" in result["measurements"]
    assert "saved tuned.yaml" in result["message"]
    assert load_settings(tmp_path / "tuned.yaml").pipeline.min_area == 10**6
    assert (tmp_path / "review-demo" / "state" / "state.sqlite").is_file()
