"""A missing browser, PostgreSQL program or real data file fails the run (CI must not pass by
skipping), unless $GRIDMGMT_ALLOW_MISSING names its kind: then the test is skipped."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ALLOW_MISSING, MISSING_KINDS, require

ROOT = Path(__file__).resolve().parent.parent

# Two tests that need missing things: a browser through `require` itself, real data through
# the suite's own `shared_file` (with $GRIDMGMT_SHARED_DATA pointing at an empty folder).
NEEDY_TESTS = """
from pathlib import Path

from tests.conftest import shared_file
from tests.support import require


def test_needs_a_browser():
    require("browser", Path("/nonexistent/chromium").exists(), "no Chromium at /nonexistent")


def test_needs_real_data():
    shared_file("la_neighborhood_councils.geojson")
"""


def run_pytest(folder: Path, allow: str | None) -> subprocess.CompletedProcess[str]:
    """Run pytest on the needy tests in `folder`, with $GRIDMGMT_ALLOW_MISSING = `allow`."""
    (folder / "pytest.ini").write_text("[pytest]\n")  # not the project's settings
    (folder / "test_needy.py").write_text(NEEDY_TESTS)
    (folder / "empty").mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != ALLOW_MISSING}
    env |= {"PYTHONPATH": str(ROOT), "GRIDMGMT_SHARED_DATA": str(folder / "empty")}
    if allow is not None:
        env[ALLOW_MISSING] = allow
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", "test_needy.py"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def outcomes(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    """{"failed": 1, "skipped": 1, ...} from pytest's last line."""
    last = result.stdout.strip().splitlines()[-1]
    return {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", last)}


@pytest.mark.parametrize(
    ("allow", "expected"),
    [(None, {"failed": 2}), ("browser", {"failed": 1, "skipped": 1})],
)
def test_a_run_fails_on_missing_things_unless_allowed(
    tmp_path: Path, allow: str | None, expected: dict[str, int]
) -> None:
    result = run_pytest(tmp_path, allow)
    output = result.stdout + result.stderr
    assert outcomes(result) == expected, output
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, output
    assert f"set {ALLOW_MISSING}=data to skip" in output, output  # says how to skip instead


@pytest.mark.parametrize(
    ("allow", "skipped"),
    [
        (None, set()),
        ("", set()),
        ("postgres", {"postgres"}),
        (" browser , data ", {"browser", "data"}),
        ("all", {"browser", "postgres", "data", "tools"}),
    ],
)
def test_require_skips_only_the_allowed_kinds(
    monkeypatch: pytest.MonkeyPatch, allow: str | None, skipped: set[str]
) -> None:
    if allow is None:
        monkeypatch.delenv(ALLOW_MISSING, raising=False)
    else:
        monkeypatch.setenv(ALLOW_MISSING, allow)
    for kind in MISSING_KINDS:
        require(kind, True, "present: nothing happens")
        outcome = pytest.skip.Exception if kind in skipped else pytest.fail.Exception
        with pytest.raises(outcome, match=f"no {kind} here"):
            require(kind, False, f"no {kind} here")


def test_require_refuses_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown kind 'chrome'"):
        require("chrome", True, "")


def test_a_misspelt_kind_is_refused_before_any_test() -> None:
    """The suite's own conftest checks the variable once, at start."""
    env = {**os.environ, ALLOW_MISSING: "chrome"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q"],
        cwd=ROOT / "tests" / "maps",  # any folder below the root conftest
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout + result.stderr
    assert "unknown kind chrome" in result.stderr


SKIP = re.compile(r"pytest\.skip\(|skipif|importorskip|pytest\.mark\.skip\b")


def test_tests_skip_for_missing_things_only_through_require() -> None:
    """A bare skip would let CI pass without the tool; `require` is the one way to skip."""
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted((ROOT / "tests").rglob("*.py"))
        if path.name not in ("support.py", Path(__file__).name)
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if SKIP.search(line)
    ]
    assert offenders == [], "use tests.support.require instead:\n" + "\n".join(offenders)
