"""handover.Relay: the mirror's port stays open while the registry behind it is swapped."""

import hashlib
import os
import resource
import socket
import threading

from registry_cache.handover import Relay, free_port, raise_fd_limit


def _listen(handle) -> tuple[socket.socket, int]:
    """A backend on a free loopback port that calls `handle(conn)` for each connection, until closed."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            handle(conn)

    threading.Thread(target=serve, daemon=True).start()
    return server, server.getsockname()[1]


def _backend(reply: bytes) -> tuple[socket.socket, int]:
    def answer(conn: socket.socket) -> None:
        with conn:
            conn.recv(100)
            conn.sendall(reply)

    return _listen(answer)


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


def _echo_backend() -> tuple[socket.socket, int]:
    """A backend that sends back every byte it gets, then ends its side when the client ends its."""
    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)

    return _listen(lambda conn: threading.Thread(target=echo, args=(conn,), daemon=True).start())


def test_megabytes_pass_both_ways_unchanged_through_several_connections_at_once():
    backend, backend_port = _echo_backend()
    port = free_port()
    relay = Relay("127.0.0.1", port)
    relay.point_to(backend_port)
    payloads = [os.urandom(3 * 1024 * 1024 + n) for n in range(4)]
    echoed: dict[int, bytes] = {}

    def client(index: int) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as conn:
            sender = threading.Thread(target=lambda: (conn.sendall(payloads[index]),
                                                      conn.shutdown(socket.SHUT_WR)))
            sender.start()
            chunks = []
            while chunk := conn.recv(1 << 20):
                chunks.append(chunk)
            sender.join()
            echoed[index] = b"".join(chunks)

    try:
        clients = [threading.Thread(target=client, args=(i,)) for i in range(len(payloads))]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(timeout=60)
        assert [hashlib.sha256(echoed[i]).digest() for i in range(len(payloads))] == \
            [hashlib.sha256(p).digest() for p in payloads]
        assert relay.wait_idle(backend_port, timeout=5)
    finally:
        relay.close()
        backend.close()


def test_a_connection_to_a_registry_that_is_gone_ends_at_once_and_is_not_counted_open():
    port, gone = free_port(), free_port()  # nothing listens on `gone`
    relay = Relay("127.0.0.1", port)
    relay.point_to(gone)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            assert conn.recv(10) == b""
        assert relay.wait_idle(gone, timeout=5) and relay.open_connections(gone) == 0
    finally:
        relay.close()


def test_the_soft_open_file_limit_is_raised_to_the_hard_one():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
    try:
        assert raise_fd_limit() == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
