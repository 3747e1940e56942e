"""Start-up: `dispatch --version` and `dispatch --help` against the peer, a bare Typer app with
one option in the same interpreter, measured in the same run (target: ≤ 0.25 s each).

Run: pytest -m bench -s tests/bench/test_startup_bench.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT

PEER = """
import typer
app = typer.Typer(add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False)
@app.command()
def main(version: bool = typer.Option(False, "--version")) -> None:
    print("peer 0")
app()
"""


def _median_seconds(argv: list[str], runs: int = 9) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, env=env)
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


@pytest.mark.bench
def test_startup():
    # The interpreter the console script would run, without any shell wrapper (a pyenv shim
    # alone adds ~0.1 s that no code of ours can remove).
    dispatch = [sys.executable, "-c", "from dispatch.cli import main; main()"]
    bare = _median_seconds([sys.executable, "-c", "pass"])
    floor = _median_seconds([sys.executable, "-c", "import typer, rich.console"])
    peer = _median_seconds([sys.executable, "-c", PEER, "--version"])
    version = _median_seconds([*dispatch, "--version"])
    help_ = _median_seconds([*dispatch, "--help"])
    print(f"\npython -c pass: {bare * 1000:.0f} ms; import typer, rich.console: "
          f"{floor * 1000:.0f} ms; bare Typer app --version: {peer * 1000:.0f} ms")
    print(f"dispatch --version: {version * 1000:.0f} ms ({version / peer:.2f}× the bare Typer "
          f"app, {version / floor:.2f}× importing Typer and Rich)")
    print(f"dispatch --help: {help_ * 1000:.0f} ms ({help_ / peer:.2f}× the bare Typer app, "
          f"{help_ / floor:.2f}× importing Typer and Rich)")
    assert version > 0 and help_ > 0
