"""The contract between a model back-end and everything else, modelled on cvat-sdk's
``DetectionFunction``: a :class:`BackendSpec` saying what the back-end can do, and a small
:class:`Backend` protocol that turns working images and a taxonomy into mask candidates.

Why candidates and not predictions: the panoptic merge (higher score wins an overlap, the
minimum area, the original size), the working-image resize, the stage clock and the sequence
driver's tracks are the same for every back-end, so they stay outside it
(:mod:`prelabel.pipeline`). A back-end only says which pixels it thinks belong to which
category, with what score.

Contract of a back-end, as the generic :class:`~prelabel.pipeline.pipeline.Pipeline` and the
sequence driver use it:

- :meth:`Backend.open_batch` runs whatever is computed once per image (the image encoders) for
  a batch of working images, and returns one :class:`ImageSession` per image, in order.
- :meth:`ImageSession.things` gives the thing candidates (``is_thing=True``), in the order the
  merge should prefer them on equal scores; the sequence driver calls it on keyframes only.
- :meth:`ImageSession.stuff` gives the stuff candidates (``is_thing=False``), told the thing
  candidates whose pixels stuff may not take (its own from ``things``, or a sequence's tracked
  ones); it is called on every image and frame.
- Masks are boolean, at the working image's size ``(H, W)`` or cropped to a window of it
  (:class:`~prelabel.panoptic.MaskCandidate`'s ``origin`` and ``frame``: a back-end that keeps
  its masks on a device hands the host only each thing's window); category ids are the
  taxonomy's. Neither method may return candidates of categories the taxonomy does not prompt.
- :meth:`Backend.text_limits` lists each text encoder's token limit with its tokenizer's count;
  the pipeline cuts every phrase to fit once per taxonomy, before the first image
  (:mod:`prelabel.pipeline.prompts`), so a back-end never meets a phrase over its limit.
- A back-end is built once per process and reused for every image; it may hold caches keyed
  by the taxonomy (text embeddings), but no per-image state outside its sessions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from PIL import Image

from prelabel.config import PipelineSettings
from prelabel.panoptic import MaskCandidate
from prelabel.taxonomy import OptionReader, Taxonomy

if TYPE_CHECKING:
    import torch

    from prelabel.pipeline.clock import StageClock


@dataclass(frozen=True, kw_only=True)
class BackendSpec:
    """What a back-end is and can do, readable without loading it (no torch, no weights)."""

    #: The name ``models.backend`` selects it by.
    name: str
    #: One line for ``--help`` texts and errors.
    description: str
    #: Whether :meth:`Backend.open_batch` gains from several images at once (one encoder call
    #: for all); when False the engines still may batch, at no gain.
    batching: bool
    #: The models it loads, by their key under ``models:`` in the config, which is also their
    #: subdirectory of ``--models DIR``.
    model_roles: tuple[str, ...]
    #: The flat per-category threshold keys it reads (``box_threshold``, ``score_threshold``,
    #: ...); ``prompt`` and ``ignore`` apply to every back-end and are not listed.
    category_options: frozenset[str]
    #: Its text encoder's token limit per query, if it has one (longer prompt lists are split),
    #: for readers without the model; the check of each phrase reads the loaded model's own
    #: limit (:class:`TextLimit`).
    max_text_tokens: int | None = None

    def option_reader(self) -> OptionReader:
        """What :func:`~prelabel.taxonomy.build_taxonomy` checks category options against."""
        return OptionReader(backend=self.name, keys=self.category_options)


@dataclass(frozen=True, kw_only=True)
class TextLimit:
    """One loaded text encoder's limit, measured with its own tokenizer.

    A back-end lists one per text encoder (:meth:`Backend.text_limits`) so that every prompt is
    checked once, before the first image reaches a model (:mod:`prelabel.pipeline.prompts`),
    instead of failing each image alike.
    """

    #: The model's title, for the warning that names the category (``"CLIPSeg"``).
    model: str
    #: Whether it reads the thing prompts, the stuff prompts, or both.
    things: bool
    stuff: bool
    #: The most tokens one phrase may take, special tokens included.
    max_tokens: int
    #: Tokens of one phrase alone as the model reads it (special tokens and any separator
    #: included), measured without the tokenizer's own "too long" warning.
    count_tokens: Callable[[str], int]


class ImageSession(Protocol):
    """One working image's encoder output, computed once, asked for things and stuff."""

    def things(self) -> list[MaskCandidate]:
        """The thing candidates of this image (see the module docstring)."""
        ...

    def stuff(self, things: Sequence[MaskCandidate]) -> list[MaskCandidate]:
        """The stuff candidates of this image, with the thing candidates ``things`` known
        (full-size or cropped masks: a back-end reads them with ``window``/``full_mask()``)."""
        ...


class Backend(Protocol):
    """A loaded model back-end (see the module docstring for the contract)."""

    @property
    def spec(self) -> BackendSpec: ...

    @property
    def device(self) -> torch.device:
        """Where its models run (the stage clock synchronises CUDA through it)."""
        ...

    @property
    def is_tiny(self) -> bool:
        """True when a tiny random-weight model is in use: its masks are meaningless."""
        ...

    def text_limits(self) -> tuple[TextLimit, ...]:
        """Its text encoders' limits (empty when it reads no text or has no limit)."""
        ...

    def open_batch(
        self,
        images: Sequence[Image.Image],
        taxonomy: Taxonomy,
        settings: PipelineSettings,
        clock: StageClock,
    ) -> list[ImageSession]:
        """One session per working image (RGB, at most ``max_image_side``), the per-image
        encoders run once for the batch; ``clock`` times the stages."""
        ...
