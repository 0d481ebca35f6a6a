"""Where text comes from: local files or folders, a Hugging Face dataset, or ``builtin``.

Every source yields plain strings (documents) in a deterministic order.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from labeler.core.errors import ConfigError, InputError

_FILE_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet")


@dataclass(frozen=True)
class CorpusSpec:
    """What to read. ``source`` is ``builtin``, a path (file or folder) or a dataset name."""

    source: str
    text_field: str = "text"
    dataset_split: str = "train"
    dataset_config: str | None = None

    def describe(self) -> dict:
        return asdict(self)


def iter_texts(spec: CorpusSpec) -> Iterator[str]:
    """Documents of the corpus, in a fixed order (the same on every run)."""
    if spec.source == "builtin":
        from labeler.corpus.builtin import iter_builtin_texts

        yield from iter_builtin_texts()
        return
    path = Path(spec.source).expanduser()
    if path.exists():
        files = _list_files(path)
        if not files:
            raise InputError(f"corpus {spec.source!r}: no {', '.join(_FILE_SUFFIXES)} files found")
        for f in files:
            yield from _iter_file(f, spec.text_field)
        return
    if _looks_like_path(spec.source):
        raise InputError(f"corpus {spec.source!r}: no such file or folder")
    yield from _iter_hf_dataset(spec)


def public_corpus_name(source: str) -> str:
    """What a published file may say about a corpus: ``builtin`` or a dataset name as given, a
    local file or folder by its last part only (the server's paths stay on the server)."""
    if source == "builtin":
        return source
    if _looks_like_path(source) or Path(source).expanduser().exists():
        return Path(source.rstrip("/")).name or "corpus"
    return source


def _looks_like_path(s: str) -> bool:
    return s.startswith((".", "/", "~")) or s.endswith(_FILE_SUFFIXES) or s.count("/") > 1


def _list_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _FILE_SUFFIXES)


def _decode(data: bytes, path: Path, offset: int, lineno: int | None = None) -> str:
    """UTF-8 text, or an InputError naming the file, the line and the byte offset: a corpus in
    another encoding (or not text at all) must not be collected as mojibake."""
    where = f"line {lineno}, " if lineno is not None else ""
    try:
        text, bad = data.decode("utf-8"), None
    except UnicodeDecodeError as e:
        text, bad = None, e
    nul = data.find(b"\x00", 0, bad.start if bad else len(data))
    if nul >= 0:  # valid UTF-8, but binary (or UTF-16) all the same
        raise InputError(f"corpus file {path}: {where}byte offset {offset + nul} is a NUL byte: this is not a "
                         f"text file (UTF-8 text expected)")
    if bad is not None:
        raise InputError(f"corpus file {path}: {where}byte offset {offset + bad.start} is not valid UTF-8 "
                         f"({bad.reason}); convert the file to UTF-8 (e.g. iconv -t UTF-8) or remove it")
    return text


def _iter_file(path: Path, text_field: str) -> Iterator[str]:
    try:
        if path.suffix == ".txt":
            yield _decode(path.read_bytes(), path, 0)
        elif path.suffix in (".jsonl", ".json"):
            with path.open("rb") as fh:
                offset = 0
                for lineno, raw in enumerate(fh, 1):
                    line = _decode(raw, path, offset, lineno)
                    offset += len(raw)
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise InputError(f"corpus file {path}: line {lineno} is not valid JSON ({e.msg})") from None
                    if isinstance(row, str):
                        yield row
                    elif isinstance(row, dict) and text_field in row:
                        yield str(row[text_field])
                    else:
                        raise InputError(
                            f"corpus file {path}: line {lineno} has no field {text_field!r} "
                            f"(choose the field with --text-field)"
                        )
        elif path.suffix == ".parquet":
            import pyarrow.parquet as pq

            try:
                pf = pq.ParquetFile(path)
            except Exception as e:
                raise InputError(f"corpus file {path}: not a readable parquet file ({e})") from None
            if text_field not in pf.schema_arrow.names:
                raise InputError(
                    f"corpus file {path}: no column {text_field!r} (columns: {pf.schema_arrow.names}); "
                    f"choose one with --text-field"
                )
            for batch in pf.iter_batches(columns=[text_field], batch_size=1024):
                for v in batch.column(0).to_pylist():
                    if v:
                        yield str(v)
    except OSError as e:
        raise InputError(f"corpus file {path}: cannot read ({e})") from None


def _iter_hf_dataset(spec: CorpusSpec) -> Iterator[str]:
    try:
        import datasets  # type: ignore[import-not-found]
    except ImportError:
        raise ConfigError(
            f"corpus {spec.source!r} is neither a local file/folder nor 'builtin'; reading it as a "
            f"Hugging Face dataset needs the 'datasets' package: pip install 'labeler[datasets]'"
        ) from None
    try:
        ds = datasets.load_dataset(spec.source, spec.dataset_config, split=spec.dataset_split, streaming=True)
    except Exception as e:
        raise InputError(f"corpus {spec.source!r}: cannot open Hugging Face dataset ({e})") from None
    for row in ds:
        if spec.text_field not in row:
            raise InputError(f"dataset {spec.source!r} has no field {spec.text_field!r} (fields: {list(row)})")
        yield str(row[spec.text_field])
