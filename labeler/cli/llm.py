"""CLI commands for the LLM layer: ``labeler llm-test-server`` and ``labeler llm-probe``."""

from __future__ import annotations

import asyncio
import json
from typing import Optional

import typer

from labeler.cli._app import app


@app.command("llm-test-server")
def llm_test_server(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8089, help="Port (0: any free port)."),
    latency: float = typer.Option(0.0, help="Seconds added to every answer."),
    jitter: float = typer.Option(0.0, help="Extra random latency, uniform in [0, jitter] seconds."),
    fail_429: float = typer.Option(0.0, "--fail-429", help="Probability of a 429 with Retry-After."),
    fail_500: float = typer.Option(0.0, "--fail-500", help="Probability of a 500."),
    hang: float = typer.Option(0.0, help="Probability of a request that never answers (for hang-s seconds)."),
    malformed: float = typer.Option(0.0, help="Probability of garbage text."),
    truncated: float = typer.Option(0.0, help="Probability of a cut answer (finish_reason length)."),
    retry_after: float = typer.Option(1.0, help="Retry-After seconds sent with 429s."),
    hang_s: float = typer.Option(30.0, help="How long a hung request sleeps."),
    no_logprobs: bool = typer.Option(False, "--no-logprobs", help="Answer without logprobs even when asked."),
    api_key: Optional[str] = typer.Option(None, help="Require this bearer key (401 otherwise)."),
    seed: int = typer.Option(0, help="Seed for latency jitter and failure draws."),
) -> None:
    """Run the OpenAI-compatible test server in the foreground (benchmarks, manual runs).

    It answers labeler's explanation prompts with its default rule and the scoring prompts
    (simulation, detection, fuzzing, rubric, intervention) with the scoring oracles."""
    from labeler.testing.llm_server import TestLLMServer
    from labeler.testing.intervention_oracle import install_intervention_rule
    from labeler.testing.oracle import install_scoring_rules

    for name, p in (("fail-429", fail_429), ("fail-500", fail_500), ("hang", hang), ("malformed", malformed),
                    ("truncated", truncated)):
        if not 0.0 <= p <= 1.0:
            from labeler.core.errors import ConfigError

            raise ConfigError(f"--{name} is a probability between 0 and 1, got {p}")
    server = TestLLMServer(host=host, port=port, seed=seed, latency_s=latency, jitter_s=jitter,
                           fail_429=fail_429, fail_500=fail_500, hang=hang, malformed=malformed,
                           truncated=truncated, retry_after_s=retry_after, hang_s=hang_s,
                           logprobs_mode="ignore" if no_logprobs else "on", api_key=api_key)
    install_scoring_rules(server)
    install_intervention_rule(server)
    server.start()
    print(json.dumps({"base_url": server.base_url}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


@app.command("llm-probe")
def llm_probe(
    role: str = typer.Option("explainer", help="LLM role: explainer, simulator or scorer."),
    model: Optional[str] = typer.Option(None, help="Model name (default: the role's setting)."),
) -> None:
    """Check the configured endpoint: one tiny call, logprob support, cost so far."""
    from labeler.core.errors import ConfigError
    from labeler.llm import get_llm

    llm = get_llm(role, model=model, cache=False)
    if llm is None:
        raise ConfigError(f"no LLM endpoint configured for role {role!r}: set OPENAI_BASE_URL / OPENAI_API_KEY")

    async def run() -> dict:
        try:
            logprobs = await llm.supports_logprobs()
            return {"model": llm.model, "base_url": llm.base_url, "logprobs": logprobs, "usage": llm.usage.to_dict()}
        finally:
            await llm.aclose()

    from labeler.core.errors import LLMError

    try:
        print(json.dumps(asyncio.run(run()), indent=2))
    except LLMError as e:
        raise ConfigError(f"the {role} endpoint does not answer: {e}") from None
