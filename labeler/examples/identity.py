"""What a store *is*, by content: the identity that the database keys an SAE row on.

Names (the model's folder, the SAE's folder) are labels: two different SAEs can share them
(another seed, another training run, another folder with the same name).  A store's identity
is a hash of what decides its content:

* the collect settings (``CollectConfig.identity()``) without the paths they were given as,
* the model's and the SAE's descriptions in the manifest without their names and paths: a
  fingerprint of each one's weights as loaded, and what else changes the encoding (an SAE's
  k, normalisation or signs live in its config, not its tensors),
* the token windows the collect actually streamed (so the corpus counts by content too).

The same store moved to another folder keeps its identity; the same weights and settings
collected from another path get the same identity (the stores are the same); anything that
changes the content changes it.

The database reads it back with ``labeler.db.identity.identity_of`` (which also covers stores
written before identities existed).
"""

from __future__ import annotations

import hashlib
import json
from typing import Iterable

import numpy as np
import torch

# Values hashed per tensor: all of a tensor up to this size, else this many evenly strided ones.
# Retraining, another seed or fine-tuning moves essentially every weight, so a sample tells
# them apart while a 7B model's fingerprint stays a fraction of a second (read on its device).
FINGERPRINT_VALUES = 1 << 16
# Settings given as paths: the fingerprints and the tokens stand for their content instead.
PATH_SETTINGS = ("model", "sae", "corpus")


@torch.inference_mode()
def weights_fingerprint(tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """sha256 over each named tensor's name, dtype, shape and values (all of them, or
    ``FINGERPRINT_VALUES`` evenly strided ones for larger tensors)."""
    h = hashlib.sha256()
    for name, t in sorted(tensors, key=lambda nt: nt[0]):
        flat = t.detach().reshape(-1)
        if flat.numel() > FINGERPRINT_VALUES:
            flat = flat[:: -(-flat.numel() // FINGERPRINT_VALUES)]
        values = flat.float().cpu().contiguous().numpy()
        h.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        h.update(values.tobytes())
    return h.hexdigest()


def encoder_fingerprint(encoder) -> str:
    """The fingerprint of an Encoder's tensors (a neuron basis has none: its model's counts)."""
    named = [(n, getattr(encoder, n)) for n in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")]
    named += list(encoder.params.items())
    return weights_fingerprint((n, t) for n, t in named if t is not None)


def model_fingerprint(model) -> str:
    return weights_fingerprint(model.state_dict().items())


def store_identity(manifest: dict, tokens: np.ndarray) -> str:
    """The identity of a finished collect (see the module docstring); 32 hex digits."""
    settings = {k: v for k, v in (manifest.get("identity") or {}).items() if k not in PATH_SETTINGS}
    # the descriptions keep what changes the encoding (k, normalisation, signs, dtype, class and
    # the fingerprints) and drop what only names or locates the files
    model = {k: v for k, v in manifest["model"].items() if k not in ("name", "path_or_id", "revision", "hook_name")}
    sae = {k: v for k, v in manifest["sae"].items() if k not in ("name", "path", "source", "neuronpedia_id")}
    content = json.dumps({"settings": settings, "model": model, "sae": sae}, sort_keys=True)
    h = hashlib.sha256(content.encode())
    for start in range(0, len(tokens), 1 << 16):  # by rows: a memory-mapped 100M tokens is never copied whole
        h.update(np.ascontiguousarray(tokens[start:start + (1 << 16)]).data)
    return h.hexdigest()[:32]
