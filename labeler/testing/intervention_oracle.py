"""A rule for labeler's LLM test server that answers the intervention scorer's prompt like a
careful reader: for each prompt it picks the continuation that contains more of the words the
explanation names (its quoted strings and content words, as the offline baseline reads them),
and continuation 1 on a tie.  The logprobs are not one-hot, so expected values differ from the
written answers::

    from labeler.testing.intervention_oracle import install_intervention_rule
    install_intervention_rule(server)
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from labeler.scoring.simulation import baseline_vocabulary
from labeler.testing.llm_server import Reply

_EXPL = re.compile(r"^Explanation: (.*)$", re.M)
_CONT = re.compile(r"^Continuation ([12]): (\".*\")\s*$", re.M)
_WORD = re.compile(r"\w+", re.UNICODE)
SURE = math.log(0.85)
UNSURE = math.log(0.15)


def _first_user(req: dict[str, Any]) -> str:
    return next((str(m.get("content", "")) for m in req.get("messages", []) if m.get("role") == "user"), "")


def is_intervention(req: dict[str, Any]) -> bool:
    system = next((str(m.get("content", "")) for m in req.get("messages", []) if m.get("role") == "system"), "")
    return "by what they do to the model's output" in system


def mentions(text: str, vocab: set[str]) -> int:
    """How many words of ``text`` the explanation names."""
    return sum(w.lower() in vocab for w in _WORD.findall(text))


def intervention_reply(req: dict[str, Any]) -> Reply:
    user = _first_user(req)
    m = _EXPL.search(user)
    vocab = baseline_vocabulary(m.group(1) if m else "")
    found = [(int(k), json.loads(t)) for k, t in _CONT.findall(user)]
    firsts = [t for k, t in found if k == 1]
    seconds = [t for k, t in found if k == 2]
    choices = [2 if mentions(b, vocab) > mentions(a, vocab) else 1 for a, b in zip(firsts, seconds)]
    pieces: list[tuple[str, float, dict[str, float]]] = [("[", -0.01, {})]
    for i, c in enumerate(choices):
        if i:
            pieces.append((", ", -0.01, {}))
        other = "1" if c == 2 else "2"
        pieces.append((str(c), SURE, {str(c): SURE, other: UNSURE}))
    pieces.append(("]", -0.01, {}))
    return Reply("".join(p[0] for p in pieces), logprobs=pieces)


def install_intervention_rule(server: Any) -> Any:
    """Register the intervention responder on one TestLLMServer; returns the server."""
    server.add_rule(is_intervention, intervention_reply)
    return server
