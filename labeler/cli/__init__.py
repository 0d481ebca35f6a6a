"""Command line: ``labeler <command>``. One module per stage registers its commands."""

from __future__ import annotations

import sys

from rich.console import Console

from labeler.cli._app import app
from labeler.core.errors import LabelerError

# Importing the modules registers their commands on ``app``.
from labeler.cli import collect as _collect  # noqa: F401,E402
from labeler.cli import llm as _llm  # noqa: F401,E402
from labeler.cli import jobs as _jobs  # noqa: F401,E402
from labeler.cli import db as _db  # noqa: F401,E402
from labeler.cli import report as _report  # noqa: F401,E402
from labeler.cli import export as _export  # noqa: F401,E402
from labeler.cli import steer as _steer  # noqa: F401,E402


@app.command()
def version() -> None:
    """Print labeler's version."""
    import labeler

    print(labeler.__version__)


@app.command("settings")
def show_settings() -> None:
    """Show the effective settings (secrets masked)."""
    import json

    from labeler.core.config import get_settings

    data = get_settings().model_dump(mode="json")
    for k in data:
        if k.endswith("api_key") or k.endswith("_key"):
            data[k] = "***" if data[k] else None
    print(json.dumps(data, indent=2))


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one clear message and exit non-zero, no traceback."""
    try:
        app(args=argv, standalone_mode=True)
    except LabelerError as e:
        Console(stderr=True).print(f"[bold red]error:[/] {e}", highlight=False)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        Console(stderr=True).print("[yellow]interrupted[/]: finished work is saved; run the same command again to resume")
        sys.exit(130)


if __name__ == "__main__":  # python -m labeler.cli
    main()
