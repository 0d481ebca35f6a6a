"""SAE formats: one module per on-disk layout, each registering itself in ``SAE_FORMATS``.

``load_encoder(spec, hook=..., d_model=...)`` opens ``neurons`` (the hookpoint's own units) or a
path in any registered layout, and checks the width against the model's hookpoint.  To add a
format, write a module here that calls ``register_format`` and import it below.
"""

from __future__ import annotations

from pathlib import Path

from labeler.activations.formats import gemmascope, saelens, sparsify  # noqa: F401  (registration)
from labeler.activations.formats.base import SAE_FORMATS, Encoded, Encoder, SaeFormat, register_format
from labeler.core.errors import ConfigError, InputError


def neurons(d_model: int | None) -> Encoder:
    """The identity "SAE": every unit of the hookpoint is a feature."""
    if d_model is None:
        raise ConfigError("--sae neurons needs the hookpoint width")
    return Encoder(name="neurons", format="neurons", path="neurons", d_in=d_model, n_features=d_model,
                   architecture="neurons")


def _detect(path: Path) -> tuple[SaeFormat, Path] | None:
    for fmt in SAE_FORMATS.values():
        found = fmt.detect(path)
        if found is not None:
            return fmt, found
    return None


def load_encoder(spec: str, *, hook: str | None = None, d_model: int | None = None) -> Encoder:
    """Open ``spec`` (``neurons`` or a path) and check its width against the model's ``d_model``.

    A folder holding one subfolder per hookpoint (sparsify's layout for many layers) is opened
    at the subfolder named like ``hook``."""
    if spec == "neurons":
        return neurons(d_model)
    path = Path(spec).expanduser()
    if not path.exists():
        raise InputError(f"SAE {spec!r}: no such file or folder (give a path or 'neurons')")
    hit = _detect(path)
    if hit is None and hook and path.is_dir() and (path / hook).is_dir():
        hit = _detect(path / hook)
    if hit is None:
        layouts = ", ".join(f.description for f in SAE_FORMATS.values())
        subs = sorted(p.name for p in path.iterdir() if p.is_dir() and _detect(p)) if path.is_dir() else []
        detail = f"; SAE folders here: {', '.join(subs)}" if subs else ""
        raise InputError(f"SAE {spec!r}: not a recognised layout (need one of: {layouts}){detail}")
    fmt, found = hit
    enc = fmt.load(found)
    if d_model is not None and enc.d_in != d_model:
        raise ConfigError(
            f"size mismatch: SAE {spec!r} expects inputs of width d_in={enc.d_in}, but hookpoint "
            f"{hook!r} of the model has width {d_model}"
        )
    return enc


__all__ = ["SAE_FORMATS", "Encoded", "Encoder", "SaeFormat", "load_encoder", "neurons", "register_format"]
