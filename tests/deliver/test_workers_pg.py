"""Several `dispatch worker` processes sharing one PostgreSQL outbox: no row sent twice."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from dispatch.devtools.sink import RecordingHandler, smtp_sink
from dispatch.store.db import open_store
from dispatch.store.progress import state_counts
from tests.helpers import EXAMPLE_ISSUE, PG_URL, prepare_project, reset_postgres

WORKERS = 3


def test_workers_share_one_outbox_without_sending_a_row_twice(project: Path):
    reason = reset_postgres(PG_URL)
    if reason:
        pytest.skip(reason)
    config = project / "config.toml"
    config.write_text(re.sub(r'(?m)^url = "sqlite:///dispatch.db"', f'url = "{PG_URL}"',
                             config.read_text()))
    handler = RecordingHandler()
    with smtp_sink(handler) as (_, port):
        emails = prepare_project(project, port)
        launch = subprocess.run([sys.executable, "-m", "dispatch", "send", EXAMPLE_ISSUE,
                                 "--yes", "--launch-only"], cwd=project, check=False,
                                capture_output=True, text=True, timeout=120)
        assert launch.returncode == 0, launch.stderr
        assert handler.received == []
        procs = [subprocess.Popen([sys.executable, "-m", "dispatch", "worker", "--until-done"],
                                  cwd=project, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
                 for _ in range(WORKERS)]
        outputs = [proc.communicate(timeout=300)[0] for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), outputs
    assert Counter(r.recipient for r in handler.received) == {e: 1 for e in emails}
    sent_by = [int(re.search(r"this run: ([\d,]+) sent", o)[1].replace(",", ""))
               for o in outputs]
    print(f"\nper worker: {sent_by}")
    assert sum(sent_by) == len(emails)
    assert sum(1 for n in sent_by if n) >= 2  # the work really was shared
    engine = open_store(PG_URL)
    assert state_counts(engine)[EXAMPLE_ISSUE] == {"sent": len(emails)}
    engine.dispose()
