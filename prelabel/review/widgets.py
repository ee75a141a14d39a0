"""The review notebook's UI: an ipywidgets app over :class:`~prelabel.review.ReviewSession`.

What a reviewer does, top to bottom:

* **Gallery**: the samples ``prelabel run`` would (re)label, predicted, least confident first
  (by the label score a run would write). Clicking a card shows that sample.
* **The sample in view**: image and overlay side by side with a legend, and the segment table
  (category, score, area). Accept or reject it; either moves on to the next undecided sample.
* **Tuning**: per category its prompt and thresholds, and the pipeline-wide settings, as
  controls built from the settings' declarations (:class:`~prelabel.review.controls.
  TuningControls`). A change
  predicts the sample in view again (its decision is cleared: it was about the old
  prediction); the other samples are predicted again when shown, or all at once with
  "predict all again", which also sorts the gallery anew.
* **Push** the accepted samples through the session's safe write; every item's outcome is
  listed (one failing item does not stop the others).
* **Measure**: PQ, SQ and RQ on the samples a person has labeled, with the settings the session
  started with and with the tuned ones, so tuning is judged by numbers.
* **Save** the tuned settings as a config for ``prelabel run --config``.

Everything a button does is a method here, so tests (and scripts) drive the same code by
setting the widgets' values and clicking them, with no browser.
"""

from __future__ import annotations

import html
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ipywidgets as widgets
from PIL import Image

from prelabel.errors import PrelabelError, SampleError
from prelabel.evaluate.dataset import DatasetEvaluation
from prelabel.evaluate.pq import PQAverage
from prelabel.review.controls import TuningControls
from prelabel.review.items import ReviewItem, render_table
from prelabel.review.session import ReviewSession
from prelabel.run.outcome import SampleOutcome
from prelabel.segments.client import SampleRef

__all__ = ["ReviewApp"]

ACCEPTED, REJECTED = "accepted", "rejected"


@dataclass
class Entry:
    """One sample of the gallery: its latest prediction (or why it failed) and the decision."""

    sample: SampleRef
    item: ReviewItem | None = None
    error: str | None = None
    #: The app's tuning version the prediction was made with.
    version: int = -1
    decision: str | None = None
    #: The push's outcome, once pushed.
    outcome: SampleOutcome | None = None

    @property
    def score(self) -> float:
        """The label score; a failed sample sorts first, as it needs a look most."""
        return -1.0 if self.item is None else self.item.score

    def caption(self) -> str:
        mark = {ACCEPTED: " ✓", REJECTED: " ✗"}.get(self.decision or "", "")
        if self.outcome is not None:
            mark += f" [{self.outcome.result}]"
        score = "failed" if self.item is None else f"{self.score:.2f}"
        return f"{score}  {self.sample.name}{mark}"


class ReviewApp:
    """The review UI; show it with ``display(app.widget)`` (or by ending a cell with ``app``).

    ``limit`` samples are predicted up front. With ``include_prelabeled`` (the default) the
    gallery also holds samples whose label is still a pre-label, so a dataset already run can
    be reviewed, and pushing replaces those pre-labels; a label a person touched is never in
    the gallery and never written over.
    """

    def __init__(
        self,
        session: ReviewSession,
        *,
        limit: int = 12,
        measure_limit: int = 20,
        include_prelabeled: bool = True,
        thumb_width: int = 160,
        preview_width: int = 960,
    ) -> None:
        self.session = session
        self.include_prelabeled = include_prelabeled
        self.thumb_width, self.preview_width = thumb_width, preview_width
        self.version = 0
        self.entries: list[Entry] = []
        self.current: int | None = None
        self._before: dict[int, DatasetEvaluation] = {}

        self.message = widgets.HTML()
        self.gallery = widgets.Box(layout=widgets.Layout(flex_flow="row wrap"))
        self.cards: list[widgets.Button] = []
        self.title = widgets.HTML()
        self.image = widgets.Image(format="png")
        self.table = widgets.HTML()
        self.accept_button = self._button("accept", self.accept, style="success")
        self.reject_button = self._button("reject", self.reject, style="danger")
        self.repredict_button = self._button("predict all again", self.predict_all)
        self.tuning = TuningControls(session, self.tune)
        self.pipeline_controls = self.tuning.pipeline
        self.category_controls = self.tuning.categories
        self.push_button = self._button("push accepted", self.push, style="warning")
        self.outcomes = widgets.HTML()
        self.measure_limit = widgets.BoundedIntText(
            value=measure_limit, min=1, max=100_000, description="human-labeled samples"
        )
        self.measure_button = self._button("measure", self.measure)
        self.measurements = widgets.HTML()
        self.config_path = widgets.Text(value="prelabel-tuned.yaml", description="config")
        self.save_button = self._button("save config", self.save)
        self.widget = self._layout()
        self.load(limit)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    # The gallery and the sample in view ---------------------------------------------------

    def load(self, limit: int) -> None:
        """Predict the first ``limit`` samples and fill the gallery, least confident first."""
        samples = self.session.samples(limit, overwrite_prelabels=self.include_prelabeled)
        self.entries = [Entry(sample) for sample in samples]
        self.predict_all()
        if not self.entries:
            self._say("no sample to review: every sample has a label a person made or touched")

    def predict_all(self) -> None:
        """Predict every undecided sample with the current settings, then sort the gallery."""
        for entry in self.entries:
            if entry.decision is None and entry.version != self.version:
                self._predict(entry)
        self.entries.sort(key=lambda e: e.score)
        self.cards = [self._card(index) for index in range(len(self.entries))]
        self.gallery.children = [
            widgets.VBox([self._thumbnail(entry), card])
            for entry, card in zip(self.entries, self.cards, strict=True)
        ]
        self.show(next(self._undecided(), 0) if self.entries else None)

    def show(self, index: int | None) -> None:
        """Show entry ``index`` (predicting it again if tuning changed since and it is open)."""
        self.current = index
        if index is None:
            self.title.value, self.table.value, self.image.value = "", "", b""
            return
        entry = self.entries[index]
        if entry.decision is None and entry.version != self.version:
            self._predict(entry)
        for position, card in enumerate(self.cards):
            card.button_style = "info" if position == index else ""
            card.description = self.entries[position].caption()
        status = entry.decision or "undecided"
        self.title.value = f"<b>{_escape(entry.sample.name)}</b>: {_escape(status)}"
        if entry.item is None:
            self.image.value = b""
            self.table.value = f"<p>prediction failed: {_escape(entry.error or '')}</p>"
        else:
            self.image.value = _png(entry.item.preview(self.preview_width))
            self.table.value = render_table(entry.item.rows())

    def accept(self) -> None:
        self._decide(ACCEPTED)

    def reject(self) -> None:
        self._decide(REJECTED)

    def _decide(self, decision: str) -> None:
        if self.current is None:
            return
        entry = self.entries[self.current]
        if decision == ACCEPTED and entry.item is None:
            self._say(f"{entry.sample.name} has no prediction to accept")
            return
        entry.decision = decision
        following = [i for i in self._undecided() if i > self.current]
        self.show(following[0] if following else self.current)

    def _undecided(self) -> Iterator[int]:
        return (i for i, e in enumerate(self.entries) if e.decision is None)

    def _predict(self, entry: Entry) -> None:
        try:
            entry.item, entry.error = self.session.predict(entry.sample), None
        except SampleError as exc:
            entry.item, entry.error = None, str(exc)
        entry.version = self.version

    # Tuning -------------------------------------------------------------------------------

    def tune(self, apply: Callable[[], None]) -> None:
        """Apply one tuning change and predict the sample in view again."""
        try:
            apply()
        except PrelabelError as exc:
            self._say(f"not changed: {exc}", error=True)
            self.tuning.sync()
            return
        self.version += 1
        self.tuning.sync()
        if self.current is not None:
            entry = self.entries[self.current]
            entry.decision = entry.outcome = None  # they were about the old prediction
            self.show(self.current)
        changes = self.session.changes()
        self._say(f"{len(changes)} change(s) from the start: " + "; ".join(changes))

    # Push, measure, save ------------------------------------------------------------------

    def push(self) -> None:
        """Push the accepted samples not yet pushed (or whose push failed); list outcomes."""
        ready = [
            e
            for e in self.entries
            if e.decision == ACCEPTED and e.item is not None
            and (e.outcome is None or e.outcome.result == "failed")
        ]  # fmt: skip
        if not ready:
            self._say("nothing to push: accept a sample first")
            return
        items = [e.item for e in ready if e.item is not None]
        try:
            outcomes = self.session.push(items, overwrite_prelabels=self.include_prelabeled)
        except PrelabelError as exc:
            self._say(f"push stopped: {exc}", error=True)
            return
        for entry, outcome in zip(ready, outcomes, strict=True):
            entry.outcome = outcome
        rows = [
            {"sample": o.sample_name, "result": o.result, "reason": o.reason or ""}
            for o in outcomes
        ]
        self.outcomes.value = render_table(rows)
        done = sum(o.result == "labeled" for o in outcomes)
        self._say(f"pushed {done} of {len(outcomes)}; each item's outcome is listed below")
        self.show(self.current)

    def measure(self) -> None:
        """PQ, SQ and RQ before tuning (computed once per limit) and now."""
        limit = self.measure_limit.value
        try:
            if limit not in self._before:
                self._before[limit] = self.session.measure(limit, tuned=False)
            before = self._before[limit]
            changes = self.session.changes()
            after = self.session.measure(limit) if changes else before
        except PrelabelError as exc:
            self._say(f"measuring failed: {exc}", error=True)
            return
        if before.result.images == 0:
            self._say(
                "nothing to measure: no sample has a label a person made (LABELED, REVIEWED "
                "or VERIFIED) that could be read",
                error=True,
            )
        rows = [_scores("before tuning", before), _scores(f"now ({len(changes)} changes)", after)]
        self.measurements.value = render_table(rows)

    def save(self) -> None:
        """Write the tuned settings to the path in :attr:`config_path`."""
        path = Path(self.config_path.value).expanduser()
        try:
            self.session.save_config(path)
        except (PrelabelError, OSError) as exc:
            self._say(f"not saved: {exc}", error=True)
            return
        dataset = self.session.options.dataset
        self._say(f"saved {path}; run it with: prelabel run --dataset {dataset} --config {path}")

    # Widgets ------------------------------------------------------------------------------

    def _button(self, label: str, action: Callable[[], None], style: str = "") -> widgets.Button:
        button = widgets.Button(description=label, button_style=style)
        button.on_click(lambda _: action())
        return button

    def _card(self, index: int) -> widgets.Button:
        entry = self.entries[index]
        card = widgets.Button(
            description=entry.caption(),
            tooltip=entry.sample.name,
            layout=widgets.Layout(width=f"{self.thumb_width}px"),
        )
        card.on_click(lambda _: self.show(index))
        return card

    def _thumbnail(self, entry: Entry) -> widgets.Widget:
        if entry.item is None:
            return widgets.HTML(f"<i>{_escape(entry.error or 'failed')}</i>")
        return widgets.Image(value=_png(entry.item.thumbnail(self.thumb_width)), format="png")

    def _layout(self) -> widgets.Widget:
        view = widgets.VBox(
            [self.title, self.image, widgets.HBox([self.accept_button, self.reject_button]),
             self.table]
        )  # fmt: skip
        return widgets.VBox(
            [
                self.message,
                widgets.HTML("<b>Samples, least confident first</b>"),
                self.gallery,
                self.repredict_button,
                widgets.HBox([view, self.tuning.widget]),
                self.push_button,
                self.outcomes,
                widgets.HBox([self.measure_limit, self.measure_button]),
                self.measurements,
                widgets.HBox([self.config_path, self.save_button]),
            ]
        )

    def _say(self, text: str, *, error: bool = False) -> None:
        color = "#b00020" if error else "#205020"
        self.message.value = f'<p style="color:{color}">{_escape(text)}</p>'


def _scores(label: str, evaluation: DatasetEvaluation) -> dict[str, object]:
    result = evaluation.result

    def pct(average: PQAverage, key: str) -> str:
        value = getattr(average, key)
        return "-" if value is None else f"{100 * value:.1f}"

    return {
        "settings": label,
        "PQ": pct(result.overall, "pq"),
        "SQ": pct(result.overall, "sq"),
        "RQ": pct(result.overall, "rq"),
        "things PQ": pct(result.things, "pq"),
        "stuff PQ": pct(result.stuff, "pq"),
        "samples": result.images,
        "failed": len(evaluation.failures),
    }


def _escape(text: str) -> str:
    return html.escape(text)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
