"""Rules for labeler's LLM test server that answer the scoring prompts like a careful reader.

For tests, benchmarks and demos without a real LLM: the "reader" takes the explanation's
quoted strings and content words (the offline baseline's vocabulary) as what the feature
responds to, and answers each scoring prompt accordingly, with logprobs that are not one-hot
(so expected values differ from the written integers)::

    from labeler.testing.llm_server import TestLLMServer
    from labeler.testing.oracle import install_scoring_rules
    with TestLLMServer() as server:
        install_scoring_rules(server)
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from labeler.scoring.simulation import _echo_form, _norm_token, baseline_vocabulary
from labeler.testing.llm_server import Reply

# Written value -> (distribution over alternatives). EV: 9.5 for a hit, 0.05/0.95 for a miss.
HIT_TOP = {"10": math.log(0.6), "8": math.log(0.2), "maybe": math.log(0.2)}
MISS_TOP = {"0": math.log(0.9), "1": math.log(0.05), "none": math.log(0.05)}
YES_TOP = {"1": math.log(0.8), "0": math.log(0.2)}
NO_TOP = {"0": math.log(0.7), "1": math.log(0.3)}

_SEQ = re.compile(r"^Sequence (\d+): (\[.*\])\s*$", re.M)
_TEXT = re.compile(r"^Text (\d+): (\".*\")\s*$", re.M)
_EXPL = re.compile(r"^Explanation: (.*)$", re.M)


def _system(req: dict[str, Any]) -> str:
    return next((str(m.get("content", "")) for m in req.get("messages", []) if m.get("role") == "system"), "")


def _first_user(req: dict[str, Any]) -> str:
    return next((str(m.get("content", "")) for m in req.get("messages", []) if m.get("role") == "user"), "")


def _vocab(user: str) -> set[str]:
    m = _EXPL.search(user)
    return baseline_vocabulary(m.group(1) if m else "")


def _hit(token: str, vocab: set[str]) -> bool:
    t = _norm_token(token)
    return bool(t) and t in vocab


def is_simulation(req: dict[str, Any]) -> bool:
    return "You simulate one feature" in _system(req)


def is_detection(req: dict[str, Any]) -> bool:
    return "would fire anywhere in it" in _system(req)


def is_fuzzing(req: dict[str, Any]) -> bool:
    return "marked like <<this>>" in _system(req)


def is_rubric(req: dict[str, Any]) -> bool:
    return "Rate how related each text is" in _system(req)


def simulation_reply(req: dict[str, Any]):
    user = _first_user(req)
    vocab = _vocab(user)
    seqs = [json.loads(s) for _, s in _SEQ.findall(user)]
    if "JSON object" in user:
        preds = [[10 if _hit(t, vocab) else 0 for t in s] for s in seqs]
        return Reply(json.dumps({"predictions": preds}))
    pieces: list[tuple[str, float, dict[str, float]]] = []
    for k, seq in enumerate(seqs, 1):
        pieces.append((f"Sequence {k}:\n", -0.01, {}))
        for t in seq:
            hit = _hit(t, vocab)
            top = HIT_TOP if hit else MISS_TOP
            value = "10" if hit else "0"
            pieces += [(_echo_form(t), -0.01, {}), ("\t", -0.01, {}), (value, top[value], dict(top)),
                       ("\n", -0.01, {})]
    return Reply("".join(p[0] for p in pieces), logprobs=pieces)


def _list_reply(values: list[int], tops: list[dict[str, float]] | None):
    pieces: list[tuple[str, float, dict[str, float]]] = [("[", -0.01, {})]
    for i, v in enumerate(values):
        if i:
            pieces.append((", ", -0.01, {}))
        top = tops[i] if tops else {str(v): 0.0}
        pieces.append((str(v), top.get(str(v), -0.01), dict(top)))
    pieces.append(("]", -0.01, {}))
    return Reply("".join(p[0] for p in pieces), logprobs=pieces)


def _texts(req: dict[str, Any]) -> tuple[set[str], list[str]]:
    user = _first_user(req)
    return _vocab(user), [json.loads(t) for _, t in _TEXT.findall(user)]


def detection_reply(req: dict[str, Any]):
    vocab, texts = _texts(req)
    values = [int(any(_hit(w, vocab) for w in re.findall(r"\S+", t))) for t in texts]
    return _list_reply(values, [YES_TOP if v else NO_TOP for v in values])


def fuzzing_reply(req: dict[str, Any]):
    vocab, texts = _texts(req)
    values = []
    for t in texts:
        marked = [w for span in re.findall(r"<<(.+?)>>", t, flags=re.S) for w in span.split()]
        values.append(int(bool(marked) and any(_hit(w, vocab) for w in marked)))
    return _list_reply(values, [YES_TOP if v else NO_TOP for v in values])


def rubric_reply(req: dict[str, Any]):
    vocab, texts = _texts(req)
    values = [min(3, sum(_hit(w, vocab) for w in re.findall(r"\S+", t)) * 2) for t in texts]
    tops = [{str(v): math.log(0.7), str(v + 1 if v < 3 else 2): math.log(0.3)} for v in values]
    return _list_reply(values, tops)


def install_scoring_rules(server: Any) -> Any:
    """Register the four scoring responders on one TestLLMServer; returns the server."""
    server.add_rule(is_simulation, simulation_reply)
    server.add_rule(is_detection, detection_reply)
    server.add_rule(is_fuzzing, fuzzing_reply)
    server.add_rule(is_rubric, rubric_reply)
    return server
