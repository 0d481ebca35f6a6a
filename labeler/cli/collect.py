"""CLI commands for this stage (see docs/ARCHITECTURE.md for ownership)."""

from labeler.cli._app import app  # noqa: F401
