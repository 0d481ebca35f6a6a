"""Simulation scoring (after Bills et al. 2023): predict activations from the explanation alone.

The simulator sees only the explanation and held-out texts and predicts every token's
activation on a 0..10 scale; the score is the Pearson correlation of predictions with the real
(raw) activations over all tokens of all texts flattened (``metrics.score_simulation``), with
per-kind correlations beside it (``pearson_top``, ``pearson_random``, ``pearson_quantile``).

Held-out set (``details["sets"]`` says what was used): the split's ``n_top`` top windows,
``n_random`` random windows (``random_set``: the store's truly random windows, zeros included,
when it has them; random *activating* windows in older stores) and ``n_quantile`` windows
stratified across activation quantiles (0 by default), each window once.  They are sent in a
seeded shuffled order (``details["order"]``), ``sequences_per_call`` texts per call (1: each
text is simulated on its own, so a bad answer costs that text, not the feature; texts that
could not be read are left out of the correlation and listed in ``details["lost"]``).

Answer formats (``answer_format``, "auto" picks the first the endpoint supports):

- ``prompt_logprobs``: OpenAI's all-at-once method, no output tokens (endpoints that return
  prompt logprobs, e.g. vLLM; probed);
- ``sparse``: the model names only the active tokens as ``index=value``; unnamed tokens are 0;
  with logprobs each named value is the expected value over "0".."10" at its position;
- ``lines`` (prompt v1's echo): one ``token<TAB>value`` line per token; ``json``:
  ``{"predictions": [[...]]}`` (v1's format for endpoints without logprobs).

Expected values use exactly the scale tokens "0".."10" (``metrics.expected_value``); whitespace
variants such as " 7" are merged first and counted (``details["tolerant_values"]``); where no
logprob can be used the written integer is (``details["point_values"]``).

``llm=None``: the offline ``baseline`` simulator (below).
"""

from __future__ import annotations

import re
from labeler.records import FeatureRecord, ScoreResult
from labeler.scoring.base import register_scorer
from labeler.scoring.sim_run import SimulationOptions, SimulationRun

SCALE_MAX = 10
BASELINE_VERSION = "v1"  # bump when the offline baseline's rules change (part of the score's identity)


# -- offline baseline ------------------------------------------------------------------------

_STOPWORDS = frozenset(
    "a an the of and or to in on at by for from with as is are was were be been it its this that "
    "these those which who what when where how not no token tokens word words text feature "
    "fires activates activation on about related mention mentions".split()
)
_QUOTED = re.compile(r"[\"'`\u201c\u2018]([^\"'`\u201d\u2019]{1,40})[\"'`\u201d\u2019]")
_WORD = re.compile(r"\w+", re.UNICODE)


def _norm_token(tok: str) -> str:
    return tok.strip().strip(".,;:!?()[]{}\"'`").lower()


def baseline_vocabulary(explanation: str) -> set[str]:
    """Normalised strings the offline baseline treats as 'named by the explanation'."""
    vocab = {_norm_token(q) for q in _QUOTED.findall(explanation)}
    vocab |= {w.lower() for w in _WORD.findall(explanation) if w.lower() not in _STOPWORDS}
    vocab |= {w[:-1] for w in vocab if len(w) > 3 and w.endswith("s")}
    vocab.discard("")
    return vocab


def baseline_predictions(explanation: str, sequences: list[list[str]]) -> list[list[float]]:
    vocab = baseline_vocabulary(explanation)
    out = []
    for tokens in sequences:
        row = []
        for tok in tokens:
            t = _norm_token(tok)
            hit = bool(t) and (t in vocab or (len(t) > 3 and t.endswith("s") and t[:-1] in vocab))
            row.append(float(SCALE_MAX) if hit else 0.0)
        out.append(row)
    return out


# -- the scorer --------------------------------------------------------------------------------


@register_scorer
class SimulationScorer(SimulationRun):
    name = "simulation"
    needs_llm = False  # llm=None -> the offline baseline simulator
    llm_role = "simulator"
    Options = SimulationOptions

    def baseline(self, explanation: str, sequences: list[list[str]], result: ScoreResult) -> list[list[float]]:
        result.prompt_name, result.prompt_version = "simulation_baseline", BASELINE_VERSION
        result.details["baseline_vocabulary"] = sorted(baseline_vocabulary(explanation))
        return baseline_predictions(explanation, sequences)

    async def _score(self, record: FeatureRecord, explanation: str, split: str, result: ScoreResult) -> None:
        await self.simulate_and_score(record, explanation, split, result)
