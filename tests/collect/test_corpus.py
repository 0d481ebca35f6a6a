"""Corpus sources and window packing."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from labeler.core.errors import ConfigError, InputError
from labeler.corpus import CorpusSpec, frame_for, iter_texts, iter_windows
from labeler.corpus.builtin import generate_builtin_texts


def test_builtin_is_deterministic_and_cached(isolated_settings):
    first = list(itertools.islice(generate_builtin_texts(), 40))
    assert len(first) == 40 and all(len(t) > 20 for t in first)
    assert first == list(itertools.islice(generate_builtin_texts(), 40))
    cached = list(itertools.islice(iter_texts(CorpusSpec("builtin")), 40))  # builds the cache
    assert cached == first
    assert list((isolated_settings / "corpus").glob("builtin-py*.jsonl"))
    assert list(itertools.islice(iter_texts(CorpusSpec("builtin")), 40)) == first


def test_local_files_and_folders(tmp_path):
    (tmp_path / "a.txt").write_text("plain text file")
    (tmp_path / "b.jsonl").write_text(json.dumps({"body": "from jsonl"}) + "\n\n" + json.dumps({"body": "two"}) + "\n")
    pq.write_table(pa.table({"body": ["from parquet", None]}), tmp_path / "c.parquet")
    (tmp_path / "ignored.bin").write_bytes(b"\x00")
    texts = list(iter_texts(CorpusSpec(str(tmp_path), text_field="body")))
    assert texts == ["plain text file", "from jsonl", "two", "from parquet"]
    with pytest.raises(InputError, match="no column 'text'"):
        list(iter_texts(CorpusSpec(str(tmp_path / "c.parquet"))))
    (tmp_path / "bad.jsonl").write_text("{oops\n")
    with pytest.raises(InputError, match="line 1"):
        list(iter_texts(CorpusSpec(str(tmp_path / "bad.jsonl"))))


def test_dataset_name_without_datasets_package_is_a_clear_error():
    try:
        import datasets  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="datasets"):
            list(iter_texts(CorpusSpec("someuser/some-dataset")))
    else:
        pytest.skip("the datasets package is installed")


def test_windows_are_full_and_free_of_special_tokens(inputs):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(inputs / "bert")
    texts = ["[CLS] hello [SEP] world " * 20, "", "   ", "short", "another document with words " * 10]
    wins = list(iter_windows(texts, tok, 8))
    assert wins and all(w.shape == (8,) and w.dtype == np.int32 for w in wins)
    assert not np.isin(np.concatenate(wins), tok.all_special_ids).any()
    frame = frame_for(tok)
    assert frame.prefix == (tok.cls_token_id,) and frame.suffix == (tok.sep_token_id,)
    wrapped = frame.wrap(np.stack(wins))
    assert wrapped.shape == (len(wins), 10) and (wrapped[:, frame.content_slice] == np.stack(wins)).all()
