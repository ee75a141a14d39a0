"""Every prompt within its model's text limit, checked once per taxonomy before any image.

A text encoder has a fixed number of positions (CLIPSeg and SAM 3 read CLIP's 77 and 32
tokens, Grounding DINO 256 per query). A phrase longer than that is the same for every image,
so it must not fail each image alike (CLIPSeg raises on it, after Grounding DINO and SAM have
run): :func:`fit_prompts` measures each phrase with the loaded model's own tokenizer
(:class:`~prelabel.backends.base.TextLimit`) and cuts it to the longest run of whole words that
fits, with one warning naming the category. A phrase that cannot be cut to fit (no character
of it fits) is a :class:`~prelabel.errors.PromptTooLongError`, which ends the run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace

from prelabel.backends.base import TextLimit
from prelabel.errors import PromptTooLongError
from prelabel.taxonomy import CategoryPrompt, Taxonomy

logger = logging.getLogger(__name__)


def fit_prompts(taxonomy: Taxonomy, limits: Sequence[TextLimit]) -> Taxonomy:
    """``taxonomy`` with every phrase within the limits of the models that read it.

    Returns ``taxonomy`` itself when nothing was cut. Synonyms that become equal when cut are
    kept once.

    Raises:
        PromptTooLongError: a phrase whose first character alone is over a limit.
    """
    things = tuple(_fit(p, [lim for lim in limits if lim.things]) for p in taxonomy.things)
    stuff = tuple(_fit(p, [lim for lim in limits if lim.stuff]) for p in taxonomy.stuff)
    if things == taxonomy.things and stuff == taxonomy.stuff:
        return taxonomy
    return replace(taxonomy, things=things, stuff=stuff)


def _fit(prompt: CategoryPrompt, limits: Sequence[TextLimit]) -> CategoryPrompt:
    phrases = prompt.phrases
    for limit in limits:
        phrases = tuple(dict.fromkeys(_cut(phrase, limit, prompt.name) for phrase in phrases))
    return prompt if phrases == prompt.phrases else replace(prompt, phrases=phrases)


def _cut(phrase: str, limit: TextLimit, category: str) -> str:
    """``phrase``, or its longest start of whole words (of characters, when even its first
    word is over) that ``limit`` allows."""
    tokens = limit.count_tokens(phrase)
    if tokens <= limit.max_tokens:
        return phrase

    def fits(text: str) -> bool:
        return limit.count_tokens(text) <= limit.max_tokens

    words = phrase.split(" ")
    kept = _longest(len(words), lambda n: fits(" ".join(words[:n])))
    if kept:
        cut = " ".join(words[:kept])
    else:
        first = words[0]
        cut = first[: _longest(len(first), lambda n: fits(first[:n]))]
    if not cut:
        raise PromptTooLongError(
            f"category {category!r}: {limit.model} cannot read its phrase {_short(phrase)!r} "
            f"even cut to one character (limit {limit.max_tokens} tokens with its special "
            "tokens). Change its prompt in the config's categories section"
        )
    logger.warning(
        "category %r: its phrase %r is %d tokens, over %s's limit of %d; cut to %r. Shorten "
        "its prompt in the config's categories section",
        category,
        _short(phrase),
        tokens,
        limit.model,
        limit.max_tokens,
        cut,
    )
    return cut


def _longest(count: int, fits: Callable[[int], bool]) -> int:
    """The largest ``n`` in ``0..count`` with ``fits(n)`` (0 if none of ``1..count`` fits),
    by bisection: a longer start of a text never has fewer tokens."""
    low, high = 0, count
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low


def _short(text: str, length: int = 60) -> str:
    """``text`` for a log line: its start, when it is long."""
    return text if len(text) <= length else f"{text[:length]}..."
