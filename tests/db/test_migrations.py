"""Migrations: up from an empty database, no drift between migration and models, down again."""

from __future__ import annotations

import sqlalchemy as sa
from typer.testing import CliRunner

from labeler.db import Repository
from labeler.db.engine import head_revision
from labeler.db.models import metadata

TABLES = {"subject_model", "sae", "feature", "explanation", "score", "explanation_embedding", "job",
          "job_feature", "llm_usage", "feature_neighbours", "job_chunk"}


HEAD = "0009"


def test_upgrade_from_empty_matches_models(database_url):
    repo = Repository(database_url)
    assert repo.db.current_revision() is None
    repo.db.upgrade()
    assert repo.db.current_revision() == head_revision() == HEAD
    names = set(sa.inspect(repo.db.engine).get_table_names())
    assert TABLES <= names

    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with repo.db.engine.connect() as c:
        diff = compare_metadata(MigrationContext.configure(c), metadata)
    # The full-text structures are dialect-specific and deliberately outside the models.
    diff = [d for d in diff if "fts" not in repr(d)]
    assert diff == [], f"migration and models disagree: {diff}"

    repo.db.upgrade()  # idempotent
    assert repo.db.current_revision() == HEAD
    repo.close()


def test_full_text_structures_exist(database_url):
    repo = Repository(database_url)
    repo.db.upgrade()
    with repo.db.engine.connect() as c:
        if repo.db.dialect == "sqlite":
            kinds = dict(c.execute(sa.text("SELECT name, type FROM sqlite_master WHERE name LIKE 'explanation_fts%'")).all())
            assert kinds["explanation_fts"] == "table"
            assert {"explanation_fts_ai", "explanation_fts_ad", "explanation_fts_au"} <= set(kinds)
        else:
            idx = c.execute(sa.text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_explanation_text_fts'")).scalar_one()
            assert "gin" in idx.lower() and "text_fts" in idx
            generated = c.execute(sa.text(
                "SELECT generation_expression FROM information_schema.columns "
                "WHERE table_name = 'explanation' AND column_name = 'text_fts'")).scalar_one()
            assert "to_tsvector" in generated
    repo.close()


def test_downgrade_to_empty(database_url):
    repo = Repository(database_url)
    repo.db.upgrade()
    from labeler.db.engine import downgrade

    downgrade(repo.db.engine, "base")
    assert repo.db.current_revision() is None
    assert not (TABLES & set(sa.inspect(repo.db.engine).get_table_names()))
    repo.close()


def test_cli_upgrade_and_current(tmp_path, monkeypatch):
    from labeler.cli import app

    monkeypatch.chdir(tmp_path)  # works from any directory: no alembic.ini needed
    url = f"sqlite:///{tmp_path / 'sub' / 'x.db'}"
    runner = CliRunner()
    res = runner.invoke(app, ["db", "current", "--url", url])
    assert res.exit_code == 0, res.output
    assert "none" in res.output
    res = runner.invoke(app, ["db", "upgrade", "--url", url])
    assert res.exit_code == 0, res.output
    assert HEAD in res.output
    res = runner.invoke(app, ["db", "current", "--url", url])
    assert f"current: {HEAD}" in res.output and "up to date" in res.output


def test_default_url_creates_parent_dir(isolated_settings):
    from labeler.core.config import get_settings

    repo = Repository.open(get_settings().resolved_database_url)  # the default: a SQLite file in data_dir
    assert repo.db.current_revision() == HEAD
    assert (isolated_settings / "labeler.db").exists()
    with repo.db.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
    repo.close()
