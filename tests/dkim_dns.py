"""OpenDKIM's opendkim-testmsg verifies against DNS only (no key-file option), so the tests give
it one: in a network and mount namespace of its own (`unshare --net --mount`, root), a DNS
server on 127.0.0.1:53 answers the test keys' TXT records and /etc/resolv.conf is replaced by
one naming it. Nothing leaves the machine: the namespace has only its loopback.

Run as a script inside the namespace: `python -m tests.dkim_dns RECORDS.json MESSAGE...`;
prints a JSON list of [exit status, output] for each message."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

OPENDKIM_TESTMSG = shutil.which("opendkim-testmsg")


def opendkim_verify(records: dict[bytes, bytes], messages: list[bytes], folder: Path
                    ) -> list[tuple[int, str]]:
    """[exit status, output] of opendkim-testmsg for each message: 0 and no output when the
    signature verifies."""
    (folder / "records.json").write_text(json.dumps(
        {name.decode(): value.decode() for name, value in records.items()}))
    paths = []
    for i, data in enumerate(messages):
        (folder / f"{i}.eml").write_bytes(data)
        paths.append(str(folder / f"{i}.eml"))
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        ["unshare", "--net", "--mount", sys.executable, "-m", "tests.dkim_dns",
         str(folder / "records.json"), *paths],
        capture_output=True, text=True, timeout=300, cwd=root,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert result.returncode == 0, result.stderr
    return [(int(code), str(output)) for code, output in json.loads(result.stdout)]


def _serve(sock: socket.socket, records: dict[str, str]) -> None:
    import dns.message
    import dns.rcode
    import dns.rdatatype
    import dns.rrset

    while True:
        data, client = sock.recvfrom(4096)
        query = dns.message.from_wire(data)
        reply = dns.message.make_response(query)
        question = query.question[0]
        name = question.name.to_text()
        if question.rdtype == dns.rdatatype.TXT and name in records:
            value = records[name]
            # TXT strings are at most 255 octets: a long key is split, as zone files do.
            chunks = " ".join(f'"{value[i:i + 200]}"' for i in range(0, len(value), 200))
            reply.answer.append(dns.rrset.from_text(name, 60, "IN", "TXT", chunks))
        else:
            reply.set_rcode(dns.rcode.NXDOMAIN)
        sock.sendto(reply.to_wire(), client)


def main(records_file: str, messages: list[str]) -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as resolv:
        resolv.write("nameserver 127.0.0.1\noptions attempts:1 timeout:2\n")
    subprocess.run(["mount", "--bind", resolv.name, "/etc/resolv.conf"], check=True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 53))
    records = json.loads(Path(records_file).read_text())
    threading.Thread(target=_serve, args=(sock, records), daemon=True).start()
    results = []
    for path in messages:
        with open(path, "rb") as message:
            done = subprocess.run([OPENDKIM_TESTMSG or "opendkim-testmsg"], stdin=message,
                                  capture_output=True, text=True, timeout=60)
        results.append([done.returncode, (done.stdout + done.stderr).strip()])
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
