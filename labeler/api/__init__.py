"""REST API (FastAPI): ``create_app`` in ``labeler.api.app``; ``labeler serve`` runs it."""
