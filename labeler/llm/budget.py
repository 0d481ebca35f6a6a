"""What the LLM client may spend.

Two caps, both checked before every request that reaches an endpoint (a cache hit costs
nothing and is never refused):

- the process cap: ``LLMClient(budget_usd=..., spend=SpendTracker())`` for direct use of the
  client (benchmarks, ``labeler llm-probe``);
- a ``Budget`` handed in with ``client.with_budget(budget)``: the job runner gives each job's
  clients the job's budget (``labeler.runs.budget.JobBudget``), which lives in the job's row of
  the database, so every worker of the job spends from the same account.
"""

from __future__ import annotations

import threading
from typing import Protocol

from labeler.core.errors import BudgetExceeded


class Budget(Protocol):
    """An account the client charges; ``check`` raises ``BudgetExceeded`` once it is spent."""

    def check(self) -> None:
        """Raise ``BudgetExceeded`` (saying how much was spent of what) when no new call may start."""

    def charge(self, usd: float) -> None:
        """Record the cost of one answered call."""


class SpendTracker:
    """Money spent by this process on LLM calls (the process cap is checked against it)."""

    def __init__(self) -> None:
        self.spent_usd = 0.0
        self._lock = threading.Lock()

    def add(self, usd: float) -> None:
        with self._lock:
            self.spent_usd += usd

    def check(self, cap: float | None) -> None:
        if cap is not None and self.spent_usd >= cap:
            raise BudgetExceeded(
                f"LLM budget of ${cap:.4f} reached (spent ${self.spent_usd:.4f} in this process): "
                "no new LLM calls are started; finished work is kept. Raise LABELER_LLM_BUDGET_USD to go on."
            )


PROCESS_SPEND = SpendTracker()
