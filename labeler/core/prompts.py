"""Prompt templates are data: ``prompts/<name>/v<N>.yaml`` files, never strings in code.

A template file holds ``name``, ``version``, a ``description`` and Jinja2 templates for the
chat messages (``system``, ``user``; optional ``few_shot`` list of user/assistant pairs).
``load_prompt(name)`` picks the highest version unless one is pinned.  Every explanation and
score records the prompt's name, version and ``hash`` (sha256 of the template source), so
labels from different prompt versions never mix silently.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import yaml

from labeler.core.config import get_settings
from labeler.core.errors import ConfigError

_VERSION_RE = re.compile(r"^v(\d+)\.ya?ml$")
_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False,
                          trim_blocks=True, lstrip_blocks=True)


@lru_cache(maxsize=1024)
def _compiled(source: str) -> jinja2.Template:
    """Compiling a Jinja template costs milliseconds; each template text is compiled once."""
    return _ENV.from_string(source)


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    version: str
    source: str  # raw file text
    system: str | None
    user: str
    few_shot: tuple[tuple[str, str], ...] = ()
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.source.encode("utf-8")).hexdigest()[:16]

    def render(self, **variables: Any) -> list[dict[str, str]]:
        """Chat messages for these variables (StrictUndefined: a missing variable is an error)."""
        messages: list[dict[str, str]] = []
        if self.system:
            messages.append({"role": "system", "content": _compiled(self.system).render(**variables).strip()})
        for user, assistant in self.few_shot:
            messages.append({"role": "user", "content": _compiled(user).render(**variables).strip()})
            messages.append({"role": "assistant", "content": _compiled(assistant).render(**variables).strip()})
        messages.append({"role": "user", "content": _compiled(self.user).render(**variables).strip()})
        return messages


def prompts_dir() -> Path:
    return get_settings().resolved_prompts_dir


def available_prompts() -> dict[str, list[str]]:
    root = prompts_dir()
    out: dict[str, list[str]] = {}
    if root.is_dir():
        for d in sorted(p for p in root.iterdir() if p.is_dir()):
            versions = sorted((int(m.group(1)) for f in d.iterdir() if (m := _VERSION_RE.match(f.name))))
            if versions:
                out[d.name] = [f"v{v}" for v in versions]
    return out


@lru_cache(maxsize=256)
def _load(root: str, name: str, version: str | None) -> PromptTemplate:
    d = Path(root) / name
    if not d.is_dir():
        raise ConfigError(f"unknown prompt {name!r}: no folder {d} (have: {', '.join(available_prompts()) or 'none'})")
    found = {int(m.group(1)): f for f in d.iterdir() if (m := _VERSION_RE.match(f.name))}
    if not found:
        raise ConfigError(f"prompt folder {d} has no v<N>.yaml files")
    if version is None:
        path = found[max(found)]
    else:
        v = int(str(version).lstrip("v"))
        if v not in found:
            raise ConfigError(f"prompt {name!r} has no version {version} (have: {sorted(found)})")
        path = found[v]
    source = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(source)
    except yaml.YAMLError as e:
        raise ConfigError(f"prompt file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict) or "user" not in data:
        raise ConfigError(f"prompt file {path} needs at least a 'user' template")
    file_version = f"v{_VERSION_RE.match(path.name).group(1)}"  # type: ignore[union-attr]
    few = tuple((fs["user"], fs["assistant"]) for fs in data.get("few_shot", []) or [])
    return PromptTemplate(
        name=name, version=file_version, source=source, system=data.get("system"),
        user=data["user"], few_shot=few,
        meta={k: v for k, v in data.items() if k not in ("system", "user", "few_shot")},
    )


def load_prompt(name: str, version: str | None = None) -> PromptTemplate:
    return _load(str(prompts_dir()), name, version)
