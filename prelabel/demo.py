"""``prelabel demo``: the main job end to end, with no account and no weights.

What a new user needs to see before trusting the tool with a dataset: a Segments API (the
emulator, in this process), a dataset with street scenes drawn by the project, models (tiny
random-weight ones unless real weights are given), one ``prelabel run`` over it and what that
run wrote. The run is :func:`prelabel.run.dataset.run_dataset`, the very function behind
``prelabel run``, with the same safety rules: two of the samples carry a person's label, and
the run leaves them alone.

Everything lands in one folder (``prelabel-demo/`` by default):

* ``report.json``: every sample's outcome, as ``prelabel run --out`` writes it, plus the
  samples a person labeled, as skipped with that reason (a run does not select them);
* ``overlays/<sample>.png``: each label as it is now on the server (pre-labels and the
  person's labels), drawn over its image with names and a legend;
* ``config.yaml``: the settings the run used (without the emulator's address), a config
  ``prelabel run --config`` and the notebook (``PRELABEL_CONFIG``) accept; its comments say
  which values only suit the demo (the tiny models' thresholds, the street categories);
* ``images/``, ``tiny-models/`` and ``state/``: the scenes, the models, the resume state.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from prelabel.config import PipelineSettings, Settings, settings_yaml, with_overrides
from prelabel.emulator.demo import DEMO_LABELSET, Demo, categories_file, start_demo
from prelabel.emulator.scenes import SCENE_CATEGORIES
from prelabel.formats.atomic import atomic_file
from prelabel.formats.bitmap import decode_bitmap
from prelabel.formats.name_tags import Tag
from prelabel.formats.overlay import label_overlay, label_preview
from prelabel.images import decode_image
from prelabel.progress import Progress
from prelabel.run.dataset import run_dataset
from prelabel.run.job import RunOptions
from prelabel.run.models import pipeline_loader
from prelabel.run.outcome import SampleOutcome
from prelabel.run.report import RunSummary
from prelabel.segments.client import SegmentsApi
from prelabel.segments.dataset import check_dataset
from prelabel.segments.statuses import may_write
from prelabel.state import StateStore
from prelabel.taxonomy import load_categories_file

__all__ = ["DemoRun", "NextCommands", "demo_settings", "run_demo"]

#: Unlabeled samples the run pre-labels, and samples that carry a person's label.
DEMO_IMAGES = 4
DEMO_LABELED = 2

#: Tiny random models score every box far below the real thresholds and would label nothing;
#: at 0 they find boxes in every image, so masks, merge, upload and overlays all have content.
TINY_PIPELINE = PipelineSettings(box_threshold=0.0, text_threshold=0.0, max_detections=4)
#: The report's reason for a sample a person labeled before the run (the run does not select it).
PERSON_LABELED = "labeled by a person ({status}): a run never writes over it"


@dataclass(frozen=True)
class NextCommands:
    """How the "Next:" lines spell commands, so that they work when pasted.

    ``prelabel`` is on the PATH only in an activated venv; after the README's set-up it is
    ``.venv/bin/prelabel``. The CLI knows how it was started and fills these in.
    """

    #: The prelabel command as this shell reaches it (``prelabel``, ``.venv/bin/prelabel``...).
    prelabel: str = "prelabel"
    #: The folder of the venv's tools (pip, jupyter) with a trailing slash, or "" on the PATH.
    tools: str = ""
    #: The review notebook's path, as reachable from the current folder.
    notebook: str = "notebooks/review.ipynb"


@dataclass
class DemoRun:
    """A finished demo run; its emulator keeps serving until :meth:`stop`."""

    demo: Demo
    summary: RunSummary
    out_dir: Path
    config_path: Path
    #: One preview per sample that has a label, in listing order.
    overlays: tuple[Path, ...]
    #: Whether the models are tiny random ones (their masks mean nothing).
    tiny: bool
    #: The name tags on each overlay (what a reviewer reads), by overlay path.
    tags: dict[Path, tuple[Tag, ...]]

    def environment(self) -> dict[str, str]:
        """The variables that point the review notebook at this demo (see its first cell)."""
        return {
            "PRELABEL_DATASET": self.demo.dataset,
            "PRELABEL_API_URL": self.demo.url,
            "SEGMENTS_API_KEY": self.demo.api_key,
            "PRELABEL_MODELS": str(self.demo.models_dir.resolve()),
            "PRELABEL_CONFIG": str(self.config_path.resolve()),
        }

    def describe(self, commands: NextCommands | None = None) -> str:
        """What happened and what to look at next, for the end of ``prelabel demo``."""
        run = commands or NextCommands()
        counts = self.summary.counts
        out = self.out_dir
        lines = [
            f"Ran `prelabel run` on {self.demo.dataset}, a local Segments emulator at "
            f"{self.demo.url}:",
            f"  {counts['labeled']} of {len(self.demo.sample_uuids)} samples pre-labeled, "
            f"{counts['failed']} failed; {len(self.demo.labeled_uuids)} carry a person's label "
            "and were left alone.",
        ]
        if self.tiny:
            lines.append(
                "  The models are tiny random-weight stand-ins: every step is real, the masks "
                "are meaningless."
            )
        lines += [
            "",
            "Look at:",
            f"  {out / 'overlays'}/   every label drawn over its image ({len(self.overlays)})",
            f"  {out / 'report.json'}   each sample's outcome",
            f"  {out / 'config.yaml'}   the settings used; its comments say what to change "
            "for your own dataset",
            "",
            "Next:",
            f"  {run.prelabel} demo --models DIR     the same with real weights (README: "
            "Models and weights)",
            f"  {run.prelabel} demo --keep-serving   keep the emulator up for the review "
            f"notebook; open it with {run.tools}pip install jupyterlab && "
            f"{run.tools}jupyter lab {run.notebook}",
            f"  export SEGMENTS_API_KEY=...; {run.prelabel} run --dataset OWNER/NAME "
            "--models DIR   your own dataset",
        ]
        return "\n".join(lines)

    def stop(self) -> None:
        self.demo.stop()


def demo_settings(*, tiny: bool) -> Settings:
    """The run's settings: the street-scene prompts, and thresholds tiny models can pass.

    The API address is not among them (the emulator's port changes every time), so the
    written config also serves the notebook with ``PRELABEL_API_URL``.
    """
    _, options = load_categories_file(categories_file())
    painted = {name: opts for name, opts in options.items() if name in SCENE_CATEGORIES}
    return Settings(pipeline=TINY_PIPELINE if tiny else PipelineSettings(), categories=painted)


def run_demo(
    out_dir: Path,
    *,
    models_dir: Path | None = None,
    images: int = DEMO_IMAGES,
    labeled: int = DEMO_LABELED,
    progress: Progress | None = None,
) -> DemoRun:
    """Seed the demo dataset, run ``prelabel run``'s job on it, write report and overlays.

    The emulator is left running (the caller stops it, or keeps it for the notebook); on an
    error it is stopped before the error propagates.

    Raises:
        PrelabelError: the run could not start (models that do not load, a bad config...).
    """
    from prelabel.weights.tiny import is_tiny_models_dir

    out_dir.mkdir(parents=True, exist_ok=True)
    demo = start_demo(out_dir, images=images, labeled=labeled, models_dir=models_dir)
    try:
        tiny = is_tiny_models_dir(demo.models_dir)
        config_path = out_dir / "config.yaml"
        with atomic_file(config_path) as f:
            f.write(settings_yaml(demo_settings(tiny=tiny), _config_header(tiny, demo)))
        settings = with_overrides(demo_settings(tiny=tiny), api_url=demo.url)
        options = RunOptions(dataset=demo.dataset, labelset=DEMO_LABELSET, output_dir=out_dir)
        with StateStore.in_dir(out_dir / "state") as state:
            summary = run_dataset(
                demo.api_key,
                settings,
                options,
                state=state,
                load_pipeline=pipeline_loader(settings, demo.models_dir),
                progress=progress,
            )
        drawn = _write_overlays(demo, settings, out_dir / "overlays", _scores(summary))
        _report_people_labels(summary, [d.skipped for d in drawn if d.skipped is not None])
    except BaseException:
        demo.stop()
        raise
    overlays = tuple(d.path for d in drawn)
    tags = {d.path: d.tags for d in drawn}
    return DemoRun(demo, summary, out_dir, config_path, overlays, tiny, tags)


def _config_header(tiny: bool, demo: Demo) -> str:
    """The comments atop the demo's config.yaml: which values suit only the demo."""
    defaults = PipelineSettings()
    lines = [
        f"The settings `prelabel demo` ran with, on its dataset {demo.dataset}.",
        "Before using this file for another dataset:",
    ]
    if tiny:
        lines.append(
            "- pipeline.box_threshold, text_threshold and max_detections suit the tiny "
            "random-weight models only (they score every box near 0); with real weights "
            f"use the defaults ({defaults.box_threshold}, {defaults.text_threshold}, "
            f"{defaults.max_detections}; see configs/default.yaml)."
        )
    lines += [
        f"- models: the demo loaded its models from {demo.models_dir} (--models), not "
        "from these Hugging Face ids; pass --models DIR again, or these ids are downloaded.",
        "- categories: prompts for the demo's street-scene categories. A category your "
        "dataset lacks is an error: delete this section, or keep only your categories.",
    ]
    return "\n".join(lines)


def _report_people_labels(summary: RunSummary, skipped: list[SampleOutcome]) -> None:
    """Add the samples a person labeled to the summary and to report.json, as skipped.

    A run selects only samples without a label, so its report leaves them out; the demo's
    report lists every sample, and says why these were not pre-labeled.
    """
    for outcome in skipped:
        summary.add(outcome)
    if summary.report_path is None or not skipped:
        return
    report = json.loads(summary.report_path.read_text(encoding="utf-8"))
    report["samples"] += [asdict(outcome) for outcome in skipped]
    report["summary"] = summary.as_dict()
    with atomic_file(summary.report_path) as f:
        f.write(json.dumps(report, indent=1) + "\n")


def _scores(summary: RunSummary) -> dict[str, float]:
    """Each labeled sample's label score, from the run's report."""
    if summary.report_path is None:
        return {}
    report = json.loads(summary.report_path.read_text(encoding="utf-8"))
    return {s["sample_uuid"]: s["score"] for s in report["samples"] if s["score"] is not None}


@dataclass(frozen=True)
class _Overlay:
    """One preview the demo wrote, its name tags, and the sample's outcome when a person
    labeled it (the run skipped it)."""

    path: Path
    tags: tuple[Tag, ...]
    skipped: SampleOutcome | None


def _write_overlays(
    demo: Demo, settings: Settings, folder: Path, scores: dict[str, float]
) -> list[_Overlay]:
    """A preview of every label on the server now: what the run wrote and what it left."""
    folder.mkdir(parents=True, exist_ok=True)
    max_pixels = settings.pipeline.max_image_pixels
    api = SegmentsApi.connect(demo.api_key, settings.remote)
    try:
        _, taxonomy = check_dataset(api, settings, demo.dataset, DEMO_LABELSET)
        written = []
        for sample in api.iter_samples(demo.dataset, DEMO_LABELSET):
            label = api.label_bitmap(sample.uuid, DEMO_LABELSET)
            annotations, bitmap_url = label or ({}, None)
            if bitmap_url is None:
                continue  # no label: the run failed on it, and report.json says why
            image = decode_image(demo.images_dir / sample.name, max_pixels=max_pixels)
            id_map = decode_bitmap(api.download(bitmap_url), image.size)
            title = _title(sample.name, sample.label_status, scores.get(sample.uuid))
            path = folder / f"{Path(sample.name).stem}.png"
            label_preview(image, id_map, annotations, taxonomy, title=title).save(path)
            tags = label_overlay(image, id_map, annotations, taxonomy).tags
            skipped = None
            if sample.uuid in demo.labeled_uuids:
                reason = PERSON_LABELED.format(status=sample.label_status)
                skipped = SampleOutcome(sample.uuid, sample.name, "skipped", reason=reason)
            written.append(_Overlay(path, tags, skipped))
        return written
    finally:
        api.close()


def _title(name: str, status: str | None, score: float | None) -> str:
    if may_write(status, overwrite=True):
        return f"{name}: pre-labeled by this run" + (
            f", score {score:.2f}" if score is not None else ""
        )
    return f"{name}: {status} by a person, left alone by the run"
