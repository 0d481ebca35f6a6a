"""Migrations: up from an empty database, no drift between migration and models, down again."""

from __future__ import annotations

import sqlalchemy as sa
from typer.testing import CliRunner

from labeler.db import Repository
from labeler.db.engine import head_revision
from labeler.db.models import metadata

TABLES = {"subject_model", "sae", "feature", "explanation", "score", "explanation_embedding", "job",
          "job_feature", "llm_usage"}


def test_upgrade_from_empty_matches_models(database_url):
    repo = Repository(database_url)
    assert repo.current_revision() is None
    repo.upgrade()
    assert repo.current_revision() == head_revision() == "0002"
    names = set(sa.inspect(repo.engine).get_table_names())
    assert TABLES <= names

    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with repo.engine.connect() as c:
        diff = compare_metadata(MigrationContext.configure(c), metadata)
    # The full-text structures are dialect-specific and deliberately outside the models.
    diff = [d for d in diff if "fts" not in repr(d)]
    assert diff == [], f"migration and models disagree: {diff}"

    repo.upgrade()  # idempotent
    assert repo.current_revision() == "0002"
    repo.close()


def test_full_text_structures_exist(database_url):
    repo = Repository(database_url)
    repo.upgrade()
    with repo.engine.connect() as c:
        if repo.dialect == "sqlite":
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
    repo.upgrade()
    from labeler.db.engine import downgrade

    downgrade(repo.engine, "base")
    assert repo.current_revision() is None
    assert not (TABLES & set(sa.inspect(repo.engine).get_table_names()))
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
    assert "0002" in res.output
    res = runner.invoke(app, ["db", "current", "--url", url])
    assert "current: 0002" in res.output and "up to date" in res.output


def test_default_url_creates_parent_dir(isolated_settings):
    repo = Repository()
    repo.upgrade()
    assert (isolated_settings / "labeler.db").exists()
    with repo.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
    repo.close()
