"""A job's LLM budget, shared by every worker of the job through its row in the database.

Each answered LLM call adds its cost to ``job.spent_usd`` in one atomic update, whichever
process made it; before a call starts, the job's spend is compared with its budget (read again
at most every ``refresh_s`` seconds, so other workers' spending is seen within that time).
A budget can be overshot by the calls already in flight when it is reached, never by more.
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

    def charge(self, usd: float) -> None:
        if usd <= 0:
            return
        spent = self.ledger.charge(self.job_id, usd)
        with self._lock:
            self._spent = max(self._spent, spent)
