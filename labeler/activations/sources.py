"""Where an SAE comes from: a local path, a Hugging Face repo (+ subfolder), or an SAELens release.

``resolve_sae(sae, sae_id, revision)`` turns what a user types into local files: for the Hub
through ``huggingface_hub.snapshot_download`` with only the files the SAE formats read from
that one subfolder, into the standard hub cache, so ``HF_HUB_OFFLINE=1`` works once cached.
The result's ``spec()`` is one canonical string (``hf://ORG/REPO@COMMIT/SUBFOLDER``,
``saelens://RELEASE@COMMIT/SAE_ID`` or the local path) that resolves to the same files again,
offline too: it is what a collect configuration stores.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote

from labeler.activations.formats import SAE_FORMATS, detect_format
from labeler.activations.releases import INSTALL_HINT, ReleaseTable
from labeler.core.errors import ConfigError, InputError

_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
ROOT_FILES = ("config.json",)  # a sparsify run's config (transcode lived there for a while)
# SAELens converters whose layouts labeler reads (by the format module named)
CONVERSIONS = {None: "saelens", "gemma_2": "gemmascope", "gemma_2_transcoder": "gemmascope", "gemma_3": "gemmascope2"}


@dataclass(frozen=True)
class SaeSource:
    """Where an SAE's files are, and what their source says about them."""

    kind: str
    """"local" | "hub" | "release\""""
    path: Path
    """the local file or folder holding the SAE"""
    repo_id: str | None = None
    subfolder: str | None = None
    """the SAE's folder inside the repo ("" or None: the repo root)"""
    revision: str | None = None
    """the revision asked for (None: the default branch)"""
    commit: str | None = None
    """the commit the files come from"""
    release: str | None = None
    sae_id: str | None = None
    neuronpedia_id: str | None = None
    model: str | None = None
    """the model the release says the SAE was trained on"""
    conversion: str | None = None
    """the release's SAELens converter (None: SAELens's own layout)"""
    config_overrides: dict = field(default_factory=dict, hash=False)
    """the release's config_overrides, applied over the SAE's cfg.json as SAELens does"""
    norm_scaling_factor: float | None = None
    """the release's expected_average_only_in factor"""
    given: str | None = None
    """the local path as the user gave it (kept in the spec)"""

    def spec(self) -> str:
        """The canonical string that ``resolve_sae`` turns back into these files."""
        if self.kind == "local":
            return self.given or str(self.path)
        rev = f"@{quote(self.commit or self.revision or '', safe='')}" if (self.commit or self.revision) else ""
        if self.kind == "hub":
            return f"hf://{self.repo_id}{rev}" + (f"/{self.subfolder}" if self.subfolder else "")
        return f"saelens://{self.release}{rev}/{self.sae_id}"

    def default_name(self) -> str:
        if self.kind == "release":
            return f"{self.release}/{self.sae_id}"
        if self.kind == "hub":
            repo = self.repo_id.split("/")[-1]
            return f"{repo}/{self.subfolder}" if self.subfolder else repo
        return (self.path.parent.name if self.path.is_file() else self.path.name) or str(self.path)

    def describe(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if v not in (None, {}, "") and k not in ("path", "given")}
        out["path"] = str(self.path)
        out["spec"] = self.spec()
        return out


def resolve_sae(sae: str, sae_id: str | None = None, revision: str | None = None, *,
                cache_dir: str | Path | None = None, releases: ReleaseTable | None = None,
                token: str | bool | None = None) -> SaeSource:
    """Local files for ``--sae`` (+ ``--sae-id``, ``--revision``), downloading what is missing.

    ``sae``: a local file or folder; ``ORG/REPO`` on the Hugging Face Hub; an SAELens release
    name (its table from the installed sae-lens unless ``releases`` is given); or a canonical
    ``hf://`` / ``saelens://`` spec.  A local path that exists wins over the other readings."""
    if sae.startswith("hf://") or sae.startswith("saelens://"):
        kind, name, rev, sub = parse_spec(sae)
        if sae_id and sub and sae_id != sub:
            raise ConfigError(f"--sae {sae!r} already names {sub!r}; drop --sae-id {sae_id!r}")
        sub, revision = sub or sae_id, revision or rev
        if kind == "hub":
            return _from_hub(name, sub, revision, cache_dir, token)
        return _from_release(name, sub, revision, cache_dir, token, releases)
    local = Path(sae).expanduser()
    if local.exists():
        return _from_local(sae, local, sae_id, revision)
    if sae.startswith((".", "/", "~")) or "\\" in sae or sae.count("/") > 1:
        hint = "" if sae.startswith((".", "/", "~")) else " (a Hub repo's subfolder: --sae ORG/REPO --sae-id SUBFOLDER)"
        raise InputError(f"SAE {sae!r}: no such file or folder{hint}")
    if _REPO_ID.match(sae):
        return _from_hub(sae, sae_id, revision, cache_dir, token)
    table = releases if releases is not None else ReleaseTable.installed()
    if table is None:
        raise InputError(f"--sae {sae!r} is not a local path, nor a Hugging Face repo id (ORG/NAME); if it is "
                         f"an SAELens release name, its table comes with sae-lens: {INSTALL_HINT}")
    if table.get(sae) is None:
        near = difflib.get_close_matches(sae, table.names(), n=5, cutoff=0.5)
        hint = f"; close release names: {', '.join(near)}" if near else ""
        raise InputError(f"--sae {sae!r} is not a local path, a Hugging Face repo id (ORG/NAME) or an SAELens "
                         f"release (none of the {len(table.names())} in {table.origin}){hint}")
    return _from_release(sae, sae_id, revision, cache_dir, token, table)


def parse_spec(spec: str) -> tuple[str, str, str | None, str | None]:
    """(kind, repo id or release, revision, subfolder or sae id) of an ``hf://`` / ``saelens://`` spec."""
    kind, rest = ("hub", spec[len("hf://"):]) if spec.startswith("hf://") else ("release", spec[len("saelens://"):])
    head_parts = 2 if kind == "hub" else 1
    parts = rest.split("/")
    if len(parts) < head_parts or not all(parts[:head_parts]):
        raise InputError(f"SAE {spec!r}: expected hf://ORG/REPO[@REVISION][/SUBFOLDER] or "
                         f"saelens://RELEASE[@REVISION]/SAE_ID")
    head, sub = "/".join(parts[:head_parts]), "/".join(parts[head_parts:]) or None
    name, _, rev = head.partition("@")
    return kind, name, unquote(rev) if rev else None, sub


def _from_local(given: str, path: Path, sae_id: str | None, revision: str | None) -> SaeSource:
    if revision:
        raise ConfigError(f"--revision applies to Hugging Face repos and releases, not to the local path {given!r}")
    if sae_id:
        inner = path / sae_id
        if not inner.exists():
            raise InputError(f"SAE {given!r} has no {sae_id!r}{_listing(sae_id, sae_folders(path), 'in it')}")
        return SaeSource("local", inner, subfolder=sae_id, given=str(Path(given) / sae_id))
    return SaeSource("local", path, given=given)


def _from_release(name: str, sae_id: str | None, revision: str | None, cache_dir, token,
                  releases: ReleaseTable | None) -> SaeSource:
    table = releases if releases is not None else ReleaseTable.installed()
    if table is None:
        raise InputError(f"SAELens release {name!r}: the release table comes with sae-lens: {INSTALL_HINT}")
    rel = table.get(name)
    if rel is None:
        raise InputError(f"SAELens release {name!r} is not in {table.origin}")
    if not sae_id or sae_id not in rel.saes:
        what = f"has no SAE {sae_id!r}" if sae_id else "holds several SAEs: choose one with --sae-id"
        raise InputError(f"SAELens release {name!r} {what}{_listing(sae_id or '', list(rel.saes), 'in it')}")
    if rel.conversion_func not in CONVERSIONS:
        raise InputError(f"SAELens release {name!r} is stored in a layout labeler does not read (SAELens "
                         f"converter {rel.conversion_func!r}; read: SAELens's own, "
                         f"{', '.join(c for c in CONVERSIONS if c)})")
    entry = rel.saes[sae_id]
    hub = _from_hub(rel.repo_id, entry.path, revision, cache_dir, token, what=f"SAELens release {name!r}")
    return SaeSource("release", hub.path, repo_id=rel.repo_id, subfolder=entry.path, revision=revision,
                     commit=hub.commit, release=name, sae_id=sae_id, neuronpedia_id=entry.neuronpedia_id,
                     model=rel.model, conversion=rel.conversion_func, config_overrides=dict(rel.config_overrides),
                     norm_scaling_factor=entry.norm_scaling_factor)


def _from_hub(repo_id: str, sub: str | None, revision: str | None, cache_dir, token, what: str = "") -> SaeSource:
    sub = (sub or "").strip("/") or None
    label = what or f"SAE repo {repo_id!r}"
    root = _download(repo_id, sub, revision, cache_dir, token, label)
    commit = root.name
    if sub is None:
        if detect_format(root) is not None:
            return SaeSource("hub", root, repo_id=repo_id, revision=revision, commit=commit)
        folders, there = _repo_sae_folders(repo_id, commit, root, token)
        if not folders:
            raise InputError(f"{label} holds no SAE {there} in a layout labeler reads "
                             f"({'; '.join(f.description for f in SAE_FORMATS.values())})")
        raise InputError(f"{label} holds several SAEs: choose one with --sae-id{_listing('', folders, there)}")
    path = root / sub
    if not path.exists():
        folders, there = _repo_sae_folders(repo_id, commit, root, token)
        raise InputError(f"{label} has no folder {sub!r} at revision {revision or 'main'}"
                         f"{_listing(sub, folders, there)}")
    return SaeSource("hub", path, repo_id=repo_id, subfolder=sub, revision=revision, commit=commit)


def _download(repo_id: str, sub: str | None, revision: str | None, cache_dir, token, label: str) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, HFValidationError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    names = sorted({f for fmt in SAE_FORMATS.values() for f in fmt.files})
    patterns = [f"{sub}/{n}" for n in names] + ([sub] if sub else names) + list(ROOT_FILES)
    rev = revision or "main"
    where = cache_dir or constants.HF_HUB_CACHE
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns, cache_dir=cache_dir,
                                      token=token))
    except GatedRepoError:
        raise InputError(f"{label} is gated: accept its terms on huggingface.co, then log in "
                         f"(`hf auth login`) or set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise InputError(f"{label}: no such repo on the Hugging Face Hub (if it is private, log in with "
                         f"`hf auth login` or set HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise InputError(f"{label} has no revision {rev!r} (a branch, tag or commit hash)") from None
    except HFValidationError as e:
        raise InputError(f"{label}: not a valid repo id or revision ({e})") from None
    except LocalEntryNotFoundError as e:  # also IncompleteSnapshotError (a subclass in hub >= 1.0)
        if constants.HF_HUB_OFFLINE:
            raise InputError(
                f"{label} (revision {rev}) is not in the Hugging Face cache at {where}, and downloads are off "
                f"(HF_HUB_OFFLINE=1): run once with network access (unset HF_HUB_OFFLINE), or fetch it with "
                f"`hf download {repo_id}" + (f" --include '{sub}/*'" if sub else "") + "`") from None
        raise InputError(f"{label} (revision {rev}): cannot reach the Hugging Face Hub and it is not cached "
                         f"at {where} ({e}); check the network (or HF_ENDPOINT)") from None
    except HfHubHTTPError as e:
        raise InputError(f"{label}: the Hugging Face Hub refused the download ({e})") from None


def sae_folders(root: Path) -> list[str]:
    """Folders under ``root`` (itself excluded) that hold an SAE in a readable layout."""
    names = {f for fmt in SAE_FORMATS.values() for f in fmt.files}
    found = {str(p.parent.relative_to(root)) for p in root.rglob("*") if p.name in names and p.parent != root}
    return sorted(f for f in found if detect_format(root / f) is not None)


def _repo_sae_folders(repo_id: str, commit: str, root: Path, token) -> tuple[list[str], str]:
    """(the SAE folders of the repo, where they were seen): listed by the Hub when online,
    else those in the local cache."""
    from huggingface_hub import HfApi, constants

    if not constants.HF_HUB_OFFLINE:
        try:
            files = HfApi().list_repo_files(repo_id, revision=commit, token=token)
        except Exception:  # the listing is only a hint in an error message: fall back to the cache
            files = None
        if files is not None:
            names = {f for fmt in SAE_FORMATS.values() for f in fmt.files}
            return sorted({f.rsplit("/", 1)[0] for f in files if "/" in f and f.rsplit("/", 1)[1] in names}), "in the repo"
    return sae_folders(root), "in the local cache (offline)"


def _listing(asked: str, names: list[str], there: str = "there", limit: int = 30) -> str:
    if not names:
        return f" (none {there})"
    near = difflib.get_close_matches(asked, names, n=8, cutoff=0.5) if asked else []
    shown = near + [n for n in names if n not in near]
    more = f", ... ({len(names)} in all)" if len(shown) > limit else ""
    return f"; SAEs {there}: {', '.join(shown[:limit])}{more}"
