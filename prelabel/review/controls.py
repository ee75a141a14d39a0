"""Notebook controls made from the settings' own declarations.

The review UI keeps no hand-written list of sliders: each control is built from a field of
:class:`~prelabel.config.PipelineSettings` or :class:`~prelabel.config.CategoryOptions`, from
its type and bounds. So a control never offers a value a config file would refuse (a saved
config always loads), and a setting added to the pipeline gets its control by being named in
:data:`PIPELINE_CONTROLS`. Names the installed settings lack are skipped, which lets this list
name settings that another version of the pipeline has.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
import ipywidgets as widgets
from pydantic import BaseModel

from prelabel.config import CategoryOptions, PipelineSettings
from prelabel.review.session import ReviewSession
from prelabel.taxonomy import Category

__all__ = [
    "CATEGORY_CONTROLS",
    "PIPELINE_CONTROLS",
    "TuningControls",
    "available",
    "field_control",
]

#: Pipeline-wide settings offered as controls, in this order. The thresholds are the defaults
#: of every category that sets none of its own.
PIPELINE_CONTROLS = (
    "stuff_method",
    "background_threshold",
    "shrink_kernel",
    "num_samples_factor",
    "min_area",
    "box_threshold",
    "text_threshold",
    "mask_threshold",
    "points_per_region",
)

#: Per-category options offered as controls, of those the session's back-end reads
#: (``BackendSpec.category_options``): grounded_sam's detector gates matter for things, its
#: mask threshold for stuff; sam3's score threshold for both.
CATEGORY_CONTROLS = {
    "thing": ("prompt", "box_threshold", "text_threshold", "score_threshold", "ignore"),
    "stuff": ("prompt", "mask_threshold", "score_threshold", "ignore"),
}

#: Options every back-end reads.
_COMMON_OPTIONS = frozenset({"prompt", "ignore"})

#: Upper end of an integer field without one (``min_area``...): what a text box accepts.
_INT_MAX = 2**31 - 1


def available(model: type[BaseModel], names: Iterable[str]) -> list[str]:
    """``names`` that are fields of ``model``, in the given order."""
    return [name for name in names if name in model.model_fields]


def field_control(model: type[BaseModel], name: str, value: Any) -> widgets.ValueWidget:
    """A widget for field ``name`` of ``model``, showing ``value``.

    A ``Literal`` becomes a dropdown, a bool a checkbox, a number bounded on both sides a
    slider (otherwise a bounded text box, with the field's lower bound), a string a text box
    (``None`` shows as empty). Sliders and text boxes report a value when released or
    entered, not on every step, so each change predicts only once.

    Raises:
        KeyError: ``model`` has no field ``name``.
        TypeError: the field's type has no control.
    """
    info = model.model_fields[name]
    kind = _unwrap_optional(info.annotation)
    low, high = _bounds(info.metadata)
    style = {"description_width": "initial"}
    if get_origin(kind) is Literal:
        return widgets.Dropdown(options=list(get_args(kind)), value=value, description=name)
    if kind is bool:
        return widgets.Checkbox(value=bool(value), description=name, indent=False)
    if kind is str:
        return widgets.Text(
            value=value or "", description=name, style=style, continuous_update=False
        )
    if kind is float:
        if low is not None and high is not None:
            return widgets.FloatSlider(
                value=value, min=low, max=high, step=0.01, readout_format=".2f",
                description=name, style=style, continuous_update=False,
            )  # fmt: skip
        return widgets.BoundedFloatText(
            value=value, min=low or 0.0, max=high or 1e12, description=name, style=style
        )
    if kind is int:
        if low is not None and high is not None:
            return widgets.IntSlider(
                value=value, min=low, max=high, description=name, style=style,
                continuous_update=False,
            )  # fmt: skip
        return widgets.BoundedIntText(
            value=value, min=low or 0, max=_INT_MAX if high is None else high,
            description=name, style=style,
        )  # fmt: skip
    raise TypeError(f"no control for {model.__name__}.{name} of type {kind!r}")


class TuningControls:
    """The pipeline's and each category's controls, bound to a session.

    A control's change is handed to ``on_change`` as a function that applies it to the
    session (so the app decides what follows: predicting again, reporting a refusal); after
    any change :meth:`sync` shows the session's values again: a refused value springs back,
    and a category threshold that follows the pipeline default shows the new default.
    """

    def __init__(
        self, session: ReviewSession, on_change: Callable[[Callable[[], None]], None]
    ) -> None:
        self.session = session
        self.on_change = on_change
        self._syncing = False
        self.pipeline: dict[str, widgets.ValueWidget] = {}
        for name in available(PipelineSettings, PIPELINE_CONTROLS):
            control = field_control(PipelineSettings, name, self._pipeline_value(name))
            control.observe(self._on_pipeline(name), names="value")
            self.pipeline[name] = control
        self.categories: dict[str, dict[str, widgets.ValueWidget]] = {}
        reads = _COMMON_OPTIONS | session.pipeline.backend.spec.category_options
        for category in session.taxonomy.categories:
            kind = "thing" if category.has_instances else "stuff"
            wanted = [name for name in CATEGORY_CONTROLS[kind] if name in reads]
            self.categories[category.name] = {}
            for name in available(CategoryOptions, wanted):
                control = field_control(CategoryOptions, name, self._option_value(category, name))
                if name == "prompt":
                    control.placeholder = category.name
                control.observe(self._on_category(category.name, name), names="value")
                self.categories[category.name][name] = control
        accordion = widgets.Accordion(
            children=[widgets.VBox(list(c.values())) for c in self.categories.values()],
            titles=tuple(self.categories),
        )
        self.widget = widgets.VBox(
            [
                widgets.HTML("<b>Pipeline</b>"),
                *self.pipeline.values(),
                widgets.HTML("<b>Categories</b>"),
                accordion,
            ]
        )

    def sync(self) -> None:
        """Show the session's current values, without reporting them as changes."""
        self._syncing = True
        try:
            for name, control in self.pipeline.items():
                control.value = self._pipeline_value(name)
            for category in self.session.taxonomy.categories:
                for name, control in self.categories[category.name].items():
                    value = self._option_value(category, name)
                    control.value = (value or "") if name == "prompt" else value
        finally:
            self._syncing = False

    def _on_pipeline(self, name: str) -> Callable[[dict[str, Any]], None]:
        def changed(change: dict[str, Any]) -> None:
            if not self._syncing:
                self.on_change(lambda: self.session.tune_pipeline(**{name: change["new"]}))

        return changed

    def _on_category(self, category: str, name: str) -> Callable[[dict[str, Any]], None]:
        def changed(change: dict[str, Any]) -> None:
            if self._syncing:
                return
            value = change["new"]
            if name == "prompt":
                value = value.strip() or None  # empty: the category's name, as in a config
            self.on_change(lambda: self.session.tune(category, **{name: value}))

        return changed

    def _pipeline_value(self, name: str) -> Any:
        return getattr(self.session.pipeline.settings, name)

    def _option_value(self, category: Category, name: str) -> Any:
        """What a control shows: the category's own value, else the pipeline default."""
        value = getattr(self.session.category_options.get(category.name, CategoryOptions()), name)
        if value is None and name != "prompt":
            return self._pipeline_value(name)
        return value


def _unwrap_optional(annotation: Any) -> Any:
    """``float | None`` -> ``float``; anything else unchanged."""
    if get_origin(annotation) in (Union, type(int | None)):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _bounds(metadata: Iterable[Any]) -> tuple[float | None, float | None]:
    """The field's ``ge``/``gt`` and ``le``/``lt`` (an open bound is used as if closed)."""
    low: Any = None
    high: Any = None
    for item in metadata:
        if isinstance(item, annotated_types.Ge | annotated_types.Gt):
            low = item.ge if isinstance(item, annotated_types.Ge) else item.gt
        if isinstance(item, annotated_types.Le | annotated_types.Lt):
            high = item.le if isinstance(item, annotated_types.Le) else item.lt
    return low, high
