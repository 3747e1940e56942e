"""deliver/loop.py, the one delivery loop that `dispatch send`, `worker`, `run` and `serve`
run, and its one error policy, against a real aiosmtpd server and a real store (SQLite file
and PostgreSQL): the relay refusing us pauses the send with the reason, in every mode; a
transient problem is tried again after a backoff. Clocks and tunings are passed in; waits
are on conditions, with generous timeouts only as failure guards."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from dispatch.config import Settings
from dispatch.config.defaults import Tuning
from dispatch.deliver.loop import Keep, run_delivery
from dispatch.deliver.sending import worker_lock
from dispatch.deliver.transport import SmtpConnection, SmtpStage, TransportError, smtp_transport
from dispatch.store.progress import state_counts
from dispatch.store.sends import get_send
from tests.helpers import configure_delivery, eventually, launch_example_once, populate_audience
from tests.smtp_server import FaultyHandler, faulty_sink, refuse_login

NOW = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)
QUICK = Tuning(session_backoff=0.05, session_backoff_max=0.2, look_every=0.05,
               restart_backoff=0.05, restart_backoff_max=0.2, poll=0.1)
GUARD = 60.0  # seconds: only a failure guard, never what a test measures


def with_login(settings: Settings, port: int) -> Settings:
    settings = configure_delivery(settings, port)
    return settings.model_copy(update={"smtp": settings.smtp.model_copy(update={
        "username": "dispatch", "password_env": "TEST_SMTP_PASSWORD"})})


def start(keep: Keep, engine, settings: Settings, stop: threading.Event,
          wake: threading.Event) -> threading.Thread:
    """The loop as the command running in `keep` mode starts it, on a thread, with the
    clock standing at NOW (the launch's time)."""
    thread = threading.Thread(target=run_delivery, args=(
        engine, settings, smtp_transport(settings.smtp)), kwargs={
        "keep": keep, "stop": stop, "wake": wake, "clock": lambda: NOW, "tuning": QUICK})
    thread.start()
    return thread


@pytest.mark.parametrize("keep", [Keep.WHEN_DUE, Keep.HOLDING])
def test_serve_and_run_pause_a_send_the_relay_refuses_with_the_reason(engine, settings,
                                                                     monkeypatch, keep):
    # `dispatch serve`'s delivery (WHEN_DUE) logged "delivery held back" and tried again
    # every 30 s for ever, the send still "sending".
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "wrong")
    handler = FaultyHandler()
    with faulty_sink(handler, authenticator=refuse_login, auth_require_tls=False) as (_, port):
        settings = with_login(settings, port)
        emails = [r.email for r in populate_audience(engine, settings, 6, NOW,
                                                     ("example.com",))]
        slug = launch_example_once(engine, settings, NOW)
        stop, wake = threading.Event(), threading.Event()
        thread = start(keep, engine, settings, stop, wake)
        try:
            paused = eventually(lambda: get_send(engine, slug).status == "paused", GUARD)
        finally:
            stop.set()
            wake.set()
            thread.join(GUARD)
    assert paused and not thread.is_alive()
    send = get_send(engine, slug)
    assert send.reason and "535 5.7.8 Authentication failed" in send.reason
    assert "(at AUTH)" in send.reason
    assert handler.received == []
    assert dict(state_counts(engine)[slug]) == {"queued": len(emails)}  # no attempt used


def test_a_refused_login_is_a_transport_error_at_auth(settings, monkeypatch):
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "wrong")
    sink = faulty_sink(FaultyHandler(), authenticator=refuse_login, auth_require_tls=False)
    with sink as (_, port), pytest.raises(TransportError) as refused:
        SmtpConnection(with_login(settings, port).smtp)
    assert refused.value.stage is SmtpStage.AUTH
    assert refused.value.reply is not None and refused.value.reply.code == 535


def test_the_daemon_loop_waits_out_a_held_worker_lock_then_delivers(settings):
    # SQLite allows one delivering process: the daemon's loop backs off and tries again
    # until the lock is free, rather than ending or spinning.
    from dispatch.store.db import open_store

    engine = open_store(settings.store.url)
    handler = FaultyHandler()
    with faulty_sink(handler) as (_, port):
        settings = configure_delivery(settings, port)
        emails = [r.email for r in populate_audience(engine, settings, 4, NOW,
                                                     ("example.com",))]
        slug = launch_example_once(engine, settings, NOW)
        stop, wake = threading.Event(), threading.Event()
        with worker_lock(engine):
            thread = start(Keep.HOLDING, engine, settings, stop, wake)
            # Nothing can go out while another process holds the lock.
            assert not eventually(lambda: handler.received, 0.5)
        try:
            sent = eventually(lambda: get_send(engine, slug).status == "sent", GUARD)
        finally:
            stop.set()
            wake.set()
            thread.join(GUARD)
    assert sent and not thread.is_alive()
    assert sorted(r.recipient for r in handler.received) == sorted(emails)
    engine.dispose()


def test_a_single_run_raises_what_a_loop_would_try_again(settings):
    from dispatch.deliver.sending import WorkerBusy
    from dispatch.store.db import open_store

    engine = open_store(settings.store.url)
    with worker_lock(engine), pytest.raises(WorkerBusy):
        run_delivery(engine, settings, smtp_transport(settings.smtp), keep=Keep.ONCE)
    engine.dispose()
