"""``Repository``: one database and its data-access objects, one per concern.

    repo = Repository.open(url)            # creates the schema of an empty database
    repo.catalog   models, SAEs, feature statistics          (labeler.db.catalog)
    repo.results   explanations and scores, idempotent       (labeler.db.results)
    repo.reads     feature views, lists, export, report rows (labeler.db.reads)
    repo.search    full-text and semantic search             (labeler.db.search)
    repo.neighbours nearest features by decoder cosine       (labeler.db.neighbours)
    repo.jobs      the job ledger                            (labeler.db.jobs)
    repo.chunks    queued chunks and their leases            (labeler.db.chunks)

A repository is always passed in (the API keeps one in ``app.state``, each worker process and
each CLI command builds its own); nothing in labeler keeps a process-wide one.
"""

from __future__ import annotations

from labeler.db.catalog import Catalog
from labeler.db.chunks import ChunkLedger
from labeler.db.database import Database
from labeler.db.jobs import JobLedger
from labeler.db.neighbours import Neighbours
from labeler.db.reads import Reads
from labeler.db.results import Results
from labeler.db.search import Search


class Repository:
    """Typed access to the labeler database (SQLite file by default, PostgreSQL by URL)."""

    def __init__(self, url: str):
        self.db = Database(url)
        self.catalog = Catalog(self.db)
        self.results = Results(self.db)
        self.reads = Reads(self.db)
        self.search = Search(self.db)
        self.neighbours = Neighbours(self.db)
        self.jobs = JobLedger(self.db)
        self.chunks = ChunkLedger(self.db)

    @classmethod
    def open(cls, url: str) -> "Repository":
        """A repository whose schema exists: an empty database (the SQLite default on first use)
        is migrated to the newest revision; an existing schema is left as it is."""
        repo = cls(url)
        if repo.db.current_revision() is None:
            repo.db.upgrade()
        return repo

    @property
    def url(self) -> str:
        return self.db.url

    def __repr__(self) -> str:
        return f"Repository({self.db.engine.url.render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        self.db.close()
