"""SAELens's release table (``pretrained_saes.yaml``), read without importing ``sae_lens``.

Importing sae_lens pulls in torch, TransformerLens and much more; only its YAML file is needed
here, so it is located with ``importlib.util.find_spec`` (which does not run the package) and
parsed once per file.  ``pip install 'labeler[saelens]'`` brings it (``pip install --no-deps
sae-lens`` is enough for the table alone).
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

from labeler.core.errors import InputError

INSTALL_HINT = ("pip install 'labeler[saelens]' (or `pip install --no-deps sae-lens`: only its release "
                "table is read)")


@dataclass(frozen=True)
class ReleaseSae:
    """One SAE of a release, as the table lists it."""

    id: str
    """what users pass as the sae id"""
    path: str
    """the folder (or file) inside the release's repo"""
    neuronpedia_id: str | None = None
    norm_scaling_factor: float | None = None


@dataclass(frozen=True)
class Release:
    """One release: a Hugging Face repo, the model it was trained on, how to read its files."""

    name: str
    repo_id: str
    model: str | None
    conversion_func: str | None
    """None: SAELens's own layout; else the name of SAELens's converter for another layout"""
    config_overrides: dict = field(default_factory=dict, hash=False)
    saes: dict[str, ReleaseSae] = field(default_factory=dict, hash=False)


class ReleaseTable:
    """The releases of one ``pretrained_saes.yaml`` (``origin`` says which, for messages)."""

    def __init__(self, releases: dict[str, Release], origin: str):
        self.releases, self.origin = releases, origin

    @classmethod
    def from_yaml(cls, path: str | Path) -> "ReleaseTable":
        path = Path(path)
        return cls(_parse(str(path), path.stat().st_mtime_ns), str(path))

    @classmethod
    def installed(cls) -> "ReleaseTable | None":
        """The table of the installed sae-lens package, or None if it is not installed."""
        try:
            spec = importlib.util.find_spec("sae_lens")
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(list(spec.submodule_search_locations)[0]) / "pretrained_saes.yaml"
        if not path.exists():
            raise InputError(f"sae-lens is installed but has no release table at {path}; reinstall it: {INSTALL_HINT}")
        return cls.from_yaml(path)

    def get(self, name: str) -> Release | None:
        return self.releases.get(name)

    def names(self) -> list[str]:
        return sorted(self.releases)


@functools.lru_cache(maxsize=4)
def _parse(path: str, mtime_ns: int) -> dict[str, Release]:
    """Parsed once per file version (1.5 MB of YAML: ~0.35 s with the C loader)."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=loader)
    except (OSError, yaml.YAMLError) as e:
        raise InputError(f"SAELens release table {path} is unreadable ({e})") from None
    if isinstance(data, dict) and set(data) == {"SAE_LOOKUP"}:  # sae-lens < 3.18 wrapped it
        data = data["SAE_LOOKUP"]
    if not isinstance(data, dict):
        raise InputError(f"SAELens release table {path} is not a mapping of releases")
    out = {}
    for name, rel in data.items():
        if not isinstance(rel, dict) or "repo_id" not in rel:
            continue
        saes = {}
        for s in rel.get("saes") or []:
            if not isinstance(s, dict) or "id" not in s or "path" not in s:
                continue
            factor = s.get("norm_scaling_factor")
            # str(): a few paths are YAML ints; other keys (l0, variance_explained, a stray
            # release-level key or two) say nothing about reading the files
            saes[str(s["id"])] = ReleaseSae(str(s["id"]), str(s["path"]), s.get("neuronpedia"),
                                            float(factor) if factor is not None else None)
        out[str(name)] = Release(str(name), str(rel["repo_id"]), rel.get("model"), rel.get("conversion_func"),
                                 dict(rel.get("config_overrides") or {}), saes)
    return out
