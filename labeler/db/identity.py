"""An SAE row's identity: which store (by content) it holds, never its name.

Collect writes ``store_identity`` into a store's manifest (``labeler.examples.identity``).
Stores written before that have none: ``identity_of`` derives one from their settings hash
and their path, and says so (``derived``); such a store moved to another folder registers as
another SAE.  Rows made without any store (``Catalog.ensure_sae`` by names) get
``name_identity``: for them the names are all there is.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass


@dataclass(frozen=True)
class StoreIdentity:
    value: str
    derived: bool
    """True: the store predates identities; ``value`` comes from its settings hash and path."""


def identity_of(manifest: dict, path: str) -> StoreIdentity:
    """A store's identity: the one collect wrote, or (older stores) one derived from the
    settings hash and the store's path."""
    written = manifest.get("store_identity")
    if written:
        return StoreIdentity(str(written), derived=False)
    return StoreIdentity(derived_identity(manifest.get("config_hash"), path), derived=True)


def derived_identity(config_hash: str | None, path: str | None) -> str:
    key = json.dumps(["derived", config_hash, str(path) if path is not None else None])
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def name_identity(model_name: str, sae_name: str) -> str:
    """The identity of an SAE known only by its names (rows made without a store)."""
    return hashlib.sha256(json.dumps(["named", model_name, sae_name]).encode()).hexdigest()[:32]
