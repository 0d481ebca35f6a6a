"""Tokenize documents and pack them into fixed-length windows of real (non-special) tokens.

A window holds exactly ``ctx_len`` content tokens. Documents are joined with a separator
(the tokenization of a blank line, when the tokenizer keeps one). Special tokens found in the
text are dropped, and the final partial window is discarded, so padding never exists and no
special token can become an example. Special tokens the model needs (BOS, CLS/SEP) are added
around each window at forward time by :class:`WindowFrame` and sliced off the activations.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WindowFrame:
    """Special tokens placed around every window's content tokens for the forward pass."""

    prefix: tuple[int, ...] = ()
    suffix: tuple[int, ...] = ()

    def wrap(self, windows: np.ndarray) -> np.ndarray:
        n = windows.shape[0]
        parts = []
        if self.prefix:
            parts.append(np.broadcast_to(np.asarray(self.prefix, dtype=windows.dtype), (n, len(self.prefix))))
        parts.append(windows)
        if self.suffix:
            parts.append(np.broadcast_to(np.asarray(self.suffix, dtype=windows.dtype), (n, len(self.suffix))))
        return np.concatenate(parts, axis=1) if len(parts) > 1 else windows

    @property
    def content_slice(self) -> slice:
        return slice(len(self.prefix), -len(self.suffix) if self.suffix else None)


def frame_for(tokenizer, *, drop_bos: bool = False) -> WindowFrame:
    """The special tokens this tokenizer adds around a text (BERT: CLS ... SEP; Llama: BOS ...).

    Read from the tokenizer itself so any model works; ``drop_bos`` omits a leading BOS.
    """
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    special = set(tokenizer.all_special_ids)
    prefix: list[int] = []
    for t in probe:
        if t in special:
            prefix.append(t)
        else:
            break
    suffix = [t for t in probe[len(prefix) + len(plain):] if t in special]
    if drop_bos and prefix and prefix[0] == tokenizer.bos_token_id:
        prefix = prefix[1:]
    return WindowFrame(tuple(prefix), tuple(suffix))


def iter_windows(texts: Iterable[str], tokenizer, ctx_len: int, *, doc_batch: int = 64) -> Iterator[np.ndarray]:
    """Yield int32 arrays of ``ctx_len`` content token ids, in corpus order."""
    special = np.asarray(sorted(set(tokenizer.all_special_ids)), dtype=np.int64)
    sep = np.asarray([t for t in tokenizer("\n\n", add_special_tokens=False)["input_ids"]
                      if t not in set(special.tolist())], dtype=np.int64)
    rest = np.zeros(0, dtype=np.int64)  # tokens carried over to the next window
    batch: list[str] = []

    def flush(docs: list[str]) -> Iterator[np.ndarray]:
        nonlocal rest
        parts = [rest]
        for ids in tokenizer(docs, add_special_tokens=False)["input_ids"]:
            if ids:
                parts += [np.asarray(ids, dtype=np.int64), sep]
        stream = np.concatenate(parts)
        if special.size:
            stream = stream[~np.isin(stream, special)]
        n_full = len(stream) // ctx_len
        yield from stream[: n_full * ctx_len].astype(np.int32).reshape(n_full, ctx_len)
        rest = stream[n_full * ctx_len :]

    for text in texts:
        if not text or not text.strip():
            continue
        batch.append(text)
        if len(batch) >= doc_batch:
            yield from flush(batch)
            batch = []
    if batch:
        yield from flush(batch)
