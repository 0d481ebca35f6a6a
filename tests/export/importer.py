"""Neuronpedia's import, re-done with the statements it runs, against a real PostgreSQL.

- metadata files (release, model, sourceset, source): Prisma ``create`` with the line as data,
  after a ``findUnique`` (an existing row is kept).  Prisma refuses keys that are not fields
  ("Unknown argument") and null for a Json field; here the line goes through
  ``jsonb_populate_record`` of the table, which casts every value to its column's type.
- config files: Prisma ``upsert`` by name.
- bulk files (features, activations, explanations; explanation scores likewise): the column list
  of the *first* line, typed from information_schema, then
  ``INSERT INTO "T" (...) SELECT ... FROM jsonb_to_recordset($1::jsonb) AS t(...) ON CONFLICT DO NOTHING``
  in chunks of 65,000 lines, each statement its own transaction.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import psycopg

CHUNK = 65_000
META_KEYS = {"SourceRelease": ("name",), "Model": ("id",), "SourceSet": ("modelId", "name"),
             "Source": ("modelId", "id")}


def connect(sqlalchemy_url: str) -> psycopg.Connection:
    return psycopg.connect(sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


def create_schema(conn: psycopg.Connection, creator_id: str) -> None:
    conn.execute((Path(__file__).with_name("neuronpedia_ddl.sql")).read_text())
    conn.execute('INSERT INTO "User" ("id", "name", "emailUnsubscribeCode", "bot", "admin") '
                 "VALUES (%s, 'bot', 'unsubscribe-bot', true, true)", (creator_id,))


def columns(conn: psycopg.Connection, table: str) -> dict[str, str]:
    rows = conn.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s",
                        (table,)).fetchall()
    return dict(rows)


class PrismaRefusal(Exception):
    """What Prisma's validation would throw before any SQL runs."""


def prisma_checked(conn: psycopg.Connection, table: str, line: dict) -> list[str]:
    cols = columns(conn, table)
    unknown = sorted(set(line) - set(cols))
    if unknown:
        raise PrismaRefusal(f"Unknown argument `{unknown[0]}` for {table}")
    nulls = [k for k, v in line.items() if v is None and cols[k] == "jsonb"]
    if nulls:
        raise PrismaRefusal(f"Argument `{nulls[0]}` must not be null (Json field of {table})")
    return list(line)


def _select(table: str, keys: list[str]) -> str:
    quoted = ", ".join(f'"{k}"' for k in keys)
    return f'INSERT INTO "{table}" ({quoted}) SELECT {quoted} FROM jsonb_populate_record(NULL::"{table}", %s::jsonb)'


def create_if_absent(conn: psycopg.Connection, table: str, line: dict) -> bool:
    """findUnique, then create; True when a row was created."""
    keys = prisma_checked(conn, table, line)
    where = " AND ".join(f'"{k}" = %s' for k in META_KEYS[table])
    if conn.execute(f'SELECT 1 FROM "{table}" WHERE {where}', [line[k] for k in META_KEYS[table]]).fetchone():
        return False
    conn.execute(_select(table, keys), (json.dumps(line),))
    return True


def upsert_by_name(conn: psycopg.Connection, table: str, line: dict) -> None:
    keys = prisma_checked(conn, table, line)
    update = ", ".join(f'"{k}" = EXCLUDED."{k}"' for k in keys if k != "name")
    conn.execute(_select(table, keys) + f' ON CONFLICT ("name") DO UPDATE SET {update}', (json.dumps(line),))


def import_jsonl(conn: psycopg.Connection, table: str, text: str) -> None:
    """Neuronpedia's importJsonlString."""
    text = text.replace("\\u0000", " ")
    lines = [line for line in text.split("\n") if line.strip()]
    if not lines:
        return
    wanted = list(json.loads(lines[0]))
    typed = conn.execute(
        "SELECT column_name, CASE WHEN data_type = 'ARRAY' THEN udt_name::regtype::text || '[]' "
        "WHEN data_type = 'USER-DEFINED' THEN udt_name ELSE data_type END "
        "FROM information_schema.columns WHERE table_name = %s AND column_name = ANY(%s) ORDER BY ordinal_position",
        (table, wanted)).fetchall()
    names = ", ".join(f'"{c}"' for c, _ in typed)
    record = ", ".join(f'"{c}" {t}' for c, t in typed)
    sql = (f'INSERT INTO "{table}" ({names}) SELECT {names} FROM jsonb_to_recordset(%s::jsonb) AS t({record}) '
           "ON CONFLICT DO NOTHING")
    for start in range(0, len(lines), CHUNK):
        conn.execute(sql, ("[" + ",".join(lines[start:start + CHUNK]) + "]",))


def read_lines(path: Path) -> list[dict]:
    raw = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
    return [json.loads(line) for line in raw.splitlines() if line.strip()]


BULK = (("features", "Neuron"), ("activations", "Activation"), ("explanations", "Explanation"),
        ("explanation_scores", "ExplanationScore"))
CONFIG = (("explanation_model_type", "ExplanationModelType"), ("explanation_type", "ExplanationType"),
          ("explanation_score_model", "ExplanationScoreModel"), ("explanation_score_type", "ExplanationScoreType"))


def import_export(conn: psycopg.Connection, out: Path, model_id: str, source_id: str) -> None:
    """The whole import, in Neuronpedia's order: config, release, model, sourceset, source, then
    the batch files of each folder in the lexicographic order its bucket listing gives."""
    for name, table in CONFIG:
        path = out / "config" / f"{name}.jsonl"
        for line in read_lines(path) if path.exists() else []:
            upsert_by_name(conn, table, line)
    src = out / model_id / source_id
    for name, table in (("release", "SourceRelease"), ("model", "Model"), ("sourceset", "SourceSet"),
                        ("source", "Source")):
        path = src / f"{name}.jsonl"
        for line in read_lines(path) if path.exists() else []:
            create_if_absent(conn, table, line)
    for folder, table in BULK:
        for path in sorted((src / folder).glob("*.jsonl.gz"), key=lambda p: p.name):
            import_jsonl(conn, table, gzip.decompress(path.read_bytes()).decode())
