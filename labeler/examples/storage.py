"""Where a store lives: a local folder, or any fsspec URL (``s3://bucket/stores/x``) that workers on
other machines share.

Writers work on local files and ``put`` each finished file; readers ``fetch`` a file into a
local cache the first time it is needed.  For a local folder both are no-ops, so a local store is
written and read in place.  Every file is written whole (a temporary name then a rename
locally; one object upload remotely), so a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from labeler.core.errors import ConfigError, InputError


def is_url(location: str | Path) -> bool:
    return "://" in str(location)


class Location:
    """One store's folder. ``local`` is where files are read and written on this machine."""

    def __init__(self, location: str | Path, *, cache_dir: str | Path | None = None):
        self.url = str(location)
        self.remote = is_url(location)
        if self.remote:
            import fsspec

            try:
                self.fs, self.root = fsspec.core.url_to_fs(self.url, **_storage_options(self.url))
            except (ImportError, ValueError) as e:
                raise ConfigError(f"store {self.url!r}: cannot open this URL ({e}); for s3:// install "
                                  "'labeler[s3]' (fsspec + s3fs)") from None
            self.root = self.root.rstrip("/")
            base = Path(cache_dir or os.environ.get("LABELER_STORE_CACHE") or Path(tempfile.gettempdir()) /
                        "labeler-store-cache")
            self.local = base / hashlib.sha256(self.url.encode()).hexdigest()[:16]
            self.local.mkdir(parents=True, exist_ok=True)
        else:
            self.fs = None
            self.root = str(Path(location).expanduser())
            self.local = Path(self.root)

    def __str__(self) -> str:
        return self.url if self.remote else str(self.local)

    def path(self, name: str) -> Path:
        """The local path of ``name`` (it may not exist yet)."""
        return self.local / name

    def _remote(self, name: str) -> str:
        return f"{self.root}/{name}"

    # -- writing ---------------------------------------------------------------------------------
    def put(self, name: str) -> None:
        """Publish the local file ``name`` (a no-op for local stores)."""
        if self.remote:
            self.fs.put_file(str(self.path(name)), self._remote(name))

    def write_json(self, name: str, data) -> None:
        p = self.path(name)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, p)
        self.put(name)

    def remove(self, name: str) -> None:
        """Remove a file or folder here and remotely."""
        p = self.path(name)
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
        if self.remote and self.fs.exists(self._remote(name)):
            self.fs.rm(self._remote(name), recursive=True)

    # -- reading ---------------------------------------------------------------------------------
    def exists(self, name: str) -> bool:
        if self.remote:
            self.fs.invalidate_cache()  # other machines write here: never trust a cached listing
            return bool(self.fs.exists(self._remote(name)))
        return self.path(name).exists()

    def fetch(self, name: str, *, refresh: bool = False) -> Path:
        """The local path of ``name``, downloaded first for remote stores.  ``refresh`` downloads
        again (for files that change: manifests, checkpoint pointers)."""
        p = self.path(name)
        if self.remote and (refresh or not p.exists()):
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(p.name + ".part")
            try:
                self.fs.get_file(self._remote(name), str(tmp))
            except FileNotFoundError:
                raise InputError(f"store {self.url}: {name} is missing") from None
            os.replace(tmp, p)
        return p

    def read_json(self, name: str, *, refresh: bool = True):
        """The JSON file ``name``, or None when it does not exist (InputError when unreadable)."""
        if not self.exists(name):
            return None
        p = self.fetch(name, refresh=refresh)
        try:
            return json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"store {self}: {name} is corrupt ({e})") from None

    def listdir(self, name: str) -> list[str]:
        """Names inside the folder ``name`` (empty when it does not exist)."""
        if self.remote:
            full = self._remote(name)
            self.fs.invalidate_cache()
            if not self.fs.exists(full):
                return []
            return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(full, detail=False))
        p = self.path(name)
        return sorted(x.name for x in p.iterdir()) if p.is_dir() else []

    def is_empty_or_missing(self) -> bool:
        if self.remote:
            return not self.fs.exists(self.root) or not self.fs.ls(self.root, detail=False)
        return not self.local.exists() or not any(self.local.iterdir())


def _storage_options(url: str) -> dict:
    """fsspec options from the environment: ``LABELER_S3_ENDPOINT_URL`` points s3:// at any
    S3-compatible server (MinIO, moto, Ceph); credentials come from the usual AWS variables."""
    if url.startswith(("s3://", "s3a://")):
        endpoint = os.environ.get("LABELER_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL")
        return {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}
    return {}
