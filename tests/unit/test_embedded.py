"""The embedded mode's port probe."""

from __future__ import annotations

import socket

from broker.embedded import port_is_free


def test_a_port_left_in_time_wait_is_free_for_the_embedded_emulator() -> None:
    """The port probe binds as servers do (SO_REUSEADDR): a previous run's TIME-WAIT sockets do not
    make the embedded emulator's port look taken; a listener does."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    assert not port_is_free(port), "a listener holds it"
    accepted.close()  # the server side closes first: its end of the connection stays in TIME-WAIT
    server.close()
    client.close()
    with socket.socket() as plain:  # what the probe did before: a bind without SO_REUSEADDR fails
        try:
            plain.bind(("127.0.0.1", port))
            time_wait = False
        except OSError:
            time_wait = True
    assert time_wait, "the connection left no TIME-WAIT socket to test with"
    assert port_is_free(port)
