"""The garbage collector of a web worker (gridmgmt.kernel.collector), as gunicorn.conf.py's
post_worker_init sets it in each worker."""

from __future__ import annotations

import gc
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridmgmt.kernel import collector


@pytest.fixture
def restored() -> Iterator[None]:
    """The test process's collector as it was."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_a_started_worker_freezes_what_is_loaded_and_collects_young_objects_less_often(
    restored: None,
) -> None:
    path = Path(__file__).resolve().parents[2] / "gunicorn.conf.py"
    spec = importlib.util.spec_from_file_location("gunicorn_conf", path)
    assert spec is not None and spec.loader is not None
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)

    conf.post_worker_init(object())

    assert gc.get_threshold() == (collector.YOUNG, collector.OLDER, collector.OLDER)
    assert gc.get_freeze_count() > 10_000  # the app's modules, out of every collection
    cycle: list[object] = []
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1  # a reference cycle is still collected
