"""free_port: ports for servers the tests (and the embedded store) are about to start.

A port from ``bind(0)`` is drawn from the range outgoing connections use too, so another
connect() can take it before the server binds it (one CI run lost a silo to that). The
ports handed out here come from outside that range and are not handed out twice in a row."""

from __future__ import annotations

import socket

from grainery.silo.storage.embedded import _QUIET_PORTS, _ephemeral_range, free_port


def test_ports_come_from_outside_the_ephemeral_range_and_bind() -> None:
    low, high = _ephemeral_range()
    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == len(ports)  # never the same one twice in a row
    assert not [p for p in ports if low <= p <= high]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[-1]))  # and it really is free


def test_a_port_someone_listens_on_is_never_handed_out() -> None:
    """Listeners on 300 ports of the range free_port draws from (about 1.3% of it): of
    2,000 ports handed out, none is one of them (without the bind check, about 26 would)."""
    low, high = _ephemeral_range()
    listeners = []
    try:
        for port in range(_QUIET_PORTS[0], _QUIET_PORTS[1] + 1, 70):
            if low <= port <= high:
                continue
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            sock.listen()
            listeners.append(sock)
        taken = {sock.getsockname()[1] for sock in listeners}
        assert len(taken) > 250
        assert not taken & {free_port() for _ in range(2000)}
    finally:
        for sock in listeners:
            sock.close()
