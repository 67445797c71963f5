"""A local OpenID Connect issuer for tests: keys the tests generate, tokens they mint, and the
issuer's HTTP side (discovery, JWKS, authorize, token) as one pure handler, served through
httpx.MockTransport (unit tests: no network) or a real HTTP server on 127.0.0.1:0
(integration tests)."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey

CLIENT_ID = "hitl-workspace"
AUDIENCE = "hitl-gateway"


def rsa_key(kid: str) -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig"})


def ec_key(kid: str) -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": kid})


def ed_key(kid: str) -> OKPKey:
    return OKPKey.generate_key("Ed25519", parameters={"kid": kid})


_ALG = {"RSA": "RS256", "EC": "ES256", "OKP": "EdDSA"}


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, value: Any, status: int = 200) -> Response:
        return cls(status, json.dumps(value).encode(), {"Content-Type": "application/json"})


@dataclass
class LocalIssuer:
    """``url`` is set once served. ``published`` is the JWKS the issuer serves; ``signing``
    the key it signs with. ``user``: who the authorization endpoint signs in."""

    url: str = "http://127.0.0.1:1"
    signing: Key = field(default_factory=lambda: rsa_key("k1"))
    published: list[Key] = field(default_factory=list)
    user: dict[str, Any] = field(default_factory=dict)
    client_secret: str | None = None
    jwks_requests: int = 0
    token_requests: int = 0
    _codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if not self.published:
            self.published = [self.signing]

    def rotate(self, new: Key, keep_old: bool = True) -> None:
        """Sign with ``new`` from now on, and publish it (with the old key, or alone)."""
        self.published = [*(self.published if keep_old else []), new]
        self.signing = new

    def mint(
        self,
        *,
        key: Key | None = None,
        header: dict[str, Any] | None = None,
        lifetime_s: int = 300,
        **claims: Any,
    ) -> str:
        """A token signed with ``key`` (the signing key): iss, aud, iat, exp and sub by
        default, each overridable (None drops it)."""
        key = key or self.signing
        now = int(time.time())
        body = {"iss": self.url, "aud": AUDIENCE, "sub": "dr-oidc", "iat": now,
                "exp": now + lifetime_s, **claims}  # fmt: skip
        body = {k: v for k, v in body.items() if v is not None}
        head = {"alg": _ALG[key.key_type], "kid": key.kid, **(header or {})}
        head = {k: v for k, v in head.items() if v is not None}
        return jwt.encode(head, body, key, algorithms=[head["alg"]])

    # -- the HTTP side ----------------------------------------------------------------------

    def handle(self, method: str, target: str, body: bytes, headers: dict[str, str]) -> Response:
        parts = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if method == "GET" and parts.path == "/.well-known/openid-configuration":
            return Response.json({
                "issuer": self.url, "jwks_uri": f"{self.url}/jwks",
                "authorization_endpoint": f"{self.url}/authorize",
                "token_endpoint": f"{self.url}/token",
                "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
            })  # fmt: skip
        if method == "GET" and parts.path == "/jwks":
            with self._lock:
                self.jwks_requests += 1
            return Response.json({"keys": [k.as_dict(private=False) for k in self.published]})
        if method == "GET" and parts.path == "/authorize":
            return self._authorize(query)
        if method == "POST" and parts.path == "/token":
            form = {k: v[-1] for k, v in parse_qs(body.decode()).items()}
            return self._token(form, headers)
        return Response(404, b"not found")

    def _authorize(self, query: dict[str, str]) -> Response:
        if query.get("response_type") != "code" or query.get("client_id") != CLIENT_ID:
            return Response(400, b"bad authorization request")
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            return Response(400, b"PKCE required")
        code = secrets.token_urlsafe(16)
        self._codes[code] = dict(query)
        back = {"code": code, "state": query.get("state", "")}
        return Response(302, headers={"Location": f"{query['redirect_uri']}?{urlencode(back)}"})

    def _token(self, form: dict[str, str], headers: dict[str, str]) -> Response:
        with self._lock:
            self.token_requests += 1
        grant = self._codes.pop(form.get("code", ""), None)
        if grant is None or form.get("grant_type") != "authorization_code":
            return Response.json({"error": "invalid_grant"}, 400)
        if form.get("redirect_uri") != grant["redirect_uri"]:
            return Response.json({"error": "invalid_grant"}, 400)
        verifier = form.get("code_verifier", "")
        digest = hashlib.sha256(verifier.encode()).digest()
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != grant["code_challenge"]:
            return Response.json({"error": "invalid_grant", "error_description": "PKCE"}, 400)
        if self.client_secret is not None:
            expected = base64.b64encode(f"{CLIENT_ID}:{self.client_secret}".encode()).decode()
            if headers.get("authorization") != f"Basic {expected}":
                return Response.json({"error": "invalid_client"}, 401)
        id_token = self.mint(aud=CLIENT_ID, nonce=grant.get("nonce"), **self.user)
        return Response.json({"id_token": id_token, "access_token": "opaque",
                              "token_type": "Bearer", "expires_in": 300})  # fmt: skip

    # -- serving ----------------------------------------------------------------------------

    def transport(self) -> httpx.MockTransport:
        """The issuer inside an httpx client: no sockets."""

        def respond(request: httpx.Request) -> httpx.Response:
            found = self.handle(request.method, str(request.url.raw_path, "ascii"),
                                request.content,
                                {k.lower(): v for k, v in request.headers.items()})  # fmt: skip
            return httpx.Response(found.status, headers=found.headers, content=found.body)

        return httpx.MockTransport(respond)


class ServedIssuer:
    """``issuer`` on a real HTTP server on 127.0.0.1, an ephemeral port."""

    def __init__(self, issuer: LocalIssuer) -> None:
        self.issuer = issuer
        owner = issuer

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                found = owner.handle(self.command, self.path, body,
                                     {k.lower(): v for k, v in self.headers.items()})  # fmt: skip
                self.send_response(found.status)
                for name, value in found.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(found.body)))
                self.end_headers()
                self.wfile.write(found.body)

            do_GET = do_POST = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        issuer.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> LocalIssuer:
        self._thread.start()
        return self.issuer

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
