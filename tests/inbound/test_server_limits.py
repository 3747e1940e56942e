"""The inbound SMTP server's limits on whoever connects, against the real server over
loopback: connections capped per client and in all (421 beyond), silent connections closed
after inbound.idle_timeout, and a message trickled slower than inbound.message_deadline cut
off. The limits are set small here, so each test waits only on the server's own answer."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from dispatch.config import InboundSettings, Settings
from dispatch.devtools.sink import free_port
from dispatch.inbound.server import InboundServer
from tests.helpers import eventually

INBOUND = "bounces.example.org"
PATIENCE = 10.0  # seconds a socket waits for an answer before the test fails


@contextmanager
def serving(engine, settings: Settings, tmp_path: Path, **limits: float) -> Iterator[
        InboundServer]:
    inbound = InboundSettings(host="127.0.0.1", port=free_port(),
                              spool=tmp_path / "spool").model_copy(update=limits)
    wired = settings.model_copy(update={
        "delivery": settings.delivery.model_copy(update={"verp_domain": INBOUND}),
        "inbound": inbound})
    server = InboundServer(engine, wired)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def connect(server: InboundServer, source: str = "127.0.0.1") -> tuple[socket.socket, bytes]:
    """A connection from `source` (any 127/8 address is this host), and its first line."""
    sock = socket.create_connection((server.host, server.port), timeout=PATIENCE,
                                    source_address=(source, 0))
    return sock, read_line(sock)


def read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data


def test_connections_are_capped_per_client_and_in_all(engine, settings, tmp_path):
    with serving(engine, settings, tmp_path, max_connections=5,
                 max_connections_per_client=3) as server, ExitStack() as held:
        for _ in range(3):
            sock, greeting = connect(server)
            held.callback(sock.close)
            assert greeting.startswith(b"220 "), greeting
        extra, answer = connect(server)
        assert answer.startswith(b"421 4.7.0"), answer
        assert extra.recv(100) == b""  # and closed
        extra.close()
        # Another client still gets in, up to the cap over all clients.
        for _ in range(2):
            sock, greeting = connect(server, "127.0.0.2")
            held.callback(sock.close)
            assert greeting.startswith(b"220 "), greeting
        assert connect(server, "127.0.0.3")[1].startswith(b"421 ")
        assert server.gate.open == 5
    # Every connection left the count when it closed.
    assert server.gate.open == 0


def test_a_freed_place_is_taken_again(engine, settings, tmp_path):
    with serving(engine, settings, tmp_path, max_connections_per_client=1) as server:
        first, greeting = connect(server)
        assert greeting.startswith(b"220 ")
        assert connect(server)[1].startswith(b"421 ")
        first.sendall(b"QUIT\r\n")
        assert read_line(first).startswith(b"221")
        first.close()
        assert eventually(lambda: server.gate.open == 0, PATIENCE)
        again, greeting = connect(server)
        assert greeting.startswith(b"220 ")
        again.close()


def test_a_silent_connection_is_closed_after_the_idle_timeout(engine, settings, tmp_path):
    with serving(engine, settings, tmp_path, idle_timeout=0.2) as server:
        sock, greeting = connect(server)
        assert greeting.startswith(b"220 ")
        sock.sendall(b"EHLO client.example\r\n")
        while read_line(sock).startswith(b"250-"):
            pass
        # Then nothing: the server hangs up (well before the socket's own PATIENCE).
        assert sock.recv(1000) in (b"", b"421 4.4.2 bounces.example.org Error: timeout "
                                        b"exceeded\r\n")
        sock.close()
        assert eventually(lambda: server.gate.open == 0, PATIENCE)


def test_a_message_trickled_past_the_deadline_is_cut_off_and_not_kept(engine, settings,
                                                                      tmp_path):
    with serving(engine, settings, tmp_path, idle_timeout=5.0,
                 message_deadline=0.3) as server:
        sock, _ = connect(server)
        for command in (b"HELO client.example", b"MAIL FROM:<>",
                        f"RCPT TO:<b-1-1-aaaaaaaaaaaaaaaa@{INBOUND}>".encode(), b"DATA"):
            sock.sendall(command + b"\r\n")
            assert read_line(sock)[:1] in (b"2", b"3"), command
        answer = b""
        for _ in range(int(PATIENCE / 0.05)):  # one byte each 50 ms: never idle, never done
            try:
                sock.sendall(b"x")
            except OSError:
                break
            readable, _, _ = select.select([sock], [], [], 0.05)
            if readable:
                answer = read_line(sock)
                break
        assert answer.startswith(b"421 4.4.2"), answer
        sock.close()
        assert server.spool.waiting() == []


@pytest.mark.parametrize("key, value", [("max_connections", 0), ("idle_timeout", 0),
                                        ("message_deadline", -1)])
def test_the_limits_are_checked_settings(key, value):
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        InboundSettings.model_validate({key: value})
