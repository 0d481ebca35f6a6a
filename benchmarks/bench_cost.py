"""USD per feature (explain + simulation + detection) at list prices, against labeler's LLM test
server and its scoring oracle, for two models, with and without the Batch API and prompt caching.

Prints JSON: for each model and each of sync / batch x prompt caching off / on, the USD per
feature (explain, simulation, detection and total), tokens per feature (prompt, cached prompt,
completion), the scores (mean simulation and detection over the features: equal scores are
the condition), and the simulator's completion tokens per held-out token.  The baseline is
today's way, measured in the same run: sync calls, cached prompt tokens not counted (every prompt
token at the input price).  Goal: half of the baseline's cost at equal scores.

Token counts are the test server's (words and punctuation marks), prices the builtin list
prices (labeler/llm/prices.json); prompt caching follows OpenAI's rules (prompts of 1024+ tokens,
128-token steps of a repeated prefix), so it only pays where a prompt's static part is that long.

    python benchmarks/bench_cost.py [--features 8] [--ctx-len 64] [--models gpt-4o-mini gpt-4.1-mini]
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

PARTS = ("explain", "simulation", "detection")
GOAL = 0.5


async def one_config(records, model: str, batch: bool, prompt_cache: bool) -> dict:
    from labeler.explanation import get_explainer
    from labeler.llm import LLMClient, SpendTracker, reset_process_state
    from labeler.llm.batch import BatchOptions
    from labeler.scoring import get_scorer
    from labeler.testing.llm_server import TestLLMServer
    from labeler.testing.oracle import install_scoring_rules

    reset_process_state()
    with TestLLMServer(prompt_cache=prompt_cache) as server:
        install_scoring_rules(server)
        llm = LLMClient(model=model, base_url=server.base_url, api_key="x", cache=False, max_retries=0,
                        mode="batch" if batch else "sync", batch=BatchOptions(collect_s=0.05, poll_s=0.02),
                        spend=SpendTracker())
        explainer = get_explainer("highlighted", llm)
        scorers = {name: get_scorer(name, llm) for name in ("simulation", "detection")}
        await llm.supports_logprobs()  # the one direct probe, outside the figures
        exps = await asyncio.gather(*(explainer.explain(r) for r in records))
        if any(e.failed for e in exps):
            raise SystemExit(f"explaining failed: {[e.error for e in exps if e.failed][:3]}")
        results = {name: await asyncio.gather(*(s.score(r, e.text) for r, e in zip(records, exps)))
                   for name, s in scorers.items()}
        await llm.aclose()
    n = len(records)
    usages = {"explain": [e.usage for e in exps], **{k: [r.usage for r in v] for k, v in results.items()}}
    out: dict = {"usd_per_feature": {}, "tokens_per_feature": {}}
    for part in PARTS:
        us = usages[part]
        out["usd_per_feature"][part] = sum(u.cost_usd for u in us) / n
        out["tokens_per_feature"][part] = {"prompt": sum(u.prompt_tokens for u in us) / n,
                                           "cached_prompt": sum(u.cached_prompt_tokens for u in us) / n,
                                           "completion": sum(u.completion_tokens for u in us) / n,
                                           "calls": sum(u.calls for u in us) / n}
    out["usd_per_feature"]["total"] = sum(out["usd_per_feature"][p] for p in PARTS)
    for name, rs in results.items():
        if any(r.failed for r in rs):
            raise SystemExit(f"{name} failed: {[r.error for r in rs if r.failed][:3]}")
        values = [r.value for r in rs if r.value is not None]
        out[f"mean_{name}_score"] = sum(values) / max(1, len(values))
    held_out_tokens = sum(len(r.example_windows) for r in results["simulation"]) * len(records[0].examples[0].tokens)
    out["simulator_completion_tokens_per_held_out_token"] = (
        sum(r.usage.completion_tokens for r in results["simulation"]) / max(1, held_out_tokens))
    return out


async def run(n_features: int, ctx_len: int, models: list[str]) -> dict:
    from labeler.testing import make_feature_record

    records = [make_feature_record(f, ctx_len=ctx_len) for f in range(n_features)]
    report: dict = {"features": n_features, "ctx_len": ctx_len, "goal_ratio": GOAL, "models": {}}
    for model in models:
        rows = {}
        for batch in (False, True):
            for cache in (False, True):
                rows[f"{'batch' if batch else 'sync'}{'+prompt_cache' if cache else ''}"] = \
                    await one_config(records, model, batch, cache)
        base = rows["sync"]["usd_per_feature"]["total"]
        best_name = min(rows, key=lambda k: rows[k]["usd_per_feature"]["total"])
        best = rows[best_name]
        same_scores = all(abs(r[f"mean_{s}_score"] - rows["sync"][f"mean_{s}_score"]) < 1e-9
                          for r in rows.values() for s in ("simulation", "detection"))
        ratios = {k: r["usd_per_feature"]["total"] / base for k, r in rows.items()}
        report["models"][model] = {
            "configs": rows, "baseline": "sync (today: direct calls, no cached-token discount)",
            "cost_ratio_vs_baseline": ratios, "best": best_name,
            "usd_per_1m_features": {k: r["usd_per_feature"]["total"] * 1e6 for k, r in rows.items()},
            "equal_scores": same_scores,
            "meets_goal": same_scores and best["usd_per_feature"]["total"] <= GOAL * base + 1e-12,
        }
    return report


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", type=int, default=8)
    ap.add_argument("--ctx-len", type=int, default=64)
    ap.add_argument("--models", nargs="+", default=["gpt-4o-mini", "gpt-4.1-mini"])
    args = ap.parse_args(argv)
    os.environ.setdefault("LABELER_DATA_DIR", tempfile.mkdtemp(prefix="bench-cost-"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    json.dump(asyncio.run(run(args.features, args.ctx_len, args.models)), sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
