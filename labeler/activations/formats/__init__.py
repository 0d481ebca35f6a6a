"""SAE formats: one module per on-disk layout, each registering itself in ``SAE_FORMATS``.

``load_encoder(spec, hook=..., d_model=...)`` opens ``neurons`` (the hookpoint's own units,
``neurons:pos,neg`` for both signs as separate features), a local path, or a Hub / SAELens
release spec (see ``labeler.activations.sources``), and checks the width against the model's
hookpoint.  To add a format, write a module here that calls ``register_format`` and import it
below; to add an architecture, one function in ``architectures.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from labeler.activations.formats import gemmascope, gemmascope2, saelens, sparsify  # noqa: F401  (registration)
from labeler.activations.formats.architectures import ARCHITECTURES, register_architecture
from labeler.activations.formats.base import SAE_FORMATS, SIGNS, Encoded, Encoder, SaeFormat, register_format
from labeler.core.errors import ConfigError, InputError

if TYPE_CHECKING:
    from labeler.activations.hookpoints import SaeHook
    from labeler.activations.sources import SaeSource


def parse_signs(text: str | None) -> tuple[str, ...] | None:
    """``"pos,neg"`` -> ("pos", "neg"); None stays None (signed values as they are)."""
    if text is None:
        return None
    signs = tuple(s.strip() for s in text.split(",") if s.strip())
    if not signs or any(s not in SIGNS for s in signs) or len(set(signs)) != len(signs):
        raise ConfigError(f"--signs must be pos, neg or pos,neg (got {text!r})")
    return signs


def neurons_spec(signs: tuple[str, ...] | None) -> str:
    return "neurons" if signs is None else "neurons:" + ",".join(signs)


def neurons(d_model: int | None, signs: tuple[str, ...] | None = None) -> Encoder:
    """The identity "SAE": every unit of the hookpoint is a feature; with ``signs`` each side
    of a neuron is one (feature ``i`` = max(x_i, 0), ``d + i`` = max(-x_i, 0) for pos,neg)."""
    if d_model is None:
        raise ConfigError("--sae neurons needs the hookpoint width")
    n = d_model * (len(signs) if signs else 1)
    return Encoder(name="neurons" if signs is None else neurons_spec(signs), format="neurons", path="neurons",
                   d_in=d_model, n_features=n, architecture="neurons" if signs is None else "neuron_sides",
                   activation="identity", signs=signs)


def detect_format(path: Path) -> tuple[SaeFormat, Path] | None:
    for fmt in SAE_FORMATS.values():
        found = fmt.detect(path)
        if found is not None:
            return fmt, found
    return None


def _open(spec: str, *, hook: str | None, cache_dir) -> tuple[SaeFormat, Path, "SaeSource"]:
    from labeler.activations.sources import resolve_sae, sae_folders

    source = resolve_sae(spec, cache_dir=cache_dir)
    path = source.path
    hit = detect_format(path)
    if hit is None and hook and path.is_dir() and (path / hook).is_dir():
        # a folder holding one subfolder per hookpoint (sparsify's layout for many layers)
        hit = detect_format(path / hook)
    if hit is None:
        layouts = ", ".join(f.description for f in SAE_FORMATS.values())
        subs = sae_folders(path) if path.is_dir() else []
        detail = f"; SAE folders here: {', '.join(subs[:30])}" if subs else ""
        raise InputError(f"SAE {spec!r}: not a recognised layout (need one of: {layouts}){detail}")
    return hit[0], hit[1], source


def load_encoder(spec: str, *, hook: str | None = None, d_model: int | None = None,
                 cache_dir: str | Path | None = None) -> Encoder:
    """Open ``spec`` (``neurons[:signs]``, a path, ``hf://...`` or ``saelens://...``) and check its
    width against the model's ``d_model``.  ``hook`` is the module the collect reads (recorded;
    also picks the subfolder of a folder holding one SAE per hookpoint)."""
    if spec == "neurons" or spec.startswith("neurons:"):
        return neurons(d_model, parse_signs(spec.split(":", 1)[1]) if ":" in spec else None)
    fmt, found, source = _open(spec, hook=hook, cache_dir=cache_dir)
    enc = fmt.load(found, source)
    enc.source = source.describe()
    if hook is not None:
        enc.options["read_at"] = hook
    if d_model is not None and enc.d_in != d_model:
        raise ConfigError(
            f"size mismatch: SAE {spec!r} expects inputs of width d_in={enc.d_in}, but hookpoint "
            f"{hook!r} of the model has width {d_model}"
        )
    return enc


def sae_hook(spec: str, *, cache_dir: str | Path | None = None) -> tuple["SaeHook | None", "SaeSource | None"]:
    """Where the SAE at ``spec`` reads, from its config alone (no weights are read)."""
    if spec == "neurons" or spec.startswith("neurons:"):
        return None, None
    fmt, found, source = _open(spec, hook=None, cache_dir=cache_dir)
    return fmt.hook(found, source), source


__all__ = ["ARCHITECTURES", "SAE_FORMATS", "Encoded", "Encoder", "SaeFormat", "detect_format", "load_encoder",
           "neurons", "neurons_spec", "parse_signs", "register_architecture", "register_format", "sae_hook"]
