"""The one readiness probe: a mirror serves once its /v2/ answers 200 or 401."""

import http.server
import socket
import threading

import pytest
from registry_cache import net


@pytest.fixture
def registry():
    """A stand-in registry on 127.0.0.1 whose /v2/ answers `status[0]`."""
    status = [200]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            code = status[0] if self.path == "/v2/" else 404
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", status
    server.shutdown()
    server.server_close()


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(("code", "serves"), [(200, True), (401, True), (404, False), (503, False)])
def test_a_mirror_serves_when_v2_answers_200_or_401(registry, code, serves):
    url, status = registry
    status[0] = code
    assert net.serving(url) is serves


def test_nothing_listening_is_not_serving():
    assert not net.serving(f"http://127.0.0.1:{closed_port()}")


def test_waiting_returns_the_mirrors_that_never_served(registry):
    url, _status = registry
    pending = net.wait_until_serving(
        {"up": url, "down": f"http://127.0.0.1:{closed_port()}"}, timeout=0.3, interval=0.05
    )
    assert pending == ["down"]


def test_waiting_stops_as_soon_as_the_caller_gives_up():
    calls = []
    pending = net.wait_until_serving(
        {"down": f"http://127.0.0.1:{closed_port()}"}, timeout=60,
        give_up=lambda: calls.append(1) or len(calls) > 2, sleep=lambda _s: None,
    )
    assert pending == ["down"] and len(calls) == 3


@pytest.mark.parametrize(("listen", "url"), [
    ("0.0.0.0", "http://127.0.0.1:5000"),
    ("::", "http://[::1]:5000"),
    ("192.168.56.50", "http://192.168.56.50:5000"),
    ("fd00::50", "http://[fd00::50]:5000"),
])
def test_a_mirror_is_reached_on_this_machine_at_a_dialable_address(listen, url):
    assert net.local_url(listen, 5000) == url


def test_an_endpoint_checks_the_certificate_against_its_ca_and_a_name_it_covers(tmp_path):
    """A TLS stand-in whose certificate covers only cache.example: the probe dials 127.0.0.1 and
    checks that name, trusting only the CA; another CA is refused."""
    import ssl
    import time

    from registry_cache import tlsca

    now = time.time()
    ca_cert, ca_key = tlsca.make_ca(now)
    cert, key = tlsca.issue_server(ca_cert, ca_key, ["cache.example"], now)
    other_ca = tlsca.make_ca(now)[0]
    for name, text in (("ca.crt", ca_cert), ("tls.crt", cert), ("tls.key", key), ("other.crt", other_ca)):
        (tmp_path / name).write_text(text)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"https://127.0.0.1:{server.server_address[1]}"
    try:
        assert net.serving(net.Endpoint(url, str(tmp_path / "ca.crt"), "cache.example"))
        assert not net.serving(net.Endpoint(url, str(tmp_path / "ca.crt")))  # 127.0.0.1 is not covered
        assert not net.serving(net.Endpoint(url, str(tmp_path / "other.crt"), "cache.example"))
    finally:
        server.shutdown()
        server.server_close()
