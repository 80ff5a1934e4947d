"""WSGI entry point: `gunicorn wsgi:app`, and `flask --app wsgi ...` for the CLI.

Every process started from here (web workers, `flask dispatch worker` and `scheduler`)
counts its metrics in one folder shared by the machine's processes, PROMETHEUS_MULTIPROC_DIR
(default var/metrics), which must be known before prometheus_client is first imported:
`gridmgmt.kernel.metrics` adds them all up for /metrics.
"""

import os
from pathlib import Path

os.environ.setdefault(
    "PROMETHEUS_MULTIPROC_DIR", str(Path(__file__).resolve().parent / "var" / "metrics")
)
os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

from gridmgmt import create_app  # noqa: E402  (after the metrics folder is known)

app = create_app()
