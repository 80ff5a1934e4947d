"""WSGI entry point: `gunicorn wsgi:app`, and `flask --app wsgi ...` for the CLI."""

from gridmgmt import create_app

app = create_app()
