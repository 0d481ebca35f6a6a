"""The explainer and scorers of a label spec, wired to LLM clients from one pool.

A pool belongs to one event loop (an LLM client's asyncio primitives are bound to the loop
that made it) and is shared by every chunk that loop runs, so HTTP connections to an endpoint
stay open from one chunk to the next.  Whoever owns the loop closes the pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from labeler.core.config import Settings
from labeler.runs.spec import LabelSpec


class LLMPool:
    """LLM clients by (role, model); None for a role without an endpoint."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._clients: dict[tuple[str, str | None], Any] = {}

    def get(self, role: str, model: str | None = None) -> Any:
        from labeler.llm import get_llm

        key = (role, model)
        if key not in self._clients:
            self._clients[key] = get_llm(role, self.settings, model=model)
        return self._clients[key]

    async def aclose(self) -> None:
        clients, self._clients = [c for c in self._clients.values() if c is not None], {}
        for client in clients:
            await client.aclose()


@dataclass
class Stages:
    explainer: Any  # None when the job does not explain
    scorers: dict[str, Any]  # name -> scorer; empty when the job does not score


def build_stages(spec: LabelSpec, pool: LLMPool, *, explain: bool, score: bool) -> Stages:
    from labeler.explanation import EXPLAINERS, get_explainer
    from labeler.scoring import SCORERS, get_scorer

    models = {"explainer": spec.explainer_model, "simulator": spec.simulator_model, "scorer": spec.scorer_model}
    explainer = None
    if explain:
        cls = EXPLAINERS[spec.explainer_base]
        llm = pool.get("explainer", spec.explainer_model) if cls.needs_llm else None
        options = dict(spec.explainer_options)
        for option, role in cls.llm_options.items():  # e.g. best-of-N ranks with the simulator
            client = pool.get(role, models[role])
            if option not in options and client is not None:
                options[option] = client
        explainer = get_explainer(spec.explainer, llm=llm, **options)
    scorers: dict[str, Any] = {}
    if score:
        for name in spec.scorers:
            cls = SCORERS[name]
            llm = pool.get(cls.llm_role, models[cls.llm_role]) if cls.uses_llm else None
            scorers[name] = get_scorer(name, llm=llm, **spec.scorer_options.get(name, {}))
    return Stages(explainer, scorers)
