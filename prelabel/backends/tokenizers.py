"""Tokenizers built in memory for the tiny random models of more than one back-end.

CLIPSeg (grounded_sam) and SAM 3 both read text with CLIP's byte-level BPE; their tiny models
share this builder so the two vocabularies cannot drift apart. Nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import CLIPTokenizer

__all__ = ["tiny_clip_bpe_tokenizer"]


def tiny_clip_bpe_tokenizer(words: Sequence[str], *, max_length: int) -> CLIPTokenizer:
    """A byte-level BPE tokenizer in CLIP's layout, with merges only for ``words``.

    Any text tokenizes (every byte is a symbol); each of ``words`` is one token. The vocabulary
    order follows CLIP's (bytes, bytes with ``</w>``, merged symbols, then the two specials), so
    ``<|endoftext|>`` is the last id, as CLIP-style pooling expects. ``max_length`` is the text
    encoder's positions (77 for CLIPSeg, 32 for SAM 3).
    """
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [f"{s}</w>" for s in symbols]
    merges: list[tuple[str, str]] = []
    for word in words:
        current = word[0]
        for i, char in enumerate(word[1:], start=1):
            piece = f"{char}</w>" if i == len(word) - 1 else char
            if (current, piece) not in merges:
                merges.append((current, piece))
            current += piece
            if current not in vocab:
                vocab.append(current)
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    # Merges must be 2-tuples: the tokenizers library rejects "a b" strings.
    return CLIPTokenizer(
        vocab={token: i for i, token in enumerate(vocab)},
        merges=merges,
        model_max_length=max_length,
    )


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table (no whitespace or controls)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return dict(sorted(table.items()))
