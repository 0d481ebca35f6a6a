"""The simulator's answers: every failure issue #17 lists used to reject the whole call; each
must now parse, or lose only its own text.  Plus expected values at sparse positions and the
context-window cap on max_tokens."""

from __future__ import annotations

import math

import pytest

from labeler.explanation.formatting import display
from labeler.llm.types import TokenLogprob
from labeler.scoring.base import MalformedAnswer, ScoringFailed
from labeler.scoring.limits import cap_max_tokens, context_window
from labeler.scoring.sim_answers import (
    EVStats, Tolerated, Value, expected_values, parse_json, parse_lines, parse_sparse,
)

SEQ = [" The", " old", " bridge", " ", "fell", "down"]
SEQS = [SEQ, [" a", " b"]]


def lines(text, seqs=SEQS, mismatch=0.1):
    tol = Tolerated()
    parsed, lost = parse_lines(text, seqs, mismatch, tol, display)
    return parsed, lost, tol.counts


def _answer(rows: dict[str, list[tuple[str, int]]]) -> str:
    return "".join(f"{h}\n" + "".join(f"{t}\t{v}\n" for t, v in body) for h, body in rows.items())


GOOD = {"Text 1:": [(" The", 0), (" old", 0), (" bridge", 9), (" ", 0), ("fell", 2), ("down", 0)],
        "Text 2:": [(" a", 0), (" b", 3)]}


def _values(parsed, k):
    return {v.pos: v.value for v in parsed[k]}


def test_lines_exact_answer():
    parsed, lost, tol = lines(_answer(GOOD))
    assert not lost and _values(parsed, 0) == {0: 0, 1: 0, 2: 9, 3: 0, 4: 2, 5: 0} and _values(parsed, 1)[1] == 3


def test_lines_skipped_whitespace_token():  # used to fail: "sequence 1 has 6 tokens but the answer gives 5"
    rows = dict(GOOD)
    rows["Text 1:"] = [r for r in GOOD["Text 1:"] if r[0] != " "]
    parsed, lost, tol = lines(_answer(rows))
    assert not lost and _values(parsed, 0)[4] == 2 and 3 not in _values(parsed, 0)
    assert tol["skipped_whitespace_tokens"] == 1


def test_lines_two_word_pieces_merged():  # used to fail on the count
    rows = dict(GOOD)
    rows["Text 1:"] = GOOD["Text 1:"][:4] + [("felldown", 2)]
    parsed, lost, tol = lines(_answer(rows))
    assert not lost and _values(parsed, 0)[4] == 2 and _values(parsed, 0)[5] == 2 and tol["merged_tokens"] == 1


def test_lines_header_without_colon_and_preamble():  # used to fail: "cannot read the line"
    text = "Sure! Here are the activations.\n" + _answer(GOOD).replace("Text 1:", "Text 1").replace(
        "Text 2:", "**Sequence 2**")
    parsed, lost, tol = lines(text)
    assert not lost and _values(parsed, 0)[2] == 9 and tol["skipped_lines"] == 1


def test_lines_tokens_in_quotes():  # used to fail: quotes were stripped after whitespace
    rows = {h: [(f'"{t}"', v) for t, v in body] for h, body in GOOD.items()}
    parsed, lost, tol = lines(_answer(rows))
    assert not lost and _values(parsed, 0)[2] == 9 and "mismatched_tokens" not in tol


def test_lines_one_bad_text_loses_only_that_text():
    rows = dict(GOOD)
    rows["Text 2:"] = [(" a", 0), (" b", 3), (" c", 1)]
    parsed, lost, _ = lines(_answer(rows))
    assert 0 in parsed and set(lost) == {1} and "more lines" in lost[1]
    with pytest.raises(MalformedAnswer, match="text 1"):
        lines("nothing useful here", [SEQ])


def test_sparse_format_grammar():
    tol = Tolerated()
    parsed, lost = parse_sparse("1: 3=9, 5=2\n2: none\n", [6, 2], tol)
    assert not lost and [(v.pos, v.value) for v in parsed[0]] == [(2, 9), (4, 2)] and parsed[1] == []
    # preamble, no colon, bold numbers, quoted anchors, a single text without its number
    parsed, _ = parse_sparse('Here you go:\n**1** 3 "bridge"=9, 5: 2\n', [6], tol)
    assert [(v.pos, v.value) for v in parsed[0]] == [(2, 9), (4, 2)]
    parsed, _ = parse_sparse("3=9", [6], tol)
    assert [(v.pos, v.value) for v in parsed[0]] == [(2, 9)] and tol.counts["missing_text_number"] == 1
    # a bad line loses its own text, a missing line likewise
    parsed, lost = parse_sparse("1: 9=4\n2: 1=3\n", [6, 2, 3], tol)
    assert set(parsed) == {1} and "out of range" in lost[0] and "no line for text 3" in lost[2]
    with pytest.raises(MalformedAnswer, match="strength 12"):
        parse_sparse("1: 2=12", [6], tol)


def test_sparse_values_at_their_offsets():
    text = "1: 3=9, 5=10\n"
    parsed, _ = parse_sparse(text, [6], Tolerated())
    assert [text[v.char_start:v.char_start + len(str(v.value))] for v in parsed[0]] == ["9", "10"]


def test_json_loses_one_text_not_the_call():
    parsed, lost = parse_json('{"predictions": [[0, 0, 9, 0, 2, 0], [1]]}', [6, 2], Tolerated())
    assert _values(parsed, 0) == {2: 9, 4: 2} and "has 2 tokens" in lost[1]
    with pytest.raises(MalformedAnswer, match="not a JSON object"):
        parse_json("nope", [6], Tolerated())


def _lp(tok, top):
    return TokenLogprob(tok, top.get(tok, -0.01), {k: v for k, v in top.items()})


def test_expected_values_exact_tolerant_split_and_point():
    text = "1: 3=9, 5= 7, 6=10, 2=4"
    lps = [_lp("1", {}), _lp(": ", {}), _lp("3", {}), _lp("=", {}),
           _lp("9", {"9": math.log(0.5), "8": math.log(0.5)}), _lp(", ", {}), _lp("5", {}), _lp("=", {}),
           _lp(" 7", {" 7": math.log(0.6), "7": math.log(0.2), "x": math.log(0.2)}), _lp(", ", {}),
           _lp("6", {}), _lp("=", {}),
           _lp("1", {"1": math.log(0.8), "2": math.log(0.2)}), _lp("0", {"0": math.log(0.75), ",": math.log(0.25)}),
           _lp(", ", {}), _lp("2=4", {})]
    assert "".join(t.token for t in lps) == text
    values = [Value(0, 2, 9, text.index("9")), Value(0, 4, 7, text.index("7")),
              Value(0, 5, 10, text.index("10")), Value(0, 1, 4, text.index("4"))]
    st = EVStats()
    evs = expected_values(text, lps, values, 0.0, st)
    assert evs[0] == pytest.approx(8.5)
    assert evs[1] == pytest.approx(7.0) and st.tolerant_values >= 1  # " 7" and "7" merged, counted
    # "10" split as "1","0": P(1)=.8 splits into 10 (r=.75) and 1; 2 keeps .2
    assert evs[2] == pytest.approx(0.2 * 2 + 0.8 * (10 * 0.75 + 1 * 0.25)) and st.split_tens == 1
    assert evs[3] == 4.0 and st.point_values == 1  # "2=4" is one token: unaligned, the written value


def test_max_tokens_capped_by_the_models_context():
    assert context_window("gpt-4o-mini-2024-07-18") == 128_000 and context_window("openai/gpt-4") == 8_192
    assert context_window("some-local-model") == 8_192 and context_window("x", 32_768) == 32_768
    prompt = [{"role": "user", "content": "x" * 12_000}]  # ~4,000 tokens by the conservative estimate
    capped = cap_max_tokens(7_184, prompt, "gpt-4")
    assert capped < 7_184 and capped + 12_000 / 3 <= 8_192
    assert cap_max_tokens(100, prompt, "gpt-4o-mini") == 100
    with pytest.raises(ScoringFailed, match="does not fit the context window"):
        cap_max_tokens(10, [{"role": "user", "content": "x" * 30_000}], "gpt-4")
