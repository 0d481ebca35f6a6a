"""A Hugging Face hub cache laid out on disk by hand, as huggingface_hub reads it offline:
``models--ORG--NAME/refs/<branch>`` (the bare 40-hex commit, no newline) and
``snapshots/<commit>/<repo paths>`` (plain files; no blobs or symlinks are needed)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path


def repo_dir(cache: Path, repo_id: str) -> Path:
    return Path(cache) / f"models--{repo_id.replace('/', '--')}"


def commit_of(repo_id: str, revision: str = "main") -> str:
    return hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()


def put(cache: Path, repo_id: str, files: dict[str, str | bytes | Path], *, revision: str = "main") -> Path:
    """Add ``files`` (repo path -> text, bytes, or a local file or folder to copy) to the cached
    snapshot of ``revision``; returns the snapshot folder."""
    commit = commit_of(repo_id, revision)
    root = repo_dir(cache, repo_id)
    snap = root / "snapshots" / commit
    for rel, content in files.items():
        dest = snap / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            if content.is_dir():
                shutil.copytree(content, dest, dirs_exist_ok=True)
            else:
                shutil.copyfile(content, dest)
        elif isinstance(content, bytes):
            dest.write_bytes(content)
        else:
            dest.write_text(content)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / revision).write_text(commit)  # huggingface_hub reads it unstripped
    return snap
