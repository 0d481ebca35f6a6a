"""A job's LLM budget, shared by every worker of the job through its row in the database.

Before an LLM call starts, its worst-case cost is added to ``job.spent_usd`` in one atomic,
conditional update (only if it still fits under ``job.budget_usd``), whichever worker makes it;
when the answer comes, the reservation is replaced by the real cost.  So every worker of the
job spends from one account and together they never go past the budget (unless a prompt has
more tokens than estimated).  ``check`` (is anything left?) reads the row at most every
``refresh_s`` seconds.
"""

from __future__ import annotations

import threading
import time

from labeler.core.errors import BudgetExceeded
from labeler.db.jobs import JobLedger


class JobBudget:
    """``labeler.llm.budget.Budget`` for one job."""

    def __init__(self, ledger: JobLedger, job_id: int, *, refresh_s: float = 0.5):
        self.ledger = ledger
        self.job_id = job_id
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._cap, self._spent = ledger.budget(job_id)
        self._read_at = time.monotonic()
        # Without a budget there is nothing to hold back: calls only record what they cost.
        self._holds = self._cap is not None

    @property
    def spent_usd(self) -> float:
        return self._spent

    def check(self) -> None:
        now = time.monotonic()
        if self._cap is not None and now - self._read_at >= self.refresh_s:
            cap, spent = self.ledger.budget(self.job_id)
            with self._lock:
                self._cap, self._spent, self._read_at = cap, max(self._spent, spent), now
        if self._cap is not None and self._spent >= self._cap:
            raise BudgetExceeded(
                f"job {self.job_id} reached its LLM budget of ${self._cap:.4f} (spent ${self._spent:.4f} by all "
                f"its workers): no new LLM calls are started; finished work is kept. `labeler submit --resume "
                f"{self.job_id}` with a higher LABELER_LLM_BUDGET_USD (or --budget-usd) goes on.")

    def reserve(self, usd: float) -> None:
        if not self._holds:
            return
        spent = self.ledger.reserve(self.job_id, usd)
        with self._lock:
            if spent is None:  # did not fit: the account is as good as spent for this call
                self._read_at = 0.0
                raise BudgetExceeded(
                    f"job {self.job_id} reached its LLM budget of ${self._cap:.4f}: the next call (up to "
                    f"${usd:.4f}) does not fit in what is left; no new LLM calls are started and finished work "
                    f"is kept. `labeler submit --resume {self.job_id}` with a higher LABELER_LLM_BUDGET_USD (or "
                    "--budget-usd) goes on.")
            self._spent = max(self._spent, spent)

    def settle(self, reserved: float, spent: float) -> None:
        change = spent - reserved if self._holds else spent
        if change == 0:
            return
        total = self.ledger.charge(self.job_id, change)
        with self._lock:
            self._spent = total
