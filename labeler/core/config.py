"""All settings in one place: environment variables (prefix ``LABELER_``) or a ``.env`` file.

The OpenAI-standard variables ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` are honoured as the
default endpoint for every LLM role; ``LABELER_<ROLE>_BASE_URL`` etc. override per role
(roles: explainer, simulator, scorer).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

LLM_ROLES = ("explainer", "simulator", "scorer")


def _default_data_dir() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "labeler"


class LLMRoleSettings(BaseSettings):
    """Endpoint for one LLM role. Empty base_url and api_key mean: no LLM (offline fallbacks)."""

    model_config = SettingsConfigDict(extra="ignore")

    model: str = "gpt-4o-mini"
    base_url: str | None = None
    api_key: str | None = None

    @property
    def configured(self) -> bool:
        return bool(self.base_url or self.api_key)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LABELER_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # --- storage --------------------------------------------------------------------------
    data_dir: Path = Field(default_factory=_default_data_dir)
    database_url: str | None = None  # default: sqlite file under data_dir

    # --- queue ----------------------------------------------------------------------------
    redis_url: str | None = None  # None: in-process queue, in-process rate limits
    broker_url: str | None = None  # default: redis_url
    result_backend: str | None = None  # default: redis_url
    chunk_size: int = 16  # features per queue task
    # Recovery (labeler.runs.recovery): a worker holds a lease on the chunk it works on, renewed
    # by a heartbeat every third of it; the reaper in every worker re-queues a chunk whose lease
    # lapsed (its worker died) and re-sends a queued chunk nobody claimed within
    # chunk_lost_after_s while the broker queue is empty (its message was lost).  A chunk
    # claimed chunk_max_claims times without finishing has its pending features failed.
    chunk_lease_s: float = 60.0
    reaper_interval_s: float = 10.0
    chunk_lost_after_s: float = 60.0
    chunk_max_claims: int = 3
    # The broker's own redelivery of an unacknowledged chunk (a backstop behind the leases).
    # Default: chunk_size x feature_estimate_s x 3, at least 2 leases (see queue.visibility_timeout).
    visibility_timeout_s: int | None = None
    feature_estimate_s: float = 20.0  # expected seconds of one feature of a chunk (sync LLM calls)

    # --- compute --------------------------------------------------------------------------
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "float32"  # float32 | bfloat16 | float16

    # --- LLM (defaults for every role; per-role overrides below) --------------------------
    llm_model: str = "gpt-4o-mini"
    llm_base_url: str | None = Field(default=None)
    llm_api_key: str | None = Field(default=None)
    explainer_model: str | None = None
    explainer_base_url: str | None = None
    explainer_api_key: str | None = None
    simulator_model: str | None = None
    simulator_base_url: str | None = None
    simulator_api_key: str | None = None
    scorer_model: str | None = None
    scorer_base_url: str | None = None
    scorer_api_key: str | None = None

    llm_concurrency: int = 32  # requests in flight per process
    llm_rpm: int | None = None  # requests per minute, shared through Redis when configured
    llm_tpm: int | None = None  # tokens per minute, likewise
    llm_timeout_s: float = 60.0
    llm_max_retries: int = 6
    llm_cache: bool = True
    llm_cache_path: Path | None = None  # default: data_dir / "llm_cache.sqlite"
    # Where the response cache lives when not in that file: redis://... or a database URL
    # (e.g. the LABELER_DATABASE_URL of a PostgreSQL shared by every worker).
    llm_cache_url: str | None = None
    llm_budget_usd: float | None = None  # per job (every worker spends from the job's account)
    llm_mode: str = "sync"  # sync | batch (OpenAI Batch API: half price, answers within 24 h); per job: --llm-mode
    llm_batch_collect_s: float = 2.0  # a batch takes the requests of this many seconds after its first
    llm_batch_poll_s: float = 30.0  # seconds between looks at a running batch
    llm_reasoning_effort: str | None = "low"  # sent to reasoning models (o1/o3/o4/gpt-5); "" sends none
    llm_reasoning_headroom_tokens: int = 1024  # reasoning models: max_completion_tokens = max_tokens + this
    llm_prices_file: Path | None = None  # extra price table (JSON/YAML), merged over the builtin

    # --- API -------------------------------------------------------------------------------
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_write_key: str | None = None  # required for write endpoints when set
    api_read_key: str | None = None  # when set, reads need it too
    # Request-size caps (413 above them): a body's bytes, and the features one job may name
    # (a range is counted, never built, so "0:30000000" costs nothing to refuse).
    api_max_body_bytes: int = 1_048_576
    api_max_job_features: int = 1_048_576

    # --- paths ------------------------------------------------------------------------------
    prompts_dir: Path | None = None  # default: the repository's prompts/ folder

    def llm_role(self, role: str) -> LLMRoleSettings:
        """Resolve one role's endpoint: per-role value, else LABELER_LLM_*, else OPENAI_*."""
        if role not in LLM_ROLES:
            raise ValueError(f"unknown LLM role {role!r}; expected one of {LLM_ROLES}")
        base_url = (
            getattr(self, f"{role}_base_url")
            or self.llm_base_url
            or os.environ.get("OPENAI_BASE_URL")
        )
        api_key = (
            getattr(self, f"{role}_api_key")
            or self.llm_api_key
            or os.environ.get("OPENAI_API_KEY")
        )
        model = getattr(self, f"{role}_model") or self.llm_model
        return LLMRoleSettings(model=model, base_url=base_url, api_key=api_key)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'labeler.db').resolve()}"

    @property
    def resolved_broker_url(self) -> str | None:
        return self.broker_url or self.redis_url

    @property
    def resolved_result_backend(self) -> str | None:
        return self.result_backend or self.redis_url

    @property
    def resolved_llm_cache_path(self) -> Path:
        return self.llm_cache_path or (self.data_dir / "llm_cache.sqlite")

    @property
    def resolved_prompts_dir(self) -> Path:
        if self.prompts_dir:
            return self.prompts_dir
        return Path(__file__).resolve().parents[2] / "prompts"

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


@lru_cache
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    """Forget cached settings (tests change environment variables)."""
    get_settings.cache_clear()
