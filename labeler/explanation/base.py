"""Explainer base classes: option handling, the LLM round trip, retries on unusable answers."""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from labeler.core.errors import ConfigError, LLMError
from labeler.core.prompts import PromptTemplate, load_prompt
from labeler.explanation import formatting as fmt
from labeler.llm.types import RejectedAnswer
from labeler.records import ActivationExample, Explanation, FeatureRecord, LLMUsage

DEFAULT_SAMPLING = "mixed"


class Explainer:
    """``await explainer.explain(record) -> Explanation``; reads only ``record.select("train", ...)``."""

    name: ClassVar[str] = ""
    needs_llm: ClassVar[bool] = True
    defaults: ClassVar[dict[str, Any]] = {}
    # Options that take an LLM client of another role, filled in by the runner when that role
    # has an endpoint (e.g. best-of-N's simulator): option name -> role.
    llm_options: ClassVar[dict[str, str]] = {}

    def __init__(self, llm: Any = None, **options: Any):
        defaults = self.option_defaults()
        unknown = sorted(set(options) - set(defaults))
        if unknown:
            raise ConfigError(
                f"explainer {self.name!r} has no option(s) {', '.join(unknown)} "
                f"(options: {', '.join(sorted(defaults)) or 'none'})"
            )
        self.llm = llm
        self.options: dict[str, Any] = {**defaults, **options}

    @classmethod
    def option_defaults(cls) -> dict[str, Any]:
        return dict(cls.defaults)

    async def explain(self, record: FeatureRecord) -> Explanation:
        raise NotImplementedError

    @property
    def config(self) -> dict[str, Any]:
        """The options that shape the answer (part of the database's idempotency key)."""
        return {k: v for k, v in sorted(self.options.items()) if isinstance(v, (str, int, float, bool, type(None), dict, list))}


E = TypeVar("E", bound=type[Explainer])

EXPLAINERS: dict[str, type[Explainer]] = {}
"""Every explainer by name; a class joins with ``@register_explainer``."""


def register_explainer(cls: E) -> E:
    if not cls.name or cls.name in EXPLAINERS:
        raise ValueError(f"explainer name {cls.name!r} is empty or taken")
    EXPLAINERS[cls.name] = cls
    return cls


class LLMExplainer(Explainer):
    """Render a versioned prompt from train examples, ask the LLM, parse one short phrase.

    Unusable answers (empty, garbage, cut off, no final line) are asked again up to ``retries``
    times, each attempt with its own cache entry; then the result is ``failed=True`` with the
    reason and the raw text.  ``LLMError`` never escapes; ``BudgetExceeded`` does (a clean stop).
    """

    prompt_name: ClassVar[str] = ""
    common_defaults: ClassVar[dict[str, Any]] = {
        "n_examples": 10, "context_tokens": 32, "max_tokens": 60, "temperature": 0.0,
        "retries": 2, "max_chars": 200, "prompt_version": None,
        # which train examples are shown (formatting.pick_train); "mixed" won on the eval
        # harness (README, "Explainer sampling")
        "sampling": DEFAULT_SAMPLING, "mixed_top": 4, "mixed_random": 2,
        "mark_threshold": None,  # None: the prompt version's (v2: 0.3 of the example's max)
    }

    def __init__(self, llm: Any = None, **options: Any):
        super().__init__(llm, **options)
        if self.options["sampling"] not in fmt.SAMPLINGS:
            raise ConfigError(f"explainer option sampling={self.options['sampling']!r}: choose one of "
                              f"{', '.join(fmt.SAMPLINGS)}")
        threshold = self.options["mark_threshold"]
        if threshold is not None and not (isinstance(threshold, (int, float)) and 0 < threshold <= 1):
            raise ConfigError(f"explainer option mark_threshold={threshold!r} must be in (0, 1]")
        self.prompt: PromptTemplate = load_prompt(self.prompt_name, self.options["prompt_version"])
        self.style = fmt.Style.from_meta(self.prompt.meta, threshold)

    @classmethod
    def option_defaults(cls) -> dict[str, Any]:
        return {**cls.common_defaults, **cls.defaults}

    # -- what subclasses provide --
    def select(self, record: FeatureRecord) -> list[ActivationExample]:
        o = self.options
        return fmt.pick_train(record, int(o["n_examples"]), o["sampling"], mixed_top=int(o["mixed_top"]),
                              mixed_random=int(o["mixed_random"]))

    def variables(self, record: FeatureRecord, shown: list[ActivationExample]) -> dict[str, Any]:
        raise NotImplementedError

    def shown_windows(self, record: FeatureRecord, shown: list[ActivationExample]) -> list[int]:
        return [e.window for e in shown]

    def parse(self, text: str) -> tuple[str | None, str]:
        return fmt.clean_explanation(text, int(self.options["max_chars"]))

    # -- shared helpers --
    def views(self, record: FeatureRecord, shown: list[ActivationExample]) -> list[dict[str, str]]:
        """Each shown example as the prompt version shows it (``text``, ``levels``, ``plain``,
        ``pairs``; see ``formatting.show``)."""
        scale = fmt.activation_scale(record, shown)
        return [fmt.show(*fmt.crop(e, self.options["context_tokens"]), scale, self.style) for e in shown]

    def highlighted(self, record: FeatureRecord, shown: list[ActivationExample]) -> list[str]:
        return [v["text"] for v in self.views(record, shown)]

    def messages(self, record: FeatureRecord) -> tuple[list[dict[str, str]], list[ActivationExample]]:
        shown = self.select(record)
        return self.prompt.render(**self.variables(record, shown)), shown

    async def explain(self, record: FeatureRecord, *, cache_salt: str | None = None) -> Explanation:
        messages, shown = self.messages(record)
        exp = Explanation(
            feature=record.feature, text="", explainer=self.name,
            llm_model=getattr(self.llm, "model", None), prompt_name=self.prompt.name,
            prompt_version=self.prompt.version, prompt_hash=self.prompt.hash, usage=LLMUsage(),
            example_windows=self.shown_windows(record, shown), config=self.config,
        )
        if not shown:
            exp.failed, exp.error = True, "no activating train examples to show"
            return exp
        reason = ""

        def validate(resp: Any) -> None:
            if resp.truncated:
                raise ValueError(f"answer cut off at max_tokens={self.options['max_tokens']} (finish_reason=length)")
            text, why = self.parse(resp.text)
            if not text:
                raise ValueError(why)

        for attempt in range(int(self.options["retries"]) + 1):
            salt = cache_salt if attempt == 0 else f"{cache_salt or ''}|retry{attempt}"
            try:
                resp = await self.llm.chat(messages, max_tokens=int(self.options["max_tokens"]),
                                           temperature=float(self.options["temperature"]), cache_salt=salt,
                                           validate=validate)
            except LLMError as e:  # the client already retried transient failures
                exp.failed, exp.error, exp.raw = True, f"LLM call failed ({e.kind}): {e}", e.raw
                return exp
            except RejectedAnswer as rejected:  # unusable: never cached, asked again
                exp.usage.add(rejected.response.usage)
                exp.raw = rejected.response.text
                reason = str(rejected.error)
                continue
            exp.usage.add(resp.usage)
            exp.raw = resp.text
            exp.text = self.parse(resp.text)[0]
            return exp
        exp.failed = True
        exp.error = f"unparseable answer after {int(self.options['retries']) + 1} attempt(s): {reason}"
        return exp
