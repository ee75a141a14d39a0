"""``benchmarks/gpu_suite.py``: the one command a GPU box runs must not rot between GPU visits.

``--smoke`` runs every section with the tiny models on the CPU; the budget guard must print the
JSON line however early the time runs out.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
import weakref
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_suite.py"


def _suite(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_suite", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_suite", module)
    spec.loader.exec_module(module)
    return module


def _run(module: ModuleType, capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert module.main(["--smoke", "--device", "cpu", *argv]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary: dict[str, Any] = json.loads(lines[-1])
    return summary


@pytest.mark.slow
def test_the_smoke_run_measures_every_section(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = _run(_suite(monkeypatch), capsys, "--budget-s", "1200")

    assert summary["smoke"] is True and "stopped" not in summary
    for section in ("throughput", "host_overhead", "seed_baseline", "dtype_boxes", "end_to_end"):
        assert "error" not in summary[section] and "skipped" not in summary[section], section
    for backend in ("grounded_sam", "sam3"):
        (config,) = summary["throughput"][backend]
        rows = config["batches"]
        assert [row["batch"] for row in rows] == [1, 2]
        assert all(row["images_per_s"] > 0 for row in rows), rows
        assert all(row["stage_s_per_image"]["merge"] > 0 for row in rows), rows
    host = summary["host_overhead"]
    assert host["total_s"]["host"] > 0 and host["port_stuff_s"]["wall"] > 0
    spread = host["port_over_ours_per_image"]  # one image: its own ratio three times
    assert 0 < spread["min"] == spread["median"] == spread["max"]
    port_share = host["port_stuff_s"]["wall"] / host["stuff_branch_s"]
    assert spread["median"] == pytest.approx(port_share, rel=0.1)  # the means are rounded
    assert summary["seed_baseline"]["images_per_s"] > 0
    assert summary["best_over_seed"] > 0
    assert summary["dtype_boxes"]["measured"] is False  # no GPU here: it says so
    assert summary["end_to_end"]["pipelined_ips"] > 0


def test_the_json_line_comes_out_when_the_budget_runs_out(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = _run(_suite(monkeypatch), capsys, "--budget-s", "0.2")

    assert summary["elapsed_s"] < 30
    assert "stopped" in summary or all(
        "skipped" in summary[s] or "stopped" in summary[s]
        for s in ("throughput", "host_overhead", "seed_baseline", "dtype_boxes", "end_to_end")
    )
    assert summary["best_over_seed"] is None


def test_the_budget_alarm_waits_for_a_finalizer_to_finish(monkeypatch: pytest.MonkeyPatch) -> None:
    """An alarm raised inside a garbage-collector callback would be swallowed ("Exception
    ignored in") and leave the callback half done; it comes once the callback has finished."""
    module = _suite(monkeypatch)
    finished: list[bool] = []

    def slow_callback() -> None:
        time.sleep(0.3)  # the alarm (at 0.05 s) arrives in here
        finished.append(True)

    class Held:
        pass

    held = Held()
    weakref.finalize(held, slow_callback)
    budget = module.Budget(0.05)
    budget.arm()
    try:
        with pytest.raises(module.BudgetExceeded):
            del held  # runs the finalizer now, through weakref.finalize.__call__
            time.sleep(2)
    finally:
        budget.disarm()
    assert finished == [True]


def test_the_budget_alarm_waits_for_weakref_module_code_to_finish(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The garbage collector also runs a ``WeakSet``'s removal callback amid other code, and CI
    once saw the alarm swallowed there. So the alarm waits while any code of the weakref
    modules runs: here ``WeakSet.add``, which hashes the item (slowly) from inside that code."""
    module = _suite(monkeypatch)

    class SlowHash:
        def __hash__(self) -> int:
            time.sleep(0.3)  # the alarm (at 0.05 s) arrives in here, inside WeakSet.add
            return 1

    item = SlowHash()
    members: weakref.WeakSet[SlowHash] = weakref.WeakSet()
    budget = module.Budget(0.05)
    budget.arm()
    try:
        with pytest.raises(module.BudgetExceeded):
            members.add(item)
            time.sleep(2)
    finally:
        budget.disarm()
    assert len(members) == 1  # the add finished before the alarm was raised
