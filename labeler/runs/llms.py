"""The explainer and scorers of a label spec, wired to LLM clients from one pool.

A pool belongs to one event loop (an LLM client's asyncio primitives are bound to the loop
that made it) and is shared by every chunk that loop runs, so HTTP connections to an endpoint
stay open from one chunk to the next.  Whoever owns the loop closes the pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from labeler.core.config import Settings
from labeler.runs.spec import LabelSpec


class LLMPool:
    """LLM clients by (role, model, mode); None for a role without an endpoint.  A job's budget
    replaces the process cap: ``get(..., budget=)`` hands out the pooled client charging it."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._clients: dict[tuple[str, str | None, str], Any] = {}

    def get(self, role: str, model: str | None = None, *, mode: str = "sync", budget: Any = None) -> Any:
        from labeler.llm import get_llm

        key = (role, model, mode)
        if key not in self._clients:
            self._clients[key] = get_llm(role, self.settings, model=model, mode=mode)
        client = self._clients[key]
        return client.with_budget(budget) if client is not None and budget is not None else client

    async def aclose(self) -> None:
        clients, self._clients = [c for c in self._clients.values() if c is not None], {}
        for client in clients:
            await client.aclose()


@dataclass
class Stages:
    explainer: Any  # None when the job does not explain
    scorers: dict[str, Any]  # name -> scorer; empty when the job does not score


def build_stages(spec: LabelSpec, pool: LLMPool, *, explain: bool, score: bool, mode: str = "sync",
                 budget: Any = None, subject: Callable[[], Any] | None = None) -> Stages:
    """The job's explainer and scorers, their clients in ``mode`` (sync | batch) charging ``budget``.
    ``subject()`` gives the store's subject model to a scorer class that sets
    ``needs_subject_model`` (called only then: loading it takes time)."""
    from labeler.explanation import EXPLAINERS, get_explainer
    from labeler.scoring import get_scorer, scorer_class

    models = {"explainer": spec.explainer_model, "simulator": spec.simulator_model, "scorer": spec.scorer_model}

    def client(role: str, model: str | None) -> Any:
        return pool.get(role, model, mode=mode, budget=budget)

    explainer = None
    if explain:
        cls = EXPLAINERS[spec.explainer_base]
        llm = client("explainer", spec.explainer_model) if cls.needs_llm else None
        options = dict(spec.explainer_options)
        for option, role in cls.llm_options.items():  # e.g. best-of-N ranks with the simulator
            client_of_role = client(role, models[role])
            if option not in options and client_of_role is not None:
                options[option] = client_of_role
        explainer = get_explainer(spec.explainer, llm=llm, **options)
    scorers: dict[str, Any] = {}
    if score:
        for name in spec.scorers:
            cls = scorer_class(name)
            llm = client(cls.llm_role, models[cls.llm_role]) if cls.uses_llm else None
            needs = {"subject": subject() if subject else None} if getattr(cls, "needs_subject_model", False) else {}
            scorers[name] = get_scorer(name, llm=llm, **needs, **spec.scorer_options.get(name, {}))
    return Stages(explainer, scorers)
