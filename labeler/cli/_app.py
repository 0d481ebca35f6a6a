"""The Typer application shared by every command module."""

import typer

app = typer.Typer(
    name="labeler",
    help="Automated feature labeling: collect -> explain -> score -> store -> serve.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
