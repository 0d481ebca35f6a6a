"""User-facing errors. The CLI prints these without a traceback and exits non-zero."""


class LabelerError(Exception):
    """An error caused by input or configuration that the user can fix; the message says how."""

    exit_code = 2


class ConfigError(LabelerError):
    """Bad settings or option values."""


class InputError(LabelerError):
    """Unreadable, empty, corrupt or mismatched input files (corpus, SAE, store)."""


class StoreMismatchError(InputError):
    """An existing store was written by another configuration."""


class BudgetExceeded(LabelerError):
    """The configured LLM spending cap was reached; no new LLM work is started."""

    exit_code = 3


class LLMError(Exception):
    """An LLM call failed after retries, or its answer could not be parsed."""

    def __init__(self, message: str, *, raw: str | None = None, kind: str = "error"):
        super().__init__(message)
        self.raw = raw
        self.kind = kind  # e.g. "http_429", "http_500", "timeout", "unparseable", "budget"
