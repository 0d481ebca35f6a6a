"""What the LLM client may spend.

Before a request reaches an endpoint, its worst-case cost (the prompt's estimated tokens plus
every completion token it may write, at list price) is *reserved*; when the answer comes, the
reservation is settled to the real cost.  A request that does not fit in what is left is never
sent, so concurrent calls (many per worker, many workers) cannot overshoot a cap together.  A
cache hit costs nothing and is never refused.  Two caps:

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
    """An account the client reserves from before a call and settles after it."""

    def check(self) -> None:
        """Raise ``BudgetExceeded`` (saying how much was spent of what) when nothing is left."""

    def reserve(self, usd: float) -> None:
        """Hold ``usd`` for one call, or raise ``BudgetExceeded`` when it does not fit."""

    def settle(self, reserved: float, spent: float) -> None:
        """Replace a reservation by what the call really cost (0 when it failed unanswered)."""


class SpendTracker:
    """Money spent (and held for calls in flight) by this process; the process cap."""

    def __init__(self) -> None:
        self.spent_usd = 0.0
        self.reserved_usd = 0.0
        self._lock = threading.Lock()

    def add(self, usd: float) -> None:
        with self._lock:
            self.spent_usd += usd

    def check(self, cap: float | None) -> None:
        if cap is not None and self.spent_usd >= cap:
            raise BudgetExceeded(self._message(cap))

    def reserve(self, usd: float, cap: float | None) -> None:
        with self._lock:
            if cap is not None and (self.spent_usd >= cap or self.spent_usd + self.reserved_usd + usd > cap):
                raise BudgetExceeded(self._message(cap))
            self.reserved_usd += usd

    def settle(self, reserved: float, spent: float) -> None:
        with self._lock:
            self.reserved_usd = max(0.0, self.reserved_usd - reserved)
            self.spent_usd += spent

    def _message(self, cap: float) -> str:
        return (f"LLM budget of ${cap:.4f} reached (spent ${self.spent_usd:.4f} in this process, "
                f"${self.reserved_usd:.4f} held by calls in flight): no new LLM calls are started; finished "
                "work is kept. Raise LABELER_LLM_BUDGET_USD to go on.")


PROCESS_SPEND = SpendTracker()
