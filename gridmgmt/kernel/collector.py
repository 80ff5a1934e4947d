"""Python's garbage collector in a long-lived web process, set once the app is loaded.

A page of the command centre builds hundreds of thousands of objects (a month's map, a
500 kB inbox). With Python's default thresholds (700, 10, 10) that is a young collection every
700 allocations and, every hundred of those, a full one over everything alive: 20-60 ms in
the middle of one request in four on the biggest pages at ten million cases, the tail of
their p95 (README, "Ten million cases in a working city"). So, as gunicorn's workers start
(gunicorn.conf.py) and in the page bench that mirrors them:

- what the app loaded (modules, the catalogue, SQLAlchemy's mappers) is frozen: no full
  collection scans it again;
- young collections run every YOUNG allocations, and each older generation after 20 of the
  one below instead of 10: almost every request's objects are freed by reference counting,
  and a reference cycle still goes at the next young collection.
"""

import gc

YOUNG = 50_000
OLDER = 20


def settle(young: int = YOUNG) -> None:
    """Freeze what is loaded; collect young objects every `young` allocations."""
    gc.freeze()
    gc.set_threshold(young, OLDER, OLDER)
