"""A small Vagrant Cloud API v2 on 127.0.0.1: the documented request/response shapes, in memory.

Only what `box/publish/cloud_client.py` uses: boxes, versions, providers (with architecture), direct
upload (upload_path + callback), release. Errors come back as the API sends them:
`{"errors": [...], "success": false}`. `faults` injects failures for matching requests:
dropped connections (before or after the request is processed) and error statuses.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

API = "/api/v2"


@dataclass
class Fault:
    """Make the next `times` requests matching method+path regex fail in a given way."""

    method: str
    path: str  # regex, searched in the path
    kind: str  # "drop" | "drop-after" | "status"
    times: int = 1
    status: int = 503
    retry_after: Optional[str] = None
    errors: Optional[list[str]] = None


@dataclass
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    authorization: Optional[str]
    body: Any = None


class FakeVagrantCloud:
    """In-memory Vagrant Cloud; `url` is the server URL to pass as --cloud-url."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.boxes: dict[tuple[str, str], dict[str, Any]] = {}
        self.storage: dict[str, bytes] = {}
        self.pending: dict[str, tuple] = {}  # upload id -> provider key
        self.faults: list[Fault] = []
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeVagrantCloud:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    # --- what tests look at -------------------------------------------------------------

    def calls(self) -> list[str]:
        """The requests received so far as 'METHOD path' lines."""
        return [f"{s.method} {s.path}" for s in self.seen]

    def version(self, org: str, name: str, version: str) -> dict[str, Any]:
        return self.boxes[(org, name)]["versions"][version]

    # --- the API ------------------------------------------------------------------------

    def _box_json(self, box: dict[str, Any]) -> dict[str, Any]:
        return {
            "tag": box["tag"],
            "username": box["username"],
            "name": box["name"],
            "private": box["private"],
            "short_description": box["short_description"],
            "versions": [self._version_json(v) for v in box["versions"].values()],
        }

    def _version_json(self, version: dict[str, Any]) -> dict[str, Any]:
        return {
            "version": version["version"],
            "status": version["status"],
            "description_markdown": version["description"],
            "providers": [dict(p) for p in version["providers"].values()],
        }

    def handle(self, method: str, path: str, body: Any, auth: Optional[str]) -> tuple[int, Any]:
        """Answer one request: (status, JSON body)."""
        match = re.fullmatch(r"/storage/([0-9a-f-]+)", path)
        if match and method == "PUT":
            upload_id = match.group(1)
            if upload_id not in self.pending:
                return 404, {"errors": ["unknown upload"], "success": False}
            self.storage[upload_id] = body
            return 200, {}
        if not path.startswith(API):
            return 404, {"errors": ["Resource not found!"], "success": False}
        if auth != f"Bearer {self.token}":
            return 401, {"errors": ["You are not authorized to access this resource"],
                         "success": False}
        rest = path[len(API):]
        not_found = (404, {"errors": ["Resource not found!"], "success": False})

        match = re.fullmatch(r"/upload/callback/([0-9a-f-]+)", rest)
        if match and method == "PUT":
            upload_id = match.group(1)
            if upload_id not in self.storage:
                return 422, {"errors": ["Upload has not completed"], "success": False}
            org, name, ver, key = self.pending.pop(upload_id)
            provider = self.boxes[(org, name)]["versions"][ver]["providers"][key]
            provider["hosted_token"] = upload_id
            provider["sha256_received"] = hashlib.sha256(self.storage[upload_id]).hexdigest()
            return 200, dict(provider)

        if rest == "/boxes" and method == "POST":
            spec = body["box"]
            key = (spec["username"], spec["name"])
            if key in self.boxes:
                return 422, {"errors": ["Type has already been taken"], "success": False}
            self.boxes[key] = {
                "tag": f"{key[0]}/{key[1]}",
                "username": key[0],
                "name": key[1],
                "private": spec.get("is_private", True),
                "short_description": spec.get("short_description", ""),
                "versions": {},
            }
            return 200, self._box_json(self.boxes[key])

        match = re.fullmatch(r"/box/([^/]+)/([^/]+)(/.*)?", rest)
        if not match:
            return not_found
        org, name, tail = match.group(1), match.group(2), match.group(3) or ""
        box = self.boxes.get((org, name))
        if box is None:
            return not_found
        if tail == "" and method == "GET":
            return 200, self._box_json(box)
        if tail == "/versions" and method == "POST":
            spec = body["version"]
            if spec["version"] in box["versions"]:
                return 422, {"errors": ["Version has already been taken"], "success": False}
            box["versions"][spec["version"]] = {
                "version": spec["version"],
                "status": "unreleased",
                "description": spec.get("description", ""),
                "providers": {},
            }
            return 200, self._version_json(box["versions"][spec["version"]])
        match = re.fullmatch(r"/version/([^/]+)(/.*)?", tail)
        if not match:
            return not_found
        version = box["versions"].get(match.group(1))
        tail = match.group(2) or ""
        if version is None:
            return not_found
        if tail == "" and method == "GET":
            return 200, self._version_json(version)
        if tail == "/release" and method == "PUT":
            if not version["providers"] or not all(
                p.get("hosted_token") for p in version["providers"].values()
            ):
                return 422, {"errors": ["Version has providers without a box"], "success": False}
            version["status"] = "active"
            return 200, self._version_json(version)
        if tail == "/providers" and method == "POST":
            spec = body["provider"]
            key = (spec["name"], spec.get("architecture", "amd64"))
            if key in version["providers"]:
                return 422, {"errors": ["Metadata provider must be unique for version"],
                             "success": False}
            version["providers"][key] = {
                "name": spec["name"],
                "architecture": key[1],
                "default_architecture": spec.get("default_architecture", False),
                "checksum": spec.get("checksum"),
                "checksum_type": spec.get("checksum_type"),
                "hosted": True,
                "hosted_token": None,
            }
            return 200, dict(version["providers"][key])
        match = re.fullmatch(r"/provider/([^/]+)/([^/]+)(/.*)?", tail)
        if not match:
            return not_found
        key = (match.group(1), match.group(2))
        provider = version["providers"].get(key)
        tail = match.group(3) or ""
        if provider is None:
            return not_found
        if tail == "" and method == "PUT":
            spec = body["provider"]
            provider.update(checksum=spec.get("checksum"), checksum_type=spec.get("checksum_type"),
                            hosted_token=None)
            return 200, dict(provider)
        if tail == "/upload/direct" and method == "GET":
            upload_id = str(uuid.uuid4())
            self.pending[upload_id] = (org, name, version["version"], key)
            return 200, {
                "upload_path": f"{self.url}/storage/{upload_id}",
                "callback": f"{self.url}{API}/upload/callback/{upload_id}",
            }
        return not_found

    def _handler_class(self) -> type:
        cloud = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):  # the test reads `cloud.seen` instead
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                body: Any = raw
                if raw and self.headers.get("Content-Type", "").startswith("application/json"):
                    body = json.loads(raw)
                with cloud.lock:
                    cloud.seen.append(Seen(self.command, path, self.headers.get("Authorization"),
                                           body if not isinstance(body, bytes) else len(body)))
                    fault = next(
                        (f for f in cloud.faults
                         if f.times > 0 and f.method == self.command and re.search(f.path, path)),
                        None,
                    )
                    if fault is not None:
                        fault.times -= 1
                    if fault is not None and fault.kind == "drop":
                        self.close_connection = True
                        return
                    if fault is not None and fault.kind == "status":
                        status = fault.status
                        answer = {"errors": fault.errors or ["Service unavailable"],
                                  "success": False}
                    else:
                        status, answer = cloud.handle(self.command, path, body,
                                                      self.headers.get("Authorization"))
                    if fault is not None and fault.kind == "drop-after":
                        self.close_connection = True
                        return
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if fault is not None and fault.retry_after is not None:
                    self.send_header("Retry-After", fault.retry_after)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

        return Handler
