"""LLM cost of each scorer and answer format per feature, against labeler's LLM test server.

Prints JSON.  For every scorer and format: calls, prompt and completion tokens per feature
counted with a real tokenizer (``bpe-openai``'s o200k_base, the gpt-4o family's, offline: every
request's message texts and every answer's text are re-tokenized, plus 3 tokens per chat
message and 3 per request, OpenAI's chat framing), USD per feature at list prices
(gpt-4o-mini and gpt-4.1-mini, from labeler's price table), the mean score on the test server's
oracle, and the parse-failure rate under the oracle's malformed-answer modes (a preamble, a
header without its colon, quoted tokens, merged word pieces, a skipped whitespace token,
garbage; each with probability ``--slip``): the fraction of calls whose answer was rejected, of
held-out texts lost after retries, and of features that got no score.

The baseline is today's default measured in the same run: prompt ``score_simulation/v1``, all
10 held-out texts in one call, the token-per-line echo read with logprobs.  Goals (issue #17):
simulation completion tokens <= 0.3 per held-out token, total simulation cost at most half of
the baseline's, the same mean score on the oracle.

    python benchmarks/bench_scoring.py [--features 6] [--ctx-len 64] [--slip 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import warnings

warnings.filterwarnings("ignore", message="no price known")

MODELS = ("gpt-4o-mini", "gpt-4.1-mini")
HELD_OUT_TEXTS = 10
SIMULATION = {  # name -> (server settings, scorer options)
    "v1_lines_logprobs (baseline)": ({}, {"prompt_version": "v1", "sequences_per_call": None}),
    "v1_json_no_logprobs": ({"logprobs_mode": "ignore"}, {"prompt_version": "v1", "sequences_per_call": None}),
    "v2_sparse_logprobs": ({}, {}),
    "v2_sparse_no_logprobs": ({"logprobs_mode": "ignore"}, {}),
    "v2_sparse_3_per_call": ({}, {"sequences_per_call": 3}),
    "v2_lines_logprobs": ({}, {"answer_format": "lines"}),
    "v2_json_no_logprobs": ({"logprobs_mode": "ignore"}, {"answer_format": "json"}),
    "v2_prompt_logprobs (vLLM)": ({"prompt_logprobs": True}, {}),
}
JUDGES = {
    "detection_v1": ("detection", {"prompt_version": "v1", "batch_size": 10, "context_tokens": None}),
    "detection": ("detection", {}), "detection:hard": ("detection:hard", {}),
    "fuzzing_v1": ("fuzzing", {"prompt_version": "v1", "batch_size": 10, "context_tokens": None}),
    "fuzzing": ("fuzzing", {}), "rubric": ("rubric", {}), "intruder": ("intruder", {}),
}


class Counter:
    """Re-tokenizes what went over the wire: requests from the server's log, answers recorded
    by wrapping the oracle's responders."""

    def __init__(self) -> None:
        import bpe_openai

        self.enc = bpe_openai.get_encoding("o200k_base")
        self.answers: list[str] = []

    def wrap(self, server) -> None:
        from labeler.testing.llm_server import Reply

        def recording(responder):
            def respond(req):
                out = responder(req)
                text = out.text if isinstance(out, Reply) else str(out)
                self.answers.append("" if req.get("echo") else text)  # an echo generates nothing
                return out
            return respond
        server._rules = [(p, recording(r)) for p, r in server._rules]

    def tokens(self, text: str) -> int:
        return len(self.enc.encode(text))

    def prompt_tokens(self, req: dict) -> int:
        if "messages" in req:
            return 3 + sum(4 + self.tokens(str(m.get("content", ""))) for m in req["messages"])
        return self.tokens(str(req.get("prompt", "")))


def usd(model: str, prompt: float, completion: float) -> float:
    from labeler.llm.pricing import cost_usd, load_prices

    return cost_usd(model, int(round(prompt)), int(round(completion)), load_prices(None))


async def measure(records, scorer_name: str, server_cfg: dict, options: dict, slip: float = 0.0,
                  malformed: float = 0.0) -> dict:
    from labeler.llm import LLMClient, reset_process_state
    from labeler.scoring import get_scorer
    from labeler.testing.llm_server import TestLLMServer
    from labeler.testing.oracle import PERTURBATIONS, install_scoring_rules

    reset_process_state()
    counter = Counter()
    perturb = {p: slip for p in PERTURBATIONS if p != "garbage"} | {"garbage": slip / 4} if slip else None
    with TestLLMServer(malformed=malformed, seed=1, **server_cfg) as server:
        install_scoring_rules(server, perturb=perturb, seed=1)
        counter.wrap(server)
        llm = LLMClient(model="test-model", base_url=server.base_url, api_key="x", cache=False, max_retries=0)
        await llm.supports_logprobs()
        await llm.supports_prompt_logprobs()
        server.reset_stats()
        counter.answers.clear()
        scorer = get_scorer(scorer_name, llm, **options)
        values, lost, texts, failed, rejected, calls, held_out_tokens = [], 0, 0, 0, 0, 0, 0
        for rec in records:
            res = await scorer.score(rec, 'the token "bridge"')
            calls += res.usage.calls
            rejected += len(res.details.get("malformed_attempts", []))
            lost += len(res.details.get("lost", []))
            texts += len(res.details.get("lost", [])) + len(res.details.get("sequences", []))
            held_out_tokens += sum(len(s["predictions"]) for s in res.details.get("sequences", []))
            if res.failed:
                failed += 1
            elif res.value is not None:
                values.append(res.value)
        prompt = sum(counter.prompt_tokens(r) for r in server.requests)
        completion = sum(counter.tokens(a) for a in counter.answers)
        await llm.aclose()
    k = len(records)
    out = {"calls_per_feature": calls / k, "prompt_tokens_per_feature": prompt / k,
           "completion_tokens_per_feature": completion / k,
           "usd_per_feature": {m: usd(m, prompt / k, completion / k) for m in MODELS},
           "mean_score": round(sum(values) / len(values), 4) if values else None}
    if held_out_tokens:
        out["completion_tokens_per_held_out_token"] = round(completion / held_out_tokens, 4)
    if slip or malformed:
        out = {"rejected_answer_rate": round(rejected / max(calls, 1), 4),
               "lost_text_rate": round(lost / max(texts, 1), 4) if texts else None,
               "failed_feature_rate": round(failed / k, 4), "mean_score": out["mean_score"]}
    return out


async def run(n_features: int, ctx_len: int, slip: float, malformed: float) -> dict:
    from labeler.testing import make_feature_record

    records = [make_feature_record(f, ctx_len=ctx_len) for f in range(n_features)]
    report: dict = {"tokenizer": "o200k_base (bpe-openai)", "features": n_features, "ctx_len": ctx_len,
                    "held_out_texts": HELD_OUT_TEXTS, "simulation": {}, "judges": {}, "parse_failures": {}}
    for name, (cfg, opts) in SIMULATION.items():
        report["simulation"][name] = await measure(records, "simulation", cfg, opts)
    for name, (scorer, opts) in JUDGES.items():
        report["judges"][name] = await measure(records, scorer, {}, opts)
    for name in ("v1_lines_logprobs (baseline)", "v2_sparse_logprobs", "v2_lines_logprobs"):
        cfg, opts = SIMULATION[name]
        report["parse_failures"][name] = await measure(records, "simulation", cfg, opts, slip, malformed)
    base = report["simulation"]["v1_lines_logprobs (baseline)"]
    new = report["simulation"]["v2_sparse_logprobs"]
    ratio = {m: new["usd_per_feature"][m] / base["usd_per_feature"][m] for m in MODELS}
    report["goals"] = {
        "completion_tokens_per_held_out_token": {"baseline": base["completion_tokens_per_held_out_token"],
                                                 "v2_sparse": new["completion_tokens_per_held_out_token"],
                                                 "target": 0.3,
                                                 "met": new["completion_tokens_per_held_out_token"] <= 0.3},
        "simulation_cost_vs_baseline": {**{m: round(r, 3) for m, r in ratio.items()}, "target": 0.5,
                                        "met": all(r <= 0.5 for r in ratio.values())},
        "same_mean_score": {"baseline": base["mean_score"], "v2_sparse": new["mean_score"],
                            "met": abs(new["mean_score"] - base["mean_score"]) <= 0.02},
    }
    return report


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", type=int, default=6)
    ap.add_argument("--ctx-len", type=int, default=64)
    ap.add_argument("--slip", type=float, default=0.2, help="probability of each malformed-answer mode")
    ap.add_argument("--malformed", type=float, default=0.05, help="server-side garbage answers")
    args = ap.parse_args(argv)
    # isolated settings: no real endpoint, a throwaway data dir
    os.environ.setdefault("LABELER_DATA_DIR", tempfile.mkdtemp(prefix="bench-scoring-"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    report = asyncio.run(run(args.features, args.ctx_len, args.slip, args.malformed))
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
