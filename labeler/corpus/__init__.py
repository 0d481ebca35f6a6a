"""Corpus: documents from files, datasets or the builtin stdlib text, packed into windows."""

from labeler.corpus.sources import CorpusSpec, iter_texts
from labeler.corpus.windows import WindowFrame, frame_for, iter_windows

__all__ = ["CorpusSpec", "iter_texts", "WindowFrame", "frame_for", "iter_windows"]
