"""Scale a run past one GPU on Ray Data: ``prelabel run --engine ray``.

Layout of the job (all rows are plain dicts, so Ray can move them between machines):

1. The driver connects, checks the dataset and lists the samples to label, page by page, with
   the same selection and resume rules as the local engine (:mod:`prelabel.source`,
   :mod:`prelabel.state`). Samples whose bitmap was uploaded by an earlier run carry it along.
2. ``_Predict``, an actor pool with one model copy per actor (loaded once, in the actor's
   constructor), downloads, predicts and encodes. ``--workers`` actors, ``--gpus-per-worker``
   each.
3. ``_Deliver``, a second actor pool of CPU actors, uploads the bitmap and writes the label
   through :func:`prelabel.upload.write_label`: the label is re-read right before writing,
   a person's label is never written over, and a label already carrying our bitmap is not
   written again.
4. The driver consumes the results as they stream in: progress bar, report, summary, and the
   resume state (which only the driver keeps: workers share no disk).

Why a sample is written once even when Ray retries: Ray Data re-runs a batch whose actor died.
The retried delivery uploads a new bitmap, re-reads the label, finds a PRELABELED label that is
not its own and, without ``--overwrite-prelabels``, skips ("already pre-labeled"). The state
lives on the driver, so a killed cluster costs at most the predictions in flight: the rerun
lists the server again (the source of truth) and labels the rest.

Ray is an optional extra (``pip install prelabel[ray]``), imported only here.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prelabel.config import Settings
from prelabel.errors import ConfigError, PrelabelError, TransientRemoteError
from prelabel.progress import NullProgress, Progress
from prelabel.report import ReportWriter, RunSummary, SampleOutcome
from prelabel.segments_client import SegmentsApi
from prelabel.source import is_selectable, select_samples
from prelabel.state import LABELED, UPLOADED, StateStore
from prelabel.worker import RunOptions, prepare

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None
    #: Prediction actors (one model copy each).
    workers: int = 1
    #: None: 1 when the cluster has GPUs, else 0.
    gpus_per_worker: float | None = None
    cpus_per_worker: float = 1.0
    #: Samples per prediction call of an actor.
    batch_size: int = 4
    #: Upload actors (I/O bound; cheap).
    upload_workers: int = 2
    #: torch intra-op threads per actor; 0 leaves torch's default.
    torch_threads: int = 0


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("the ray engine needs Ray: pip install 'prelabel[ray]'") from None
    return ray


def run_on_ray(
    api_key: str,
    settings: Settings,
    options: RunOptions,
    ray_options: RayOptions,
    *,
    state: StateStore,
    models_dir: Path | None,
    progress: Progress | None = None,
) -> RunSummary:
    """One ``prelabel run`` whose predictions and uploads run on a Ray cluster."""
    ray = _ray()
    from ray.data import ActorPoolStrategy

    progress = progress or NullProgress()
    api = SegmentsApi.connect(api_key, settings.remote)
    try:
        _, taxonomy = prepare(api, settings, options)
        rows, early = _plan(api, state, options)
    finally:
        api.close()
    summary = RunSummary()
    writer = ReportWriter(
        options.output_dir / "report.json",
        {"dataset": options.dataset, "labelset": options.labelset, "engine": "ray"},
    )
    progress.start(len(rows) + len(early), "pre-label (ray)")

    def record(outcome: SampleOutcome) -> None:
        summary.add(outcome)
        writer.add(outcome)
        progress.advance()
        progress.note(**{k: v for k, v in summary.counts.items() if v})

    try:
        for outcome in early:
            record(outcome)
        if rows:
            if not ray.is_initialized():
                ray.init(address=ray_options.address, log_to_driver=False)
            # The key travels to the actors inside Ray (as constructor arguments); it is never
            # logged there either, but anyone with access to the cluster's object store could
            # read it: run on a cluster you control.
            shared = {
                "api_key": api_key,
                "settings_json": settings.model_dump_json(),
                "options": _options_dict(options),
            }
            gpus = ray_options.gpus_per_worker
            if gpus is None:
                gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
            dataset = ray.data.from_items(rows)
            predicted = dataset.map_batches(
                _Predict,
                fn_constructor_kwargs={
                    **shared,
                    "taxonomy": taxonomy,
                    # Absolute: actors resolve paths in their own working directory.
                    "models_dir": str(models_dir.resolve()) if models_dir else "",
                    "torch_threads": ray_options.torch_threads,
                },
                compute=ActorPoolStrategy(size=ray_options.workers),
                batch_size=ray_options.batch_size,
                num_gpus=gpus,
                num_cpus=ray_options.cpus_per_worker,
            )
            delivered = predicted.map_batches(
                _Deliver,
                fn_constructor_kwargs=shared,
                compute=ActorPoolStrategy(size=ray_options.upload_workers),
                batch_size=1,
                num_cpus=0.25,
            )
            try:
                for row in delivered.iter_rows():
                    record(_apply_result(state, options, row))
            except ray.exceptions.RayActorError as exc:
                if not exc.actor_init_failed:
                    raise
                # E.g. --models missing on a worker node: one line, as in the local engine.
                raise PrelabelError(f"a Ray actor failed to start: {_last_error(exc)}") from None
    finally:
        progress.close()
        summary.report_path = writer.close(summary)
    return summary


def _last_error(exc: Exception) -> str:
    """The message of the exception at the end of the remote traceback Ray reports as text."""
    text = str(exc).rstrip()
    _, sep, tail = text.rpartition("\nprelabel.errors.")
    if sep:
        return tail.partition(": ")[2]
    return text.splitlines()[-1] if text else type(exc).__name__


def _plan(
    api: SegmentsApi, state: StateStore, options: RunOptions
) -> tuple[list[dict[str, Any]], list[SampleOutcome]]:
    """Rows for the cluster, and outcomes decided on the driver (skips from the state)."""
    rows: list[dict[str, Any]] = []
    early: list[SampleOutcome] = []
    for sample, selected in select_samples(
        api, options.dataset, options.labelset, overwrite_prelabels=options.overwrite_prelabels
    ):
        if not selected:
            continue
        if options.limit is not None and len(rows) + len(early) >= options.limit:
            break
        record = state.get(options.dataset, options.labelset, sample.uuid)
        row = {
            "uuid": sample.uuid,
            "name": sample.name,
            "image_url": sample.image_url or "",
            "asset_url": "",
            "attributes": "",
            "score": 0.0,
        }
        if record is not None and record.stage == LABELED and not options.overwrite_prelabels:
            reason = "prelabel wrote this label before and it was removed on the server"
            early.append(SampleOutcome(sample.uuid, sample.name, "skipped", reason=reason))
            continue
        if record is not None and record.stage == UPLOADED and record.asset_url:
            row.update(
                asset_url=record.asset_url,
                attributes=json.dumps(record.attributes),
                score=float(record.score or 0.0),
            )
        rows.append(row)
    return rows, early


def _options_dict(options: RunOptions) -> dict[str, Any]:
    return {
        "dataset": options.dataset,
        "labelset": options.labelset,
        "overwrite_prelabels": options.overwrite_prelabels,
    }


def _apply_result(state: StateStore, options: RunOptions, row: dict[str, Any]) -> SampleOutcome:
    """Record one delivered sample in the driver's state and turn it into an outcome."""
    uuid, name, result = row["uuid"], row["name"], row["result"]
    dataset, labelset = options.dataset, options.labelset
    if row.get("asset_url") and row.get("attributes") and result != "labeled":
        state.mark_uploaded(
            dataset,
            labelset,
            uuid,
            name,
            asset_url=row["asset_url"],
            attributes=json.loads(row["attributes"]),
            score=float(row["score"]),
        )
    reason = row.get("reason") or None
    if result == "labeled":
        state.mark_labeled(dataset, labelset, uuid, name)
    elif result == "skipped":
        state.mark_skipped(dataset, labelset, uuid, name, reason or "")
    else:
        state.mark_failed(dataset, labelset, uuid, name, reason or "")
    segments = int(row["segments"]) if row.get("segments", -1) >= 0 else None
    return SampleOutcome(
        uuid,
        name,
        result,
        reason=reason,
        segments=segments,
        score=float(row["score"]) if result == "labeled" else None,
        transient=bool(row.get("transient")),
    )


def _rows(batch: dict[str, Any]) -> Iterator[dict[str, Any]]:
    keys = list(batch)
    for values in zip(*(batch[k] for k in keys), strict=True):
        yield dict(zip(keys, values, strict=True))


def _columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {key: [row[key] for row in rows] for key in rows[0]} if rows else {}


class _Predict:
    """Prediction actor: one pipeline per actor, loaded in the constructor."""

    def __init__(
        self,
        api_key: str,
        settings_json: str,
        options: dict[str, Any],
        taxonomy: Any,
        models_dir: str,
        torch_threads: int,
    ) -> None:
        from prelabel.pipeline.pipeline import Pipeline

        if torch_threads:
            import torch

            torch.set_num_threads(torch_threads)
        self.settings = Settings.model_validate_json(settings_json)
        self.options = options
        self.taxonomy = taxonomy
        self.api = SegmentsApi.connect(api_key, self.settings.remote)
        self.pipeline = Pipeline.load(self.settings, Path(models_dir) if models_dir else None)
        _note_pid("predict")

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        return _columns([self._one(row) for row in _rows(batch)])

    def _one(self, row: dict[str, Any]) -> dict[str, Any]:
        from prelabel.encode import encode_label
        from prelabel.segments_client import SampleRef
        from prelabel.source import load_image

        out = {
            **row,
            "png": b"",
            "annotations": "",
            "segments": -1,
            "error": "",
            "transient": False,
        }
        if row["asset_url"]:
            return out  # uploaded by an earlier run: straight to delivery
        try:
            current = self.api.label_state(row["uuid"], self.options["labelset"])
            if not is_selectable(
                current.status, overwrite_prelabels=self.options["overwrite_prelabels"]
            ):
                out["error"] = f"skip:labeled meanwhile ({current.status})"
                return out
            sample = SampleRef(row["uuid"], row["name"], row["image_url"] or None, None)
            image = load_image(self.api, sample, max_pixels=self.settings.pipeline.max_image_pixels)
            prediction = self.pipeline.predict(image, self.taxonomy)
            encoded = encode_label(prediction)
        except TransientRemoteError as exc:
            out.update(error=str(exc), transient=True)
            return out
        except PrelabelError as exc:
            out["error"] = str(exc)
            return out
        except (OSError, ValueError, RuntimeError) as exc:
            logger.exception("sample %s failed", row["name"])
            out["error"] = f"{type(exc).__name__}: {exc}"
            return out
        out.update(
            png=encoded.png,
            annotations=json.dumps(encoded.annotations),
            segments=len(prediction.segments),
            score=encoded.score,
        )
        return out


class _Deliver:
    """Upload actor: bitmap upload and the safe label write."""

    def __init__(self, api_key: str, settings_json: str, options: dict[str, Any]) -> None:
        self.settings = Settings.model_validate_json(settings_json)
        self.options = options
        self.api = SegmentsApi.connect(api_key, self.settings.remote)
        _note_pid("deliver")

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        return _columns([self._one(row) for row in _rows(batch)])

    def _one(self, row: dict[str, Any]) -> dict[str, Any]:
        from prelabel.encode import EncodedLabel
        from prelabel.upload import PendingLabel, upload_asset, write_label

        out = {
            "uuid": row["uuid"],
            "name": row["name"],
            "result": "failed",
            "reason": "",
            "asset_url": row["asset_url"],
            "attributes": row["attributes"],
            "score": float(row["score"]),
            "segments": int(row["segments"]),
            "transient": bool(row["transient"]),
        }
        if row["error"]:
            skipped = row["error"].startswith("skip:")
            out["result"] = "skipped" if skipped else "failed"
            out["reason"] = row["error"].removeprefix("skip:")
            return out
        try:
            if row["asset_url"]:
                pending = PendingLabel(
                    row["asset_url"], json.loads(row["attributes"]), float(row["score"])
                )
            else:
                encoded = EncodedLabel(
                    png=bytes(row["png"]),
                    annotations=json.loads(row["annotations"]),
                    score=float(row["score"]),
                )
                pending = upload_asset(
                    self.api,
                    None,
                    dataset=self.options["dataset"],
                    labelset=self.options["labelset"],
                    sample_uuid=row["uuid"],
                    sample_name=row["name"],
                    encoded=encoded,
                )
                out.update(asset_url=pending.asset_url, attributes=json.dumps(pending.attributes))
            result = write_label(
                self.api,
                self.settings.remote,
                sample_uuid=row["uuid"],
                labelset=self.options["labelset"],
                pending=pending,
                overwrite=self.options["overwrite_prelabels"],
            )
        except TransientRemoteError as exc:
            out.update(reason=str(exc), transient=True)
            return out
        except PrelabelError as exc:
            out["reason"] = str(exc)
            return out
        if result.written:
            out["result"] = "labeled"
        else:
            out.update(result="skipped", reason=result.reason or "not written")
        return out


def _note_pid(role: str) -> None:
    """Tests kill actors by PID: they set PRELABEL_RAY_PID_DIR to learn them."""
    folder = os.environ.get("PRELABEL_RAY_PID_DIR")
    if folder:
        Path(folder, f"{role}-{os.getpid()}").touch()
