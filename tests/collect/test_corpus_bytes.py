"""A corpus file that is not UTF-8 text is refused with its name and byte offset, and the store
it was being collected into says the collect failed (it is not left "running")."""

from __future__ import annotations

import json
import os

import pytest

from labeler.core.errors import InputError
from labeler.corpus import CorpusSpec, iter_texts
from tests.collect.conftest import HOOKS, run_cli


def test_non_utf8_jsonl_names_the_line_and_byte_offset(tmp_path):
    f = tmp_path / "latin1.jsonl"
    first = json.dumps({"text": "fine"}).encode() + b"\n"
    f.write_bytes(first + b'{"text": "caf\xe9"}\n')
    with pytest.raises(InputError) as e:
        list(iter_texts(CorpusSpec(str(f))))
    msg = str(e.value)
    assert str(f) in msg and "line 2" in msg and f"byte offset {len(first) + 13}" in msg and "UTF-8" in msg


def test_random_bytes_are_not_collected_as_text(tmp_path):
    f = tmp_path / "noise.txt"
    f.write_bytes(os.urandom(4096))
    with pytest.raises(InputError, match=r"noise\.txt: byte offset \d+ is (not valid UTF-8|a NUL byte)"):
        list(iter_texts(CorpusSpec(str(f))))
    utf16 = tmp_path / "utf16.txt"  # valid UTF-8 bytes, but NULs everywhere: not UTF-8 text
    utf16.write_bytes("plain words".encode("utf-16-le"))
    with pytest.raises(InputError, match="byte offset 1 is a NUL byte"):
        list(iter_texts(CorpusSpec(str(utf16))))
    good = tmp_path / "good.txt"
    good.write_text("héllo wörld", encoding="utf-8")
    assert list(iter_texts(CorpusSpec(str(good)))) == ["héllo wörld"]


def test_collect_on_a_bad_corpus_fails_clearly_and_marks_the_store(inputs, corpus, tmp_path, capsys):
    bad = tmp_path / "mixed.jsonl"
    bad.write_bytes(corpus.read_bytes() + b'{"text": "\xff\xfe broken"}\n')
    out = tmp_path / "store"
    code, text = run_cli(["collect", "--model", str(inputs / "gpt2"), "--hook", HOOKS["gpt2"], "--tokens", "1000000",
                          "--ctx-len", "16", "--no-progress", "--corpus", str(bad), "--out", str(out)], capsys)
    flat = " ".join(text.split()).replace(" ", "")
    assert code == 2 and "mixed.jsonl" in flat and "byteoffset" in flat and "Traceback" not in text, text
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "not valid UTF-8" in manifest["error"]
    code, text = run_cli(["inspect", str(out), "--feature", "0"], capsys)
    assert code == 2 and "failed" in text and "UTF-8" in " ".join(text.split())


def test_a_collect_part_on_a_bad_corpus_marks_the_store_too(inputs, corpus, tmp_path, capsys):
    bad = tmp_path / "mixed.jsonl"
    bad.write_bytes(corpus.read_bytes() + b'{"text": "\xff broken"}\n')
    out = tmp_path / "store"
    code, text = run_cli(["collect", "--model", str(inputs / "gpt2"), "--hook", HOOKS["gpt2"], "--tokens", "1000000",
                          "--ctx-len", "16", "--no-progress", "--corpus", str(bad), "--out", str(out),
                          "--features", "0:4"], capsys)
    assert code == 2 and "byte offset" in " ".join(text.split()), text
    assert json.loads((out / "manifest.json").read_text())["status"] == "failed"
