"""A local peer answering Google Cloud Storage's JSON API (and Google's OAuth token
endpoint) over HTTP, for gs:// reads run offline through the real Beam file system and
storage client: `STORAGE_EMULATOR_HOST` points the client at it, as at an emulator
(`CLOUD_STORAGE_EMULATOR_ENDPOINT`, Arrow's Parquet reads).

It holds one bucket's objects in memory, and answers what the storage client asks to
read: a bucket's and an object's metadata, a listing by prefix, a download (whole or a
byte range; Arrow asks `?alt=media` of the object's metadata URL). An object it does
not hold is Google's answer to one that does not exist, 404 with `{"error": {"code":
404, ...}}`; one named in `forbidden`, Google's answer to credentials without access to
it, 403 (in `unauthorized`, 401: to a caller without credentials). `unlistable`: every
listing is refused, 403; `token_refused`: the token endpoint refuses the key (400,
invalid_grant), as Google refuses a deleted one. Each request is kept in `requests` (a write too, answered 404: none is
served).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import urllib.parse
from collections.abc import Iterator

_UPDATED = "2026-01-01T00:00:00.000Z"
_DENIED = (  # Cloud Storage's words to credentials without read access
    "stub@stub.iam.gserviceaccount.com does not have storage.objects.get access to the "
    "Google Cloud Storage object. Permission 'storage.objects.get' denied on resource "
    "(or it may not exist)."
)
_NOT_LISTED = (  # ... and without list access to the bucket
    "stub@stub.iam.gserviceaccount.com does not have storage.objects.list access to the "
    "Google Cloud Storage bucket. Permission 'storage.objects.list' denied on resource "
    "(or it may not exist)."
)
_ANONYMOUS = (  # ... to a call without credentials
    "Anonymous caller does not have storage.objects.get access to the Google Cloud "
    "Storage object. Permission 'storage.objects.get' denied on resource (or it may not "
    "exist)."
)
# Google's token endpoint's answer to a key it no longer accepts (deleted, revoked).
_BAD_GRANT = {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}


class GcsStub:
    """The bucket `bucket`'s `objects` (name: bytes), served at `url`."""

    def __init__(self, bucket: str) -> None:
        self.bucket = bucket
        self.objects: dict[str, bytes] = {}
        self.forbidden: set[str] = set()
        self.unauthorized: set[str] = set()
        self.unlistable = False
        self.token_refused = False
        self.requests: list[str] = []
        self.url = ""

    def resource(self, name: str) -> dict:
        size = str(len(self.objects[name]))
        return {"kind": "storage#object", "bucket": self.bucket, "name": name, "size": size}

    def answer(self, method: str, path: str) -> tuple[int, bytes | dict]:
        """The status and body (bytes, or JSON) of a request for `path`."""
        self.requests.append(f"{method} {path}")
        parts = urllib.parse.urlsplit(path)
        query = urllib.parse.parse_qs(parts.query)
        if method == "POST" and parts.path == "/token":
            if self.token_refused:
                return 400, _BAD_GRANT
            return 200, {"access_token": "stub", "expires_in": 3600, "token_type": "Bearer"}
        meta = f"/storage/v1/b/{self.bucket}/o"
        if parts.path == f"/storage/v1/b/{self.bucket}":
            return 200, {"kind": "storage#bucket", "name": self.bucket, "projectNumber": "1"}
        if parts.path == meta:
            return self.listing(query.get("prefix", [""])[0])
        for start in (f"/download/storage/v1/b/{self.bucket}/o/", meta + "/"):
            if parts.path.startswith(start):
                name = urllib.parse.unquote(parts.path[len(start) :])
                media = start != meta + "/" or query.get("alt") == ["media"]
                return self.object(name, media, parts.path)
        return 404, {"error": {"code": 404, "message": f"No such object: {parts.path}"}}

    def listing(self, prefix: str) -> tuple[int, dict]:
        """The objects whose names start with `prefix`, or 403 when `unlistable`."""
        if self.unlistable:
            return 403, {"error": {"code": 403, "message": _NOT_LISTED}}
        names = sorted(n for n in self.objects if n.startswith(prefix))
        items = [{**self.resource(n), "updated": _UPDATED} for n in names]
        return 200, {"kind": "storage#objects", "items": items}

    def object(self, name: str, media: bool, path: str) -> tuple[int, bytes | dict]:
        """The object `name`'s bytes (`media`) or metadata; a refusal, or 404."""
        if name in self.forbidden:
            return 403, {"error": {"code": 403, "message": _DENIED}}
        if name in self.unauthorized:
            return 401, {"error": {"code": 401, "message": _ANONYMOUS}}
        if name not in self.objects:
            return 404, {"error": {"code": 404, "message": f"No such object: {path}"}}
        if media:
            return 200, self.objects[name]
        return 200, {**self.resource(name), "updated": _UPDATED, "generation": "1"}


def _handler(stub: GcsStub) -> type[http.server.BaseHTTPRequestHandler]:
    class Answer(http.server.BaseHTTPRequestHandler):
        def _reply(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            status, body = stub.answer(self.command, self.path)
            kind = "application/octet-stream"
            if isinstance(body, dict):
                body, kind = json.dumps(body).encode(), "application/json; charset=UTF-8"
            ranged = self.headers.get("Range", "")
            if status == 200 and ranged.startswith("bytes="):
                first, _, last = ranged[len("bytes=") :].partition("-")
                end = int(last) + 1 if last else len(body)
                body, status = body[int(first) : end], 206
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _reply  # each one kept

        def log_message(self, *args) -> None:  # not the test's output
            pass

    return Answer


@contextlib.contextmanager
def serving(bucket: str) -> Iterator[GcsStub]:
    """A `GcsStub` of `bucket` answering on 127.0.0.1 for the `with` block's length."""
    stub = GcsStub(bucket)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(stub))
    stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    # Polled every 50 ms: its shutdown waits for the poll (0.5 s a test by default).
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()


def service_account_key(token_uri: str) -> dict:
    """A service account's key file, its token endpoint `token_uri` (the stub's): what
    google.auth reads without a call (an authorized user's always names Google's)."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: PLC0415

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return {
        "type": "service_account",
        "project_id": "stub",
        "private_key_id": "1",
        "private_key": pem.decode(),
        "client_email": "stub@stub.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": token_uri,
    }
