"""Every report is recorded by one function (issue 23): store.reports.record is called by
inbound.process.record_report and by nothing else in the library, and every way in (files,
SMTP, IMAP, webhooks, the web app's unsubscribes) reaches record_report."""

from __future__ import annotations

import ast
from pathlib import Path

import dispatch

SOURCE = Path(dispatch.__file__).parent


def calls(name: str) -> dict[str, list[str]]:
    """Module path -> the functions in it that call `name` (an attribute or a bare name)."""
    found: dict[str, list[str]] = {}
    for path in sorted(SOURCE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Call):
                    callee = node.func
                    called = (callee.attr if isinstance(callee, ast.Attribute)
                              else getattr(callee, "id", None))
                    owner = callee.value if isinstance(callee, ast.Attribute) else None
                    if called == name and (name != "record" or (
                            isinstance(owner, ast.Name) and owner.id == "reports")):
                        found.setdefault(str(path.relative_to(SOURCE)), []).append(
                            function.name)
    return found


def test_the_store_records_reports_for_record_report_only():
    assert calls("record") == {"inbound/process.py": ["record_report"]}


def test_every_way_in_goes_through_record_report():
    callers = calls("record_report")
    assert callers == {"inbound/process.py": ["process", "web_unsubscribe"],
                       "inbound/webhooks.py": ["record"]}
    # Files, SMTP and IMAP read messages with `process`; the web app uses web_unsubscribe.
    readers = calls("process")
    assert {"cli/inbound.py", "inbound/server.py", "inbound/imap.py"} <= set(readers)
    # The web app runs it in a thread pool: a reference, not a call.
    app = ast.parse((SOURCE / "web" / "app.py").read_text())
    assert any(isinstance(n, ast.Name) and n.id == "web_unsubscribe" for n in ast.walk(app))
