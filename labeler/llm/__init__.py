"""LLM access: one client for every OpenAI-compatible endpoint, plus our own test server.

See ``labeler.llm.client`` (``get_llm``, ``LLMClient``) and ``labeler.testing.llm_server``.
"""

from labeler.llm.budget import PROCESS_SPEND, Budget, SpendTracker
from labeler.llm.client import LLMClient, get_llm, reset_process_state
from labeler.llm.types import LLMResponse, TokenLogprob
from labeler.records import LLMUsage

__all__ = ["get_llm", "LLMClient", "LLMResponse", "TokenLogprob", "LLMUsage", "SpendTracker",
           "PROCESS_SPEND", "Budget", "reset_process_state"]
