"""What one collect reads: the SAE (as a canonical spec) and the model module it reads at.

``resolve_target`` is what ``labeler collect`` runs before collecting: it resolves ``--sae``
(+ ``--sae-id``, ``--revision``; downloading once), reads where the SAE says it reads (its
cfg alone, no weights), and maps that, or ``--hook``, onto the model's modules (the model is
built on the meta device: nothing is downloaded or allocated but its config).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from labeler.activations.formats import detect_format, neurons_spec, parse_signs, sae_hook
from labeler.activations.hookpoints import Hookpoint, SaeHook, find_hookpoint
from labeler.activations.model import model_config, module_names
from labeler.activations.releases import ReleaseTable
from labeler.activations.sources import SaeSource, resolve_sae
from labeler.core.errors import ConfigError


@dataclass(frozen=True)
class CollectTarget:
    """One SAE and its hookpoint, ready for a ``CollectConfig``."""

    sae: str
    """the canonical SAE spec (``load_encoder`` opens it again, offline too)"""
    hook: str
    """the module path in the loaded model"""
    hook_io: str
    """"input" | "output\""""
    tl_name: str | None
    """the TransformerLens hook name the module was mapped from, if any"""
    sae_hook: SaeHook | None
    """where the SAE's own files say it reads"""
    sae_point: Hookpoint | None
    """that place in this model (None: the SAE does not say, or the model has no such place)"""
    source: SaeSource | None


def resolve_target(model: str, sae: str = "neurons", *, sae_id: str | None = None, revision: str | None = None,
                   hook: str | None = None, hook_io: str | None = None, signs: str | None = None,
                   cache_dir: str | Path | None = None, releases: ReleaseTable | None = None) -> CollectTarget:
    """``--hook`` (a module or TransformerLens name) wins over the SAE's own hookpoint; without
    it the SAE's config decides.  ``signs`` (``pos``, ``neg``, ``pos,neg``) applies to neurons."""
    sides = parse_signs(signs)
    own: SaeHook | None = None
    source: SaeSource | None = None
    if sae == "neurons":
        if sae_id or revision:
            raise ConfigError("--sae-id and --revision name an SAE's files; --sae neurons has none")
        if hook is None:
            raise ConfigError("--sae neurons needs --hook (a module or TransformerLens hook name)")
        spec = neurons_spec(sides)
    else:
        if sides is not None:
            raise ConfigError("--signs applies to --sae neurons (SAE latents are non-negative; signed ones, "
                              "such as abstopk, are always kept as one feature per sign)")
        source = resolve_sae(sae, sae_id, revision, cache_dir=cache_dir, releases=releases)
        if (sae_id is None and hook and source.kind == "local" and detect_format(source.path) is None
                and (source.path / hook).is_dir()):
            source = resolve_sae(sae, hook, cache_dir=cache_dir)  # a folder of per-hookpoint SAEs
        spec = source.spec()
        own, _ = sae_hook(spec, cache_dir=cache_dir)
    config = model_config(model)
    names, base = module_names(config)
    if hook is None:
        if own is None:
            raise ConfigError(f"SAE {sae!r} does not say where it reads; name the module with --hook "
                              f"(and --hook-io input|output)")
        point = own_point = find_hookpoint(own, config, names, base_prefix=base, io=hook_io)
    else:
        point = find_hookpoint(hook, config, names, base_prefix=base, io=hook_io)
        try:  # only to say so when --hook reads elsewhere than the SAE says
            own_point = find_hookpoint(own, config, names, base_prefix=base) if own is not None else None
        except ConfigError:
            own_point = None
    return CollectTarget(spec, point.module, point.io, point.tl_name, own, own_point, source)
