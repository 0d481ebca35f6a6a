"""Prompt logprobs: a completions request with ``echo``, ``logprobs`` and ``max_tokens=0``.

vLLM answers it with the prompt itself and, for every prompt token, its logprob and top
alternatives (OpenAI's own API refuses the combination).  The simulation scorer's
``prompt_logprobs`` format reads predictions from them without generating anything.
"""

from __future__ import annotations

from typing import Any

from labeler.core.errors import LLMError
from labeler.llm.retry import _BadResponse
from labeler.llm.types import LLMResponse, TokenLogprob
from labeler.records import LLMUsage

PROBE_PROMPT = "Count: 1 2 3 4"


def params(model: str, prompt: str, top_logprobs: int) -> dict[str, Any]:
    return {"model": model, "prompt": prompt, "max_tokens": 0, "temperature": 0.0, "echo": True,
            "logprobs": int(top_logprobs)}


def parse(completion: Any, request: dict[str, Any], model: str) -> LLMResponse:
    """The echoed prompt with a :class:`TokenLogprob` per prompt token (the first token has no
    context: its logprob reads 0.0 and it has no alternatives)."""
    if not getattr(completion, "choices", None):
        raise _BadResponse("the endpoint returned no choices")
    choice = completion.choices[0]
    lp = choice.logprobs
    lps: list[TokenLogprob] | None = None
    if lp is not None and lp.tokens:
        tops = lp.top_logprobs or [None] * len(lp.tokens)
        values = lp.token_logprobs or [None] * len(lp.tokens)
        lps = [TokenLogprob(token=t, logprob=float(v) if v is not None else 0.0,
                            top={k: float(x) for k, x in (top or {}).items()})
               for t, v, top in zip(lp.tokens, values, tops)]
    u = completion.usage
    usage = LLMUsage(calls=1, prompt_tokens=int(u.prompt_tokens or 0) if u else len(request["prompt"]) // 4,
                     completion_tokens=int(u.completion_tokens or 0) if u else 0)
    return LLMResponse(text=choice.text or "", logprobs=lps, usage=usage, cached=False,
                       model=getattr(completion, "model", None) or model, finish_reason=choice.finish_reason)


async def probe(llm: Any) -> bool:
    """True when ``llm``'s endpoint echoes a prompt with top alternatives per token; a refusal
    (OpenAI: 400, chat-only models: 404) is a no."""
    try:
        resp = await llm.complete_echo(PROBE_PROMPT, 2, use_cache=False)
    except LLMError as e:
        if e.kind not in ("http_400", "http_403", "http_404", "http_422"):
            raise
        return False
    return (resp.text.startswith(PROBE_PROMPT) and bool(resp.logprobs) and len(resp.logprobs) > 1
            and any(t.top for t in resp.logprobs[1:]))
