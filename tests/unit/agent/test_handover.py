"""handover.Relay: the mirror's port stays open while the registry behind it is swapped."""

import socket
import threading

from registry_cache.handover import Relay, free_port


def _backend(reply: bytes) -> tuple[socket.socket, int]:
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(100)
                conn.sendall(reply)

    threading.Thread(target=serve, daemon=True).start()
    return server, server.getsockname()[1]


def _ask(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"hello")
        conn.shutdown(socket.SHUT_WR)
        return conn.recv(100)


def test_new_connections_go_to_the_new_backend_and_the_old_one_drains_to_zero():
    old, old_port = _backend(b"old")
    new, new_port = _backend(b"new")
    port = free_port()
    relay = Relay("127.0.0.1", port)
    try:
        relay.point_to(old_port)
        assert _ask(port) == b"old"
        relay.point_to(new_port)
        old.close()  # the old registry is gone: nothing may reach it any more
        assert [_ask(port) for _ in range(5)] == [b"new"] * 5
        assert relay.wait_idle(old_port, timeout=5) and relay.wait_idle(new_port, timeout=5)
    finally:
        relay.close()
        new.close()


def test_a_closed_relay_stops_listening_so_the_port_can_be_bound_again():
    backend, backend_port = _backend(b"reply")
    port = free_port()
    relay = Relay("127.0.0.1", port)
    relay.point_to(backend_port)
    assert _ask(port) == b"reply"
    relay.close()
    try:
        # a successor runner (serve's reload) binds the same port at once
        socket.create_server(("127.0.0.1", port)).close()
    finally:
        backend.close()


def test_a_relay_on_the_ipv6_any_address_takes_ipv4_clients_too():
    backend, backend_port = _backend(b"reply")
    port = free_port()
    relay = Relay("::", port)
    try:
        relay.point_to(backend_port)
        assert _ask(port) == b"reply"  # over 127.0.0.1
    finally:
        relay.close()
        backend.close()
