"""Gunicorn settings of the web process (`gunicorn wsgi:app` reads this file from here).

`make run` and `bench/intake.py` use it as it is; GRIDMGMT_WEB_WORKERS and
GRIDMGMT_WEB_THREADS override the sizes. Chosen by measurement on the 2-core machine (README,
"Performance"): the work is CPU-bound Python, so a worker per core plus one, each with two
threads (one for a slow page while the other serves), and every worker on its own listening
socket (SO_REUSEPORT) so that the kernel spreads the connections. Without that, one worker
can take every keep-alive connection while the others idle. The price: a second server
started on the same port by the same user shares it instead of failing (`scripts/run.sh`
checks the port first), and the master holds no socket (no USR2 upgrade in place).
"""

import gc
import os

bind = os.environ.get("GRIDMGMT_WEB_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GRIDMGMT_WEB_WORKERS", (os.cpu_count() or 1) + 1))
threads = int(os.environ.get("GRIDMGMT_WEB_THREADS", 2))
worker_class = "gthread"
reuse_port = True
keepalive = 5
timeout = 60


def post_worker_init(worker: object) -> None:
    """Hide what the app loaded from the garbage collector: a full collection then scans only
    what requests create. Measured: full collections took 50-190 ms before, a tail of every
    latency figure."""
    gc.freeze()
