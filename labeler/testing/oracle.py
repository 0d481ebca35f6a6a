"""Rules for labeler's LLM test server that answer the scoring prompts like a careful reader.

For tests, benchmarks and demos without a real LLM: the "reader" takes the explanation's
quoted strings and content words (the offline baseline's vocabulary) as what the feature
responds to, and answers each scoring prompt (v1 and v2, every simulation answer format, the
prompt-logprob echo, detection, fuzzing, rubric, intruder) accordingly, with logprobs that are
not one-hot (so expected values differ from the written integers)::

    from labeler.testing.llm_server import TestLLMServer
    from labeler.testing.oracle import install_scoring_rules
    with TestLLMServer(prompt_logprobs=True) as server:
        install_scoring_rules(server, perturb={"preamble": 0.2})

``perturb`` gives, per simulation answer, the probability of each realistic slip a real model
makes (the benchmark's malformed-answer modes): ``preamble`` (a first line of chatter),
``no_colon`` (``Text 1`` / ``1`` without its colon), ``quotes`` (copied tokens in quotes),
``merge`` (two copied word pieces on one line), ``skip_space`` (a whitespace-only token left
out) and ``garbage`` (nothing usable).
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter
from typing import Any

from labeler.scoring.simulation import _norm_token, baseline_vocabulary
from labeler.testing.echo import echo_tokens, is_echo
from labeler.testing.llm_server import Reply

# Written value -> (distribution over alternatives). EV: 9.5 for a hit, 0.05/0.95 for a miss.
HIT_TOP = {"10": math.log(0.6), "8": math.log(0.2), "maybe": math.log(0.2)}
MISS_TOP = {"0": math.log(0.9), "1": math.log(0.05), "none": math.log(0.05)}
YES_TOP = {"1": math.log(0.8), "0": math.log(0.2)}
NO_TOP = {"0": math.log(0.7), "1": math.log(0.3)}
PERTURBATIONS = ("preamble", "no_colon", "quotes", "merge", "skip_space", "garbage")

Piece = tuple[str, float, dict[str, float]]
_SEQ_V1 = re.compile(r"^Sequence (\d+): (\[.*\])\s*$", re.M)
_TEXT = re.compile(r"^Text (\d+): (.*)$", re.M)
_EXPL = re.compile(r"^Explanation(?: of the feature| of feature \d+)?: (.*)$", re.M)
_TOKEN_LINE = re.compile(r"^(\d+)\t(.*)$")


def _system(req: dict[str, Any]) -> str:
    return next((str(m.get("content", "")) for m in req.get("messages", []) if m.get("role") == "system"), "")


def _last_user(req: dict[str, Any]) -> str:
    """The feature's own message: the last user message holding texts (few-shot examples come
    before it, a retry's note about the previous answer after it)."""
    users = [str(m.get("content", "")) for m in req.get("messages", []) if m.get("role") == "user"]
    with_texts = [u for u in users if "Text 1" in u or "Sequence 1" in u]
    return (with_texts or users or [""])[-1]


def _vocab(user: str) -> set[str]:
    found = _EXPL.findall(user)
    return baseline_vocabulary(found[-1] if found else "")


def _hit(token: str, vocab: set[str]) -> bool:
    t = _norm_token(token)
    return bool(t) and t in vocab


def is_simulation(req: dict[str, Any]) -> bool:
    return "You simulate one feature" in _system(req)


def is_simulation_echo(req: dict[str, Any]) -> bool:
    return is_echo(req) and "<start>" in str(req.get("prompt", ""))


def is_detection(req: dict[str, Any]) -> bool:
    s = _system(req)
    return "would fire anywhere in it" in s or "is active anywhere in it" in s


def is_fuzzing(req: dict[str, Any]) -> bool:
    s = _system(req)
    return "marked like <<this>>" in s or "some tokens are marked <<like this>>. Sometimes" in s


def is_rubric(req: dict[str, Any]) -> bool:
    return "Rate how related each text is" in _system(req)


def is_intruder(req: dict[str, Any]) -> bool:
    return "Find the intruder" in _system(req)


def _pieces_text(pieces: list[Piece]) -> Reply:
    return Reply("".join(p[0] for p in pieces), logprobs=pieces)


def _value(hit: bool) -> Piece:
    top = HIT_TOP if hit else MISS_TOP
    v = "10" if hit else "0"
    return (v, top[v], dict(top))


def _v2_sequences(user: str) -> list[list[str]]:
    seqs: list[list[str]] = []
    for line in user.splitlines():
        if line == "Tokens:":
            seqs.append([])
        elif seqs and (m := _TOKEN_LINE.match(line)):
            seqs[-1].append(m.group(2))
    return seqs


class _Oracle:
    def __init__(self, perturb: dict[str, float] | None, seed: int):
        unknown = set(perturb or {}) - set(PERTURBATIONS)
        if unknown:
            raise ValueError(f"unknown perturbation(s) {sorted(unknown)}; known: {PERTURBATIONS}")
        self.perturb = dict(perturb or {})
        self.rng = random.Random(seed)
        self.applied: Counter[str] = Counter()

    def _slip(self, name: str) -> bool:
        hit = self.rng.random() < self.perturb.get(name, 0.0)
        self.applied[name] += hit
        return hit

    def simulation(self, req: dict[str, Any]) -> Reply:
        user = _last_user(req)
        vocab = _vocab(user)
        if self._slip("garbage"):
            return Reply("I am not sure what the feature does here.")
        system = _system(req)
        if _SEQ_V1.search(user):  # prompt v1: JSON token lists, one "Sequence n:" block each
            return self._v1(user, vocab)  # slips: preamble, no_colon, quotes
        seqs = _v2_sequences(user)
        pieces: list[Piece] = []
        if self._slip("preamble"):
            pieces.append(("Here are my predictions for the text.\n", -0.01, {}))
        colon = ":" if not self._slip("no_colon") else ""
        if "JSON object" in system:
            preds = [[10 if _hit(t, vocab) else 0 for t in s] for s in seqs]
            return Reply(json.dumps({"predictions": preds}))
        if "Name only the active tokens" in system:
            for k, seq in enumerate(seqs, 1):
                pieces.append((f"{k}{colon} ", -0.01, {}))
                hits = [i for i, t in enumerate(seq, 1) if _hit(t, vocab)]
                if not hits:
                    pieces.append(("none", -0.01, {}))
                for j, i in enumerate(hits):
                    pieces += [((", " if j else "") + str(i), -0.01, {}), ("=", -0.01, {}), _value(True)]
                pieces.append(("\n", -0.01, {}))
            return _pieces_text(pieces)
        quote = '"' if self._slip("quotes") else ""
        merge, skip = self._slip("merge"), self._slip("skip_space")
        for k, seq in enumerate(seqs, 1):
            pieces.append((f"Text {k}{colon}\n", -0.01, {}))
            i = 0
            while i < len(seq):
                tok, hit = seq[i], _hit(seq[i], vocab)
                if skip and not tok.strip():
                    skip, i = False, i + 1
                    continue
                if merge and i + 1 < len(seq) and not hit and not _hit(seq[i + 1], vocab):
                    tok, merge, i = tok + seq[i + 1].strip(), False, i + 1
                pieces += [(f"{quote}{tok}{quote}", -0.01, {}), ("\t", -0.01, {}), _value(hit), ("\n", -0.01, {})]
                i += 1
        return _pieces_text(pieces)

    def _v1(self, user: str, vocab: set[str]) -> Reply:
        seqs = [json.loads(s) for _, s in _SEQ_V1.findall(user)]
        if "JSON object" in user:
            return Reply(json.dumps({"predictions": [[10 if _hit(t, vocab) else 0 for t in s] for s in seqs]}))
        pieces: list[Piece] = []
        if self._slip("preamble"):
            pieces.append(("Here are my predictions for the text.\n", -0.01, {}))
        colon = ":" if not self._slip("no_colon") else ""
        quote = '"' if self._slip("quotes") else ""
        for k, seq in enumerate(seqs, 1):
            pieces.append((f"Sequence {k}{colon}\n", -0.01, {}))
            for t in seq:
                pieces += [(quote + json.dumps(t, ensure_ascii=False)[1:-1] + quote, -0.01, {}), ("\t", -0.01, {}),
                           _value(_hit(t, vocab)), ("\n", -0.01, {})]
        return _pieces_text(pieces)

    def echo(self, req: dict[str, Any]) -> Reply:
        """The prompt back, with the reader's distribution at each placeholder of the target."""
        prompt = str(req["prompt"])
        vocab = _vocab(prompt)
        target_at = prompt.rindex("<start>\n")
        pieces: list[Piece] = []
        pos = 0
        line_token = ""
        for tok in echo_tokens(prompt):
            top = {tok: -0.01}
            if pos > target_at and tok == "unknown":
                line_start = prompt.rindex("\n", 0, pos) + 1
                line_token = prompt[line_start:pos - 1]
                top = {"unknown": -0.01, **(HIT_TOP if _hit(line_token, vocab) else MISS_TOP)}
            pieces.append((tok, -0.01, top))
            pos += len(tok)
        return Reply(prompt, pieces)


def _list_reply(values: list[int], tops: list[dict[str, float]] | None) -> Reply:
    pieces: list[Piece] = [("[", -0.01, {})]
    for i, v in enumerate(values):
        if i:
            pieces.append((", ", -0.01, {}))
        top = tops[i] if tops else {str(v): 0.0}
        pieces.append((str(v), top.get(str(v), -0.01), dict(top)))
    pieces.append(("]", -0.01, {}))
    return _pieces_text(pieces)


def _texts(req: dict[str, Any]) -> tuple[set[str], list[str]]:
    user = _last_user(req)
    texts = []
    for _, t in _TEXT.findall(user):
        if len(t) >= 2 and t[0] == t[-1] == '"':  # v1 quoted texts as JSON; a v2 text may just start with a quote
            try:
                t = json.loads(t)
            except ValueError:
                pass
        texts.append(t)
    return _vocab(user), texts


def _words(text: str) -> list[str]:
    return re.findall(r"[^\s<>]+", text.replace("↵", " ").replace("⇥", " "))


def _marked(text: str) -> list[str]:
    return [w for span in re.findall(r"<<(.+?)>>", text, flags=re.S) for w in _words(span)]


def detection_reply(req: dict[str, Any]) -> Reply:
    vocab, texts = _texts(req)
    values = [int(any(_hit(w, vocab) for w in _words(t))) for t in texts]
    return _list_reply(values, [YES_TOP if v else NO_TOP for v in values])


def fuzzing_reply(req: dict[str, Any]) -> Reply:
    vocab, texts = _texts(req)
    values = [int(bool(_marked(t)) and any(_hit(w, vocab) for w in _marked(t))) for t in texts]
    return _list_reply(values, [YES_TOP if v else NO_TOP for v in values])


def rubric_reply(req: dict[str, Any]) -> Reply:
    vocab, texts = _texts(req)
    values = [min(3, sum(_hit(w, vocab) for w in _words(t)) * 2) for t in texts]
    tops = [{str(v): math.log(0.7), str(v + 1 if v < 3 else 2): math.log(0.3)} for v in values]
    return _list_reply(values, tops)


def intruder_reply(req: dict[str, Any]) -> Reply:
    """The text whose marked words are least like the other texts' marked words."""
    _, texts = _texts(req)
    marks = [{_norm_token(w) for w in _marked(t)} for t in texts]
    counts = Counter(w for m in marks for w in m)
    share = [max((counts[w] - 1 for w in m), default=-1) for m in marks]
    return Reply(str(1 + min(range(len(texts)), key=lambda i: (share[i], i))) if texts else "1")


def install_scoring_rules(server: Any, *, perturb: dict[str, float] | None = None, seed: int = 0) -> Any:
    """Register the scoring responders on one TestLLMServer; returns the server.  The
    perturbations actually made are counted in ``server.oracle_slips``."""
    oracle = _Oracle(perturb, seed)
    server.oracle_slips = oracle.applied
    server.add_rule(is_simulation, oracle.simulation)
    server.add_rule(is_simulation_echo, oracle.echo)
    server.add_rule(is_detection, detection_reply)
    server.add_rule(is_fuzzing, fuzzing_reply)
    server.add_rule(is_rubric, rubric_reply)
    server.add_rule(is_intruder, intruder_reply)
    return server


simulation_reply = _Oracle(None, 0).simulation
"""The simulation responder with no slips (for servers that install rules one by one)."""
