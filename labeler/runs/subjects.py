"""The subject models of stores, loaded on demand and kept one model per process.

A subject model can take gigabytes, so a process keeps one: asking for a store whose model is
another one releases the current model first.  The SAEs of stores on the same model are kept
beside it.  The API keeps one cache in ``app.state`` and hands it to its runner; a worker's
runner makes its own.  This module imports no torch, so making the cache costs nothing until
a model is needed.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from labeler.core.config import Settings
from labeler.core.errors import InputError

MAX_SAES = 8
"""SAEs kept beside the one model (each holds its encoder and decoder matrices)."""


class SubjectCache:
    """``get(store) -> Subject`` for a ``FeatureStore``; thread-safe, one model at a time."""

    def __init__(self, settings: Settings, *, dtype: str | None = None):
        self.settings = settings  # its device (LABELER_DEVICE) is resolved when a model loads
        self.dtype = dtype  # None: the dtype the store was collected with
        self._lock = threading.Lock()
        self._model_key: tuple[str, str] | None = None
        self._model: tuple[Any, Any, threading.Lock] | None = None  # model, tokenizer, forward lock
        self._subjects: dict[str, Any] = {}

    def get(self, store: Any) -> Any:
        """The store's Subject: its model (loaded if it is not the current one), hookpoint and SAE.
        InputError when the model or the SAE cannot be loaded here."""
        from labeler.activations.model import load_model
        from labeler.activations.steering import Subject

        manifest = store.manifest
        model_info = manifest.get("model") or {}
        source = str(model_info.get("path_or_id") or "")
        if not source:
            raise InputError(f"store {store.path}: its manifest does not say which model made it")
        key = (source, self.dtype or str(model_info.get("dtype") or "float32"))
        store_key = str(Path(store.path).resolve())
        with self._lock:
            if self._model_key != key:
                self._model = self._model_key = None
                self._subjects.clear()  # the old model goes before the new one loads
                try:
                    model, tokenizer = load_model(source, device=self.settings.resolved_device(), dtype=key[1])
                except InputError as e:
                    raise InputError(f"the store's model cannot be loaded here: {e}") from None
                self._model, self._model_key = (model, tokenizer, threading.Lock()), key
            subject = self._subjects.get(store_key)
            if subject is None:
                model, tokenizer, forward_lock = self._model  # type: ignore[misc]
                try:
                    subject = Subject.from_manifest(manifest, model, tokenizer, lock=forward_lock)
                except InputError as e:
                    raise InputError(f"the store's SAE cannot be loaded here: {e}") from None
                if len(self._subjects) >= MAX_SAES:
                    self._subjects.pop(next(iter(self._subjects)))
                self._subjects[store_key] = subject
            return subject

    @property
    def loaded_model(self) -> str | None:
        """The model held now (None: none)."""
        return self._model_key[0] if self._model_key else None
