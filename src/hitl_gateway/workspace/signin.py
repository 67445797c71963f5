"""The workspace's sign-in: a reviewer token, or where OIDC is on a pasted token the API
would accept, in a form; or the OIDC authorization-code flow (workspace/oidc_flow.py). Both
end in the same kind of session (workspace/sessions.py), which every page checks against the
files in force: a reviewers-file session while the file still grants its token, an OIDC
session until its ID token expires and while the groups file still grants one of its groups.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from hitl_gateway.review.auth import OidcReviewer, Reviewer
from hitl_gateway.review.identities import Identities, Refused
from hitl_gateway.review.oidc import looks_like_jwt
from hitl_gateway.workspace.oidc_flow import FLOW_COOKIE, CodeFlow, SignInError
from hitl_gateway.workspace.sessions import COOKIE, FLOW_TTL_S, Session, Sessions
from hitl_gateway.workspace.web import HEADERS, PREFIX, form, page, redirect


class SignIn:
    """The sign-in pages, and who a request's session is (``signed_in``)."""

    def __init__(
        self, identities: Identities, sessions: Sessions, code_flow: CodeFlow | None = None
    ) -> None:
        self.identities = identities
        self.sessions = sessions
        self.code_flow = code_flow

    async def signed_in(self, request: Request) -> tuple[Session, Reviewer] | None:
        session = await self.sessions.get(request.cookies.get(COOKIE))
        if session is None:
            return None
        who: Reviewer | None
        if session.expires_at_s is not None:  # OIDC: the groups file in force, until expiry
            who = self.identities.session_reviewer(
                session.reviewer, session.groups, session.expires_at_s
            )
        else:
            who = self.identities.reviewers.get(session.reviewer)
            if who is not None and who.token_sha256 != session.token_sha256:
                who = None  # the reviewers file no longer grants the token it was made with
        return (session, who) if who is not None else None

    async def form_of(self, request: Request, session: Session) -> dict[str, str]:
        found = await form(request)
        if not session.csrf_ok(found.get("csrf")):
            raise HTTPException(403, "the form has expired: reload the page and try again")
        return found

    async def login_page(self, notice: str = "") -> HTMLResponse:
        return self._login(200, notice)

    def _login(self, status: int, notice: str) -> HTMLResponse:
        return page("login.html", status, notice=notice, code_flow=self.code_flow is not None,
                    oidc=self.identities.oidc is not None)  # fmt: skip

    async def login(self, request: Request) -> Response:
        """The token form: a reviewers-file token or, where OIDC is on, a token the API
        would accept (the issuer's JWT, pasted)."""
        token = (await form(request)).get("token", "").strip()
        found = await self.identities.authenticate(token)
        if isinstance(found, Refused):
            jwt = self.identities.oidc is not None and looks_like_jwt(token)
            notice = found.message if jwt or found.status != 401 else (
                "That token is not a reviewer's token.")  # fmt: skip
            return self._login(found.status, notice)
        return await self._signed_in_as(request, found)

    async def _signed_in_as(self, request: Request, who: Reviewer) -> Response:
        if isinstance(who, OidcReviewer):
            session = await self.sessions.start(who.id, groups=who.groups,
                                                expires_at_s=who.expires_at_s)  # fmt: skip
        else:
            session = await self.sessions.start(who.id, who.token_sha256 or "")
        response = redirect("/")
        self._session_cookie(request, response, session)
        return response

    @staticmethod
    def _session_cookie(request: Request, response: Response, session: Session) -> None:
        response.set_cookie(COOKIE, session.sid, max_age=session.ttl_s, httponly=True,
                            samesite="strict", secure=request.url.scheme == "https",
                            path=PREFIX)  # fmt: skip

    async def oidc_start(self, request: Request) -> Response:
        """Off to the issuer (a GET link, not a form: the page's CSP allows forms to post
        to the gateway only, redirects included)."""
        if self.code_flow is None:
            raise HTTPException(404, "OIDC sign-in is not configured")
        begun = await self.code_flow.begin()
        response = RedirectResponse(begun.url, status_code=303, headers=HEADERS)
        # Lax: the issuer's redirect back is a cross-site navigation, which a Strict cookie
        # would not accompany.
        response.set_cookie(FLOW_COOKIE, begun.binding, max_age=FLOW_TTL_S, httponly=True,
                            samesite="lax", secure=request.url.scheme == "https",
                            path=f"{PREFIX}/oidc")  # fmt: skip
        return response

    async def oidc_callback(
        self, request: Request, state: str = "", code: str = "", error: str = ""
    ) -> Response:
        """Back from the issuer: the code for an ID token, the ID token for a session."""
        if self.code_flow is None:
            raise HTTPException(404, "OIDC sign-in is not configured")
        if error:
            return self._login(401, f"The issuer did not sign you in ({error[:64]}).")
        try:
            claims = await self.code_flow.finish(state, code, request.cookies.get(FLOW_COOKIE))
        except SignInError as exc:
            return self._login(401, exc.message)
        found = self.identities.of_claims(claims)
        if isinstance(found, Refused):
            return self._login(found.status, found.message)
        session = await self.sessions.start(found.id, groups=found.groups,
                                            expires_at_s=found.expires_at_s)  # fmt: skip
        # A page that moves on by itself rather than a redirect: the browser arrived from
        # the issuer's site, and a navigation that began there would not carry the new
        # SameSite=Strict cookie; one this page starts does.
        response = page("signed_in.html", who=found)
        self._session_cookie(request, response, session)
        response.delete_cookie(FLOW_COOKIE, path=f"{PREFIX}/oidc")
        return response

    async def logout(self, request: Request) -> Response:
        found = await self.signed_in(request)
        if found is not None:
            await self.form_of(request, found[0])
            await self.sessions.end(found[0].sid)
        response = redirect("/login")
        response.delete_cookie(COOKIE, path=PREFIX)
        return response

    def routes(self, router: APIRouter) -> None:
        router.add_api_route("/login", self.login_page, methods=["GET"])
        router.add_api_route("/login", self.login, methods=["POST"])
        router.add_api_route("/logout", self.logout, methods=["POST"])
        router.add_api_route("/oidc/start", self.oidc_start, methods=["GET"])
        router.add_api_route("/oidc/callback", self.oidc_callback, methods=["GET"])
