"""Make one step fail for one sample with an exception prelabel does not expect.

``install()`` wraps the bodies of :class:`prelabel.run.steps.SampleSteps`' steps: each raises
``KeyError("injected into STEP")`` when the faults file names the sample for that step, and
otherwise runs the real step. The file (JSON ``{"fetch": "sample name", ...}``, at the path in
:data:`FAULTS_ENV`) is read at every call, so one installation serves many runs, also in Ray
worker processes: there ``install`` is the ``worker_process_setup_hook``. It also appends the
size of every ``Pipeline.predict_batch`` call to the file at :data:`BATCHES_ENV`, so a test can
see the batches a Ray actor ran.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

FAULTS_ENV = "PRELABEL_TEST_STEP_FAULTS"
BATCHES_ENV = "PRELABEL_TEST_BATCHES"
STEPS = ("check", "fetch", "infer", "encode", "deliver")


def injected_reason(step: str) -> str:
    """The reason the report gives for a sample whose ``step`` raised the injected error."""
    return f"KeyError: 'injected into {step}'"


def _targets() -> dict[str, str]:
    path = os.environ.get(FAULTS_ENV)
    if not path or not Path(path).exists():
        return {}
    targets: dict[str, str] = json.loads(Path(path).read_text(encoding="utf-8"))
    return targets


def _faulty(step: str, original: Callable[..., Any]) -> Callable[..., Any]:
    def run(self: Any, job: Any, *args: Any) -> Any:
        if _targets().get(step) == job.sample.name:
            raise KeyError(f"injected into {step}")
        return original(self, job, *args)

    run.injected = True  # type: ignore[attr-defined]
    return run


def _counted(original: Callable[..., Any]) -> Callable[..., Any]:
    def run(self: Any, images: list[Any], *args: Any, **kwargs: Any) -> Any:
        path = os.environ.get(BATCHES_ENV)
        if path:
            with open(path, "a", encoding="utf-8") as f:
                f.write(f"{len(images)}\n")
        return original(self, images, *args, **kwargs)

    run.injected = True  # type: ignore[attr-defined]
    return run


def install(setattr_: Callable[[Any, str, Any], None] = setattr) -> None:
    """Wrap the steps (idempotent); tests pass ``monkeypatch.setattr`` to undo it after."""
    from prelabel.pipeline.pipeline import Pipeline
    from prelabel.run.steps import SampleSteps

    for step in STEPS:
        original = getattr(SampleSteps, f"_{step}")
        if not getattr(original, "injected", False):
            setattr_(SampleSteps, f"_{step}", _faulty(step, original))
    if not getattr(Pipeline.predict_batch, "injected", False):
        setattr_(Pipeline, "predict_batch", _counted(Pipeline.predict_batch))


def one_sample_per_step(sample_names: Sequence[str], path: Path) -> dict[str, str]:
    """Break one sample in each step (``step -> sample name``), written to the faults file."""
    targets = dict(zip(STEPS, sample_names, strict=False))
    path.write_text(json.dumps(targets), encoding="utf-8")
    return targets


def assert_only_broken_samples_failed(
    outcomes: Iterable[dict[str, Any]], broken: dict[str, str], sample_names: Sequence[str]
) -> None:
    """Report outcomes: each broken sample failed with its step's reason, the others labeled."""
    by_name = {o["sample_name"]: o for o in outcomes}
    assert len(by_name) == len(sample_names)  # every sample has an outcome: the run went on
    for step, name in broken.items():
        assert by_name[name]["result"] == "failed", step
        assert by_name[name]["reason"] == injected_reason(step)
        assert by_name[name]["transient"] is False
    for name in set(sample_names) - set(broken.values()):
        assert by_name[name]["result"] == "labeled", name
