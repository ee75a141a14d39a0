"""Make one step fail for one sample with an exception prelabel does not expect.

``install()`` wraps the bodies of :class:`prelabel.run.steps.SampleSteps`' steps: each raises
``KeyError("injected into STEP")`` when the faults file names the sample for that step, and
otherwise runs the real step. The file (JSON ``{"fetch": "sample name", ...}``, at the path in
:data:`FAULTS_ENV`) is read at every call, so one installation serves many runs, also in Ray
worker processes: there :func:`install_on_import` is the ``worker_process_setup_hook``. It
also appends the size of every ``Pipeline.predict_batch`` call to the file at
:data:`BATCHES_ENV`, so a test can see the batches a Ray actor ran.

The infer fault also reaches the batch path: when ``SampleSteps.infer_batch`` is given the
infer sample among others to predict, its ``predict_batch`` call raises (that line of the
batches file reads ``SIZE injected``), so the steps fall back to predicting one by one and
the per-sample ``_infer`` fails only that sample.

:func:`hold` stops every call of one step where it starts, in every process, until
:func:`release`: a test that kills a Ray actor mid-batch waits until the actor is held there
(:func:`held_pids`), rather than racing the run's clock.
"""

from __future__ import annotations

import importlib.abc
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

FAULTS_ENV = "PRELABEL_TEST_STEP_FAULTS"
BATCHES_ENV = "PRELABEL_TEST_BATCHES"
STEPS = ("check", "fetch", "infer", "encode", "deliver")
#: The faults file's key naming the step :func:`hold` stops.
HOLD = "hold"

#: ``break_next``: the next ``predict_batch`` call on this thread raises (set by infer_batch).
_batch_fault = threading.local()


def injected_reason(step: str) -> str:
    """The reason the report gives for a sample whose ``step`` raised the injected error."""
    return f"KeyError: 'injected into {step}'"


def _targets() -> dict[str, str]:
    path = os.environ.get(FAULTS_ENV)
    if not path or not Path(path).exists():
        return {}
    targets: dict[str, str] = json.loads(Path(path).read_text(encoding="utf-8"))
    return targets


def hold(path: Path, step: str) -> None:
    """Every call of ``step`` waits where it starts until :func:`release`; each process that
    waits leaves a ``held-PID`` file beside the faults file at ``path``."""
    for old in path.parent.glob("held-*"):
        old.unlink()
    path.write_text(json.dumps({HOLD: step}), encoding="utf-8")


def release(path: Path) -> None:
    path.unlink(missing_ok=True)


def held_pids(path: Path) -> set[int]:
    """The processes that have waited at the held step since :func:`hold`."""
    return {int(p.name.split("-", 1)[1]) for p in path.parent.glob("held-*")}


def _targets_after_hold(step: str) -> dict[str, str]:
    """The faults file's targets once ``step`` is not held (read once when it is not)."""
    targets, noted = _targets(), False
    while targets.get(HOLD) == step:
        if not noted:
            Path(os.environ[FAULTS_ENV]).with_name(f"held-{os.getpid()}").touch()
            noted = True
        time.sleep(0.02)
        targets = _targets()
    return targets


def _faulty(step: str, original: Callable[..., Any]) -> Callable[..., Any]:
    def run(self: Any, job: Any, *args: Any) -> Any:
        if _targets_after_hold(step).get(step) == job.sample.name:
            raise KeyError(f"injected into {step}")
        return original(self, job, *args)

    run.injected = True  # type: ignore[attr-defined]
    return run


def _faulty_batch(original: Callable[..., Any]) -> Callable[..., Any]:
    def run(self: Any, jobs: list[Any], *args: Any, **kwargs: Any) -> Any:
        target = _targets().get("infer")
        todo = [j for j in jobs if not j.finished and j.pending is None and j.image is not None]
        _batch_fault.break_next = len(todo) > 1 and target in {j.sample.name for j in todo}
        try:
            return original(self, jobs, *args, **kwargs)
        finally:
            _batch_fault.break_next = False

    run.injected = True  # type: ignore[attr-defined]
    return run


def _counted(original: Callable[..., Any]) -> Callable[..., Any]:
    def run(self: Any, images: list[Any], *args: Any, **kwargs: Any) -> Any:
        broken = getattr(_batch_fault, "break_next", False)
        _batch_fault.break_next = False  # the one-by-one fallback's calls run normally
        path = os.environ.get(BATCHES_ENV)
        if path:
            with open(path, "a", encoding="utf-8") as f:
                f.write(f"{len(images)}{' injected' if broken else ''}\n")
        if broken:
            raise KeyError("injected into infer (batch)")
        return original(self, images, *args, **kwargs)

    run.injected = True  # type: ignore[attr-defined]
    return run


def _patch_steps(setattr_: Callable[[Any, str, Any], None] = setattr) -> None:
    from prelabel.run.steps import SampleSteps

    for step in STEPS:
        original = getattr(SampleSteps, f"_{step}")
        if not getattr(original, "injected", False):
            setattr_(SampleSteps, f"_{step}", _faulty(step, original))
    if not getattr(SampleSteps.infer_batch, "injected", False):
        setattr_(SampleSteps, "infer_batch", _faulty_batch(SampleSteps.infer_batch))


def _patch_pipeline(setattr_: Callable[[Any, str, Any], None] = setattr) -> None:
    from prelabel.pipeline.pipeline import Pipeline

    if not getattr(Pipeline.predict_batch, "injected", False):
        setattr_(Pipeline, "predict_batch", _counted(Pipeline.predict_batch))


#: module -> what wraps its classes once it is imported.
_PATCHES: dict[str, Callable[[], None]] = {
    "prelabel.run.steps": _patch_steps,
    "prelabel.pipeline.pipeline": _patch_pipeline,
}


def install(setattr_: Callable[[Any, str, Any], None] = setattr) -> None:
    """Wrap the steps (idempotent); tests pass ``monkeypatch.setattr`` to undo it after."""
    _patch_steps(setattr_)
    _patch_pipeline(setattr_)


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    """Finds the modules of :data:`_PATCHES` through the other finders; patches after loading."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in _PATCHES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _PatchingLoader(spec.loader, _PATCHES[fullname])
                return spec
        return None


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, inner: Any, patch: Callable[[], None]) -> None:
        self.inner, self.patch = inner, patch

    def create_module(self, spec: Any) -> Any:
        return self.inner.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self.inner.exec_module(module)
        self.patch()


def install_on_import() -> None:
    """:func:`install` for Ray workers (their ``worker_process_setup_hook``), without its cost.

    Ray runs the hook in every worker process it starts, Ray Data's own actors included;
    importing the pipeline (torch, transformers: seconds each) in all of them at once was most
    of a test run's time. So a module is wrapped when a worker imports it, if ever.
    """
    for name, patch in _PATCHES.items():
        if name in sys.modules:
            patch()
    if not any(isinstance(f, _PatchAfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchAfterImport())


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
