"""Dataset categories -> text prompts for the zero-shot models.

A Segments.ai category with ``has_instances: true`` is a *thing* (each object its own segment,
found by Grounding DINO); every other category is *stuff* (one segment per category, found by
CLIPSeg). Options from a config (prompt synonyms, thresholds, ``ignore``) are matched to
categories **by name**, like CVAT's auto-annotation label mapping: names are what a person writes
in a config, ids are what the platform stores. Pure Python, no torch.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from prelabel.config import (
    THRESHOLD_KEYS,
    CategoryOptions,
    FrozenModel,
    PipelineSettings,
    describe_validation_error,
    read_yaml,
)
from prelabel.errors import TaxonomyError
from prelabel.panoptic import MAX_SEGMENT_ID


@dataclass(frozen=True)
class Category:
    """A category as Segments.ai stores it in a dataset's ``task_attributes``."""

    id: int
    name: str
    has_instances: bool = False
    color: tuple[int, ...] | None = None


@dataclass(frozen=True)
class CategoryPrompt:
    """What the models are asked for one category, with its options resolved.

    ``options`` holds the numeric options the chosen back-end reads (``box_threshold``,
    ``score_threshold``, ...), each the category's own value or the pipeline-wide default:
    which ones mean something is the back-end's business, not the taxonomy's.
    """

    category_id: int
    name: str
    is_thing: bool
    #: Synonyms; a detection of any of them counts for this category.
    phrases: tuple[str, ...]
    options: Mapping[str, float] = field(default_factory=dict, hash=False)

    def option(self, key: str) -> float:
        """One resolved option; a back-end asking for one it does not declare is a bug."""
        try:
            return self.options[key]
        except KeyError:
            raise KeyError(
                f"category {self.name!r} has no option {key!r} (resolved: {sorted(self.options)})"
            ) from None


@dataclass(frozen=True)
class OptionReader:
    """Which flat per-category options a model back-end reads (from its spec), so options it
    would silently ignore are an error that names it."""

    backend: str
    keys: frozenset[str]


@dataclass(frozen=True)
class Taxonomy:
    """All categories of a dataset and the prompts for the ones that are not ignored."""

    categories: tuple[Category, ...]
    things: tuple[CategoryPrompt, ...]
    stuff: tuple[CategoryPrompt, ...]

    def category(self, category_id: int) -> Category:
        for cat in self.categories:
            if cat.id == category_id:
                return cat
        raise KeyError(category_id)

    @property
    def prompts(self) -> tuple[CategoryPrompt, ...]:
        return self.things + self.stuff


class _CategoryEntry(FrozenModel):
    """One entry of a categories file: Segments task attributes plus our options."""

    id: int
    name: str
    has_instances: bool = False
    color: tuple[int, ...] | None = None
    prompt: str | None = None
    box_threshold: float | None = None
    text_threshold: float | None = None
    mask_threshold: float | None = None
    score_threshold: float | None = None
    ignore: bool = False


class _CategoriesFile(FrozenModel):
    categories: list[_CategoryEntry]


def load_categories_file(path: Path) -> tuple[list[Category], dict[str, CategoryOptions]]:
    """Read a categories YAML (``categories: [{id, name, has_instances, color, prompt, ...}]``).

    Returns the categories and the per-name options found beside them.
    """
    data = read_yaml(path)
    try:
        parsed = _CategoriesFile.model_validate(data)
    except ValidationError as exc:
        raise TaxonomyError(f"{path}: {describe_validation_error(exc, _CategoriesFile)}") from None
    categories = [
        Category(id=e.id, name=e.name, has_instances=e.has_instances, color=e.color)
        for e in parsed.categories
    ]
    options = {
        e.name: CategoryOptions(
            prompt=e.prompt,
            box_threshold=e.box_threshold,
            text_threshold=e.text_threshold,
            mask_threshold=e.mask_threshold,
            score_threshold=e.score_threshold,
            ignore=e.ignore,
        )
        for e in parsed.categories
    }
    return categories, options


def categories_from_task_attributes(task_attributes: Mapping[str, object]) -> list[Category]:
    """Read the ``categories`` list of a Segments dataset's ``task_attributes`` (a plain dict)."""
    raw = task_attributes.get("categories") or []
    if not isinstance(raw, list):
        raise TaxonomyError("task_attributes.categories is not a list")
    out = []
    for entry in raw:
        if not isinstance(entry, Mapping) or "id" not in entry or "name" not in entry:
            raise TaxonomyError(f"a dataset category lacks an id or a name: {entry!r}")
        color = entry.get("color")
        out.append(
            Category(
                id=int(entry["id"]),
                name=str(entry["name"]),
                has_instances=bool(entry.get("has_instances") or False),
                color=tuple(int(c) for c in color) if color else None,
            )
        )
    return out


def build_taxonomy(
    categories: Sequence[Category],
    options: Mapping[str, CategoryOptions],
    defaults: PipelineSettings,
    *,
    reader: OptionReader | None = None,
) -> Taxonomy:
    """Check the categories and resolve each one's prompt and thresholds.

    With ``reader`` (the chosen back-end's, see ``prelabel.backends.option_reader``) each prompt
    resolves only the options that back-end reads; without it, all of them.

    Raises :class:`TaxonomyError` for duplicate ids or names, ids outside ``1..2^24-1`` (0 is
    "unlabeled" in a bitmap), options naming a category that does not exist, an option the
    back-end does not read, an empty prompt, or when every category is ignored.
    """
    _check_categories(categories)
    keys = tuple(THRESHOLD_KEYS) if reader is None else _readable(options, reader)
    names = {c.name for c in categories}
    unknown = sorted(set(options) - names)
    if unknown:
        raise TaxonomyError(
            f"options given for unknown categor{'y' if len(unknown) == 1 else 'ies'} "
            f"{', '.join(_with_suggestion(name, names) for name in unknown)}; the dataset has "
            f"{', '.join(sorted(names))} (a config's categories: section names the dataset's "
            "categories)"
        )
    prompts = [
        _prompt(cat, options.get(cat.name, CategoryOptions()), defaults, keys)
        for cat in categories
        if not options.get(cat.name, CategoryOptions()).ignore
    ]
    if not prompts:
        raise TaxonomyError("every category is ignored: there is nothing to predict")
    return Taxonomy(
        categories=tuple(categories),
        things=tuple(p for p in prompts if p.is_thing),
        stuff=tuple(p for p in prompts if not p.is_thing),
    )


def split_phrases(prompt: str) -> tuple[str, ...]:
    """``"person . pedestrian"`` -> ``("person", "pedestrian")``; Grounding DINO's separator."""
    return tuple(p for p in (_normalize(part) for part in prompt.split(".")) if p)


def _normalize(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("_", " ")).strip().lower()


def _readable(options: Mapping[str, CategoryOptions], reader: OptionReader) -> tuple[str, ...]:
    """The threshold keys ``reader`` reads; raises for a category setting one it does not."""
    for name, opts in options.items():
        unread = sorted(set(opts.thresholds()) - reader.keys)
        if unread:
            reads = ", ".join(sorted(reader.keys | {"prompt", "ignore"}))
            raise TaxonomyError(
                f"category {name!r}: {', '.join(unread)} is not an option of the "
                f"{reader.backend} back-end (models.backend), which reads {reads}"
            )
    return tuple(key for key in THRESHOLD_KEYS if key in reader.keys)


def _prompt(
    cat: Category, opts: CategoryOptions, defaults: PipelineSettings, keys: Collection[str]
) -> CategoryPrompt:
    phrases = split_phrases(opts.prompt if opts.prompt is not None else cat.name)
    if not phrases:
        raise TaxonomyError(f"category {cat.name!r} (id {cat.id}) has an empty prompt")
    return CategoryPrompt(
        category_id=cat.id,
        name=cat.name,
        is_thing=cat.has_instances,
        phrases=phrases,
        options={key: _pick(getattr(opts, key), getattr(defaults, key)) for key in keys},
    )


def _pick(value: float | None, default: float) -> float:
    return default if value is None else value


def _check_categories(categories: Iterable[Category]) -> None:
    seen_ids: set[int] = set()
    seen_names: set[str] = set()
    for cat in categories:
        if not 1 <= cat.id <= MAX_SEGMENT_ID:
            raise TaxonomyError(f"category {cat.name!r} has id {cat.id}; ids must be 1..2^24-1")
        if cat.id in seen_ids:
            raise TaxonomyError(f"category id {cat.id} is used twice")
        if cat.name in seen_names:
            raise TaxonomyError(f"category name {cat.name!r} is used twice")
        seen_ids.add(cat.id)
        seen_names.add(cat.name)


def _with_suggestion(name: str, names: set[str]) -> str:
    """``'persn' (did you mean 'person'?)``, or just ``'persn'`` when nothing is close."""
    close = difflib.get_close_matches(name, sorted(names), n=1, cutoff=0.6)
    return f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name)
