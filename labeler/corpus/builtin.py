"""An offline corpus every Python install carries: the standard library's docstrings and comments.

Files are walked in sorted order and parsed with ``ast`` (docstrings) and ``tokenize``
(comments), so the text is the same on every run of the same Python version.
"""

from __future__ import annotations

import ast
import io
import json
import os
import sys
import sysconfig
import tokenize
from collections.abc import Iterator
from pathlib import Path

_SKIP_DIRS = {"test", "tests", "idlelib", "site-packages", "lib2to3", "__pycache__", "turtledemo"}


def stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]  # prune: never walk site-packages
        out.extend(Path(dirpath) / f for f in filenames if f.endswith(".py"))
    return sorted(out, key=lambda p: p.relative_to(root).parts)


def texts_of_source(source: str) -> list[str]:
    """Docstrings, then runs of consecutive comment lines joined into paragraphs."""
    texts: list[str] = []
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return texts
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc and len(doc) > 20:
                texts.append(doc)
    para: list[str] = []
    last_line = -2
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type != tokenize.COMMENT:
                continue
            line = tok.string.lstrip("#").strip()
            if tok.start[0] != last_line + 1 and para:
                texts.append(" ".join(para))
                para = []
            if line and not line.startswith(("!", "-*-", "noqa", "type:", "pragma")):
                para.append(line)
            last_line = tok.start[0]
    except (tokenize.TokenError, SyntaxError, IndentationError):
        pass
    if para:
        texts.append(" ".join(para))
    return [t for t in texts if len(t) > 20]


def generate_builtin_texts() -> Iterator[str]:
    """Extract the texts from the standard library sources (about 9 s for the whole pass)."""
    for path in stdlib_files():
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        yield from texts_of_source(source)


def cache_path() -> Path:
    from labeler.core.config import get_settings

    v = sys.version_info
    return get_settings().data_dir / "corpus" / f"builtin-py{v.major}.{v.minor}.{v.micro}.jsonl"


def iter_builtin_texts(*, use_cache: bool = True) -> Iterator[str]:
    """The builtin corpus. Extracted once per Python version into a JSON-lines cache under the
    data dir (written atomically), so later runs stream it without re-parsing the sources."""
    if not use_cache:
        yield from generate_builtin_texts()
        return
    path = cache_path()
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            with tmp.open("w", encoding="utf-8") as fh:
                for text in generate_builtin_texts():
                    fh.write(json.dumps(text) + "\n")
            os.replace(tmp, path)
        except OSError:  # read-only data dir: extract on the fly instead
            yield from generate_builtin_texts()
            return
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)
