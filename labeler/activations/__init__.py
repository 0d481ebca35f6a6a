"""Subject model hooks and feature encoders (SAEs or neurons)."""

from labeler.activations.model import HookedModel, load_model, output_embedding, resolve_hook
from labeler.activations.formats import Encoded, Encoder, load_encoder

__all__ = ["HookedModel", "load_model", "output_embedding", "resolve_hook", "Encoded", "Encoder", "load_encoder"]
