"""The explainer tests use the LLM area's fixtures: the test server and client factory."""

from tests.llm.conftest import fresh_llm_state, make_llm, server  # noqa: F401
