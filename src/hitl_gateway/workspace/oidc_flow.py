"""The workspace's OpenID Connect sign-in: the authorization-code flow with PKCE (RFC 7636).

``begin``: a state, a nonce and a PKCE verifier, kept in Redis under the state for a few
minutes with the hash of a random value the browser keeps in a cookie (so a callback made
in another browser, a login CSRF, finds nothing); the browser goes to the issuer's
authorization endpoint (from discovery). ``finish``: the state taken once and matched with
the cookie, the code exchanged at the token endpoint with the verifier (and the client
secret, when there is one), the ID token verified like a bearer token but for this client
(``aud``, ``azp``) and this sign-in (``nonce``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import orjson

from hitl_gateway.errors import IssuerUnavailable, issuer_errors
from hitl_gateway.review.issuer import MAX_DOCUMENT_BYTES, Issuer
from hitl_gateway.review.oidc import TokenError, Verifier
from hitl_gateway.settings import OidcSettings
from hitl_gateway.workspace.sessions import Sessions

FLOW_COOKIE = "hitl_oidc"


class SignInError(Exception):
    """The sign-in cannot complete; ``message`` is for the sign-in page."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class Begun:
    url: str  # where the browser goes: the issuer's authorization endpoint
    binding: str  # the flow cookie's value


def pkce_challenge(verifier: str) -> str:
    """S256: base64url(SHA-256(verifier)) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class CodeFlow:
    def __init__(
        self, settings: OidcSettings, issuer: Issuer, verifier: Verifier, sessions: Sessions
    ) -> None:
        assert settings.client_id is not None
        assert settings.redirect_url is not None
        self.settings = settings
        self.client_id = settings.client_id
        self.redirect_url = settings.redirect_url
        self._issuer = issuer
        self._verifier = verifier
        self._sessions = sessions

    async def begin(self) -> Begun:
        endpoint = (await self._issuer.endpoints()).authorization_endpoint
        if endpoint is None:
            raise IssuerUnavailable("the issuer's discovery document names no authorization"
                                    " endpoint")  # fmt: skip
        state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        verifier, binding = secrets.token_urlsafe(64), secrets.token_urlsafe(32)
        await self._sessions.begin_flow(
            state, {"nonce": nonce, "verifier": verifier, "binding": _digest(binding)}
        )
        query = urlencode({
            "response_type": "code", "client_id": self.client_id,
            "redirect_uri": self.redirect_url, "scope": self.settings.scopes, "state": state,
            "nonce": nonce, "code_challenge": pkce_challenge(verifier),
            "code_challenge_method": "S256",
        })  # fmt: skip
        return Begun(f"{endpoint}{'&' if '?' in endpoint else '?'}{query}", binding)

    async def finish(self, state: str, code: str, binding: str | None) -> dict[str, Any]:
        """The verified claims of the sign-in's ID token; ``SignInError`` saying why not."""
        # Matched with the browser before it is used up: a callback replayed elsewhere
        # cannot spend the sign-in of the browser that started it.
        flow = await self._sessions.flow(state)
        if flow is not None and (
            binding is None or not hmac.compare_digest(_digest(binding), str(flow["binding"]))
        ):
            raise SignInError("This sign-in was started in another browser: start again.")
        if flow is None or not await self._sessions.end_flow(state):
            raise SignInError("This sign-in has expired or was already used: start again.")
        if not code or len(code) > 4_096:
            raise SignInError("The issuer sent no usable authorization code.")
        id_token = await self._exchange(code, str(flow["verifier"]))
        try:
            return await self._verifier.verify(
                id_token, audience=self.client_id, nonce=str(flow["nonce"]),
                authorized_party=self.client_id,
            )  # fmt: skip
        except TokenError as exc:
            raise SignInError(f"The issuer's ID token was refused: {exc.message}") from exc

    async def _exchange(self, code: str, code_verifier: str) -> str:
        endpoint = (await self._issuer.endpoints()).token_endpoint
        if endpoint is None:
            raise IssuerUnavailable("the issuer's discovery document names no token endpoint")
        form = {"grant_type": "authorization_code", "code": code,
                "redirect_uri": self.redirect_url, "code_verifier": code_verifier,
                "client_id": self.client_id}  # fmt: skip
        headers = {"Accept": "application/json"}
        secret = self.settings.client_secret
        if secret is not None:  # client_secret_basic: each part form-encoded (RFC 6749 2.3.1)
            pair = f"{quote(self.client_id, safe='')}:{quote(secret.get_secret_value(), safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        with issuer_errors("oidc token exchange"):
            response = await self._issuer.client.post(endpoint, data=form, headers=headers)
        body = _json(response.content)
        if response.status_code != 200:
            error = str(body.get("error", response.status_code))[:64]
            raise SignInError(f"The issuer refused the authorization code ({error}).")
        id_token = body.get("id_token")
        if not isinstance(id_token, str):
            raise SignInError("The issuer's token response has no ID token (scope openid?).")
        return id_token


def _json(content: bytes) -> dict[str, Any]:
    if len(content) > MAX_DOCUMENT_BYTES:
        return {}
    try:
        found = orjson.loads(content)
    except orjson.JSONDecodeError:
        return {}
    return found if isinstance(found, dict) else {}
