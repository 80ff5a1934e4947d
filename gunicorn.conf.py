"""Gunicorn settings of the web process (`gunicorn wsgi:app` reads this file from here).

`make run` and `bench/intake.py` use it as it is; GRIDMGMT_WEB_WORKERS and
GRIDMGMT_WEB_THREADS override the sizes. Chosen by measurement on the 2-core machine (README,
"Performance"): the work is CPU-bound Python, so a worker per core plus one, each with two
threads (one for a slow page while the other serves), and every worker on its own listening
socket (SO_REUSEPORT) so that the kernel spreads the connections. Without that, one worker
can take every keep-alive connection while the others idle. The price: a second server
started on the same port by the same user shares it instead of failing (`scripts/run.sh`
checks the port first), and the master holds no socket (no USR2 upgrade in place).

Logs: `RedactingLogger` writes the access log (`--access-logfile`) and the error log with the
value of every `api_key=`, `token=` and `password=` of a URL (also `access_token=`,
`new_password=`... and their percent-encoded names) replaced by `[redacted]`: an Open311
client may send its key in the query string of a GET, and a log file outlives the request.
"""

import logging
import os
import re

from gunicorn.glogging import Logger

# A secret-bearing parameter of a URL (a query string, a request line, a Referer) and its value.
SECRET_PARAMETER = re.compile(
    r"(?i)((?:^|[?&;\s])[\w.%-]*?(?:api(?:_|-|%5f|%2d)key|token|password|passwd)=)[^&;#\s\"']*"
)
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """`text` with the value of every secret-bearing URL parameter replaced by `[redacted]`."""
    if "=" not in text:
        return text
    return SECRET_PARAMETER.sub(lambda m: m.group(1) + REDACTED, text)


class RedactFilter(logging.Filter):
    """Redacts a finished log record (the error log may quote a request's URI)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Replace the record's message by its redacted text."""
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


class RedactingLogger(Logger):
    """Gunicorn's logger, but no secret of a URL reaches the access or the error log."""

    def setup(self, cfg: object) -> None:
        """Gunicorn's set-up, then the redacting filter on the error log."""
        super().setup(cfg)
        if not any(isinstance(f, RedactFilter) for f in self.error_log.filters):
            self.error_log.addFilter(RedactFilter())

    def atoms(self, resp: object, req: object, environ: dict, request_time: object) -> dict:
        """The access log's fields, every text one redacted (the request line `r`, the query
        `q`, the Referer `f`, and the `{...}i`/`{...}e` headers and environ values)."""
        atoms = super().atoms(resp, req, environ, request_time)
        return {
            name: redact(value) if isinstance(value, str) else value
            for name, value in atoms.items()
        }


bind = os.environ.get("GRIDMGMT_WEB_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GRIDMGMT_WEB_WORKERS", (os.cpu_count() or 1) + 1))
threads = int(os.environ.get("GRIDMGMT_WEB_THREADS", 2))
worker_class = "gthread"
reuse_port = True
keepalive = 5
timeout = 60
logger_class = RedactingLogger


def post_worker_init(worker: object) -> None:
    """Hide what the app loaded from the garbage collector, and collect less often
    (gridmgmt.kernel.collector). Measured: full collections took 50-190 ms before the freeze,
    a tail of every latency figure."""
    from gridmgmt.kernel.collector import settle

    settle()


# Metrics (gridmgmt.kernel.metrics): every worker, and the RQ worker and scheduler, count in
# one folder (prometheus-client's multiprocess mode); wsgi.py sets the same default.
os.environ.setdefault(
    "PROMETHEUS_MULTIPROC_DIR", os.path.join(os.path.dirname(__file__), "var", "metrics")
)


def on_starting(server: object) -> None:
    """Create the metrics folder and remove the files of processes that are gone (the RQ
    worker's and scheduler's, still running, stay: they share the folder)."""
    folder = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):
        pid = name.rsplit("_", 1)[-1].removesuffix(".db")
        if not (name.endswith(".db") and pid.isdigit()):
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:  # gone: its counts started before this server
            os.remove(os.path.join(folder, name))
        except PermissionError:  # alive, another user's
            pass


def child_exit(server: object, worker: object) -> None:
    """A worker is gone: prometheus-client drops its live gauges."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]
