"""LLM cost of each scorer per feature at default settings, against labeler's LLM test server.

Prints JSON: calls, prompt and completion tokens per feature for every scorer, with
  - the published per-feature costs of EleutherAI's delphi (Paulo et al. 2024: about 400 prompt
    tokens to explain, about 725 per 5 examples for detection or fuzzing, about 24,000 for
    simulation) as a fixed reference, and
  - a baseline measured in the same run: simulation with one sequence per call (no packing),
    the usual per-sequence simulator layout.
Token counts are the test server's (words and punctuation marks each count as one token), which
over-counts JSON-heavy prompts relative to BPE tokenizers, so figures are conservative.
Target: simulation <= 6,000 prompt tokens per feature at 10 held-out sequences (5 top + 5 random).

    python benchmarks/bench_scoring.py [--features 4] [--ctx-len 32 64]
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

DELPHI = {"explain_prompt_tokens": 400, "detection_or_fuzzing_prompt_tokens_per_5_examples": 725,
          "simulation_prompt_tokens": 24_000}
SIMULATION_TARGET = 6_000


async def measure(server, records, name: str, **options) -> dict:
    from labeler.llm import LLMClient
    from labeler.scoring import get_scorer

    llm = LLMClient(model="test-model", base_url=server.base_url, api_key="x", cache=False, max_retries=0)
    scorer = get_scorer(name, llm if name != "embedding" else None, **options)
    calls = prompt = completion = examples = 0
    values = []
    for rec in records:
        res = await scorer.score(rec, 'the token "bridge"')
        if res.failed:
            raise SystemExit(f"{name} failed on feature {rec.feature}: {res.error}")
        calls += res.usage.calls
        prompt += res.usage.prompt_tokens
        completion += res.usage.completion_tokens
        n = res.metrics.get("n_examples") or res.metrics.get("n_sequences") or 0
        examples += int(n)
        values.append(res.value)
    await llm.aclose()
    k = len(records)
    out = {"calls_per_feature": calls / k, "prompt_tokens_per_feature": prompt / k,
           "completion_tokens_per_feature": completion / k, "examples_per_feature": examples / k,
           "mean_score": sum(v for v in values if v is not None) / max(1, sum(v is not None for v in values))}
    if examples:
        out["prompt_tokens_per_5_examples"] = 5 * prompt / examples
    return out


async def run(n_features: int, ctx_lens: list[int]) -> dict:
    from labeler.llm import reset_process_state
    from labeler.testing.llm_server import TestLLMServer
    from labeler.testing.oracle import install_scoring_rules
    from labeler.testing import make_feature_record

    report: dict = {"delphi_published": DELPHI, "simulation_target_prompt_tokens": SIMULATION_TARGET,
                    "held_out_sequences_for_simulation": 10, "features": n_features, "by_ctx_len": {}}
    for ctx_len in ctx_lens:
        records = [make_feature_record(f, ctx_len=ctx_len) for f in range(n_features)]
        row: dict = {}
        for lp in ("on", "ignore"):
            reset_process_state()
            with TestLLMServer(logprobs_mode=lp) as server:
                install_scoring_rules(server)
                key = "logprobs" if lp == "on" else "no_logprobs"
                row[f"simulation_{key}"] = await measure(server, records, "simulation")
                if lp == "on":
                    row["simulation_unpacked_baseline"] = await measure(server, records, "simulation",
                                                                        max_sequences_per_call=1)
                    for name in ("detection", "fuzzing", "rubric"):
                        row[name] = await measure(server, records, name)
        row["embedding"] = {"calls_per_feature": 0, "prompt_tokens_per_feature": 0,
                            "note": "offline MiniLM, no LLM"}
        sim = row["simulation_logprobs"]["prompt_tokens_per_feature"]
        row["ratios"] = {
            "simulation_vs_delphi": sim / DELPHI["simulation_prompt_tokens"],
            "simulation_vs_target": sim / SIMULATION_TARGET,
            "simulation_packed_vs_unpacked_same_run":
                sim / row["simulation_unpacked_baseline"]["prompt_tokens_per_feature"],
            "detection_per_5_vs_delphi": row["detection"]["prompt_tokens_per_5_examples"]
                / DELPHI["detection_or_fuzzing_prompt_tokens_per_5_examples"],
            "fuzzing_per_5_vs_delphi": row["fuzzing"]["prompt_tokens_per_5_examples"]
                / DELPHI["detection_or_fuzzing_prompt_tokens_per_5_examples"],
        }
        row["simulation_meets_target"] = sim <= SIMULATION_TARGET
        report["by_ctx_len"][str(ctx_len)] = row
    return report


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", type=int, default=4)
    ap.add_argument("--ctx-len", type=int, nargs="+", default=[32, 64])
    args = ap.parse_args(argv)
    # isolated settings: no real endpoint, a throwaway data dir
    os.environ.setdefault("LABELER_DATA_DIR", tempfile.mkdtemp(prefix="bench-scoring-"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    report = asyncio.run(run(args.features, args.ctx_len))
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
