"""A small OAuth 2.0 token endpoint for tests, on 127.0.0.1: the client credentials grant
(HTTP Basic client authentication), RS256 JWTs signed with the secured broker's issuer key
(deploy/local/secure.py writes the key and the JWKS the broker checks them against)."""

from __future__ import annotations

import base64
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@dataclass
class TokenIssuer:
    signing_keyfile: Path
    kid: str
    issuer: str
    audience: str
    clients: dict[str, str]  # client id -> secret
    lifetime_s: int = 300
    issued: list[str] = field(default_factory=list)  # client ids, one per token
    refused: list[str] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/oauth2/token"

    def sign(self, claims: dict[str, Any]) -> str:
        key = serialization.load_pem_private_key(self.signing_keyfile.read_bytes(), None)
        assert isinstance(key, rsa.RSAPrivateKey)
        header = {"alg": "RS256", "typ": "JWT", "kid": self.kid}
        signing_input = f"{_b64(orjson.dumps(header))}.{_b64(orjson.dumps(claims))}"
        signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64(signature)}"

    def answer(self, authorization: str | None, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        client, secret = _basic(authorization)
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        if client is None or self.clients.get(client) != secret:
            self.refused.append(client or "")
            return 401, {
                "error": "invalid_client",
                "error_description": "unknown client or bad secret",
            }
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": self.audience, "sub": client, "iat": now,
                  "exp": now + self.lifetime_s, "scope": form.get("scope") or "kafka",
                  "jti": secrets.token_hex(8)}  # fmt: skip
        self.issued.append(client)
        token = self.sign(claims)
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": self.lifetime_s}

    @contextmanager
    def running(self) -> Iterator[TokenIssuer]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length).decode()
                form = {k: v[0] for k, v in parse_qs(body).items()}
                status, answer = issuer.answer(self.headers.get("Authorization"), form)
                payload = orjson.dumps(answer)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_: Any) -> None:  # quiet
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join(timeout=5)


def _basic(authorization: str | None) -> tuple[str | None, str | None]:
    if not authorization or not authorization.startswith("Basic "):
        return None, None
    try:
        client, _, secret = base64.b64decode(authorization[6:]).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None, None
    return client, secret
