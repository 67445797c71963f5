"""The workspace's pages: the pools and their queues, an item with its rubric, the decision,
and the reviewer's own day (signing in: workspace/signin.py).

Server-rendered (Jinja2, autoescaped) from the gateway's HTTP server: no build step, no
outside network, and every rule the review API enforces is enforced here by the same code
(``submit`` for decisions, ``take_item`` for leases, ``Reviewer.may_review`` for pools and
domains). Forms are posted as ``application/x-www-form-urlencoded``, each with the session's
CSRF token; the item page renews its lease with a ``fetch`` carrying the token in a header.
"""

from __future__ import annotations

import time
import uuid
from importlib import resources
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from hitl_gateway.codec import read_json
from hitl_gateway.outputs import blind_view
from hitl_gateway.policy.store import PolicyStore
from hitl_gateway.review.auth import ANY, Reviewer
from hitl_gateway.review.identities import Identities
from hitl_gateway.review.lease_api import take_item
from hitl_gateway.review.submit import Reviewing, seats, submit
from hitl_gateway.workspace.forms import decision, editable
from hitl_gateway.workspace.oidc_flow import CodeFlow
from hitl_gateway.workspace.render import markdown, output_of, shown
from hitl_gateway.workspace.sessions import Sessions
from hitl_gateway.workspace.signin import SignIn
from hitl_gateway.workspace.web import PREFIX
from hitl_gateway.workspace.web import page as _page
from hitl_gateway.workspace.web import redirect as _redirect

_STATIC = {"workspace.css": "text/css", "workspace.js": "text/javascript"}


class Workspace:
    """The pages, over the review path (``Reviewing``), who reviewers are (the reviewers file
    and, where configured, the OIDC issuer), the policies and the sign-in sessions."""

    def __init__(
        self,
        r: Reviewing,
        identities: Identities,
        policies: PolicyStore,
        sessions: Sessions,
        code_flow: CodeFlow | None = None,
    ) -> None:
        self.r = r
        self.policies = policies
        self.sign_in = SignIn(identities, sessions, code_flow)
        self.signed_in = self.sign_in.signed_in
        self.form_of = self.sign_in.form_of

    def pools_of(self, who: Reviewer) -> list[str]:
        known = sorted(self.policies.current.pools)
        return known if ANY in who.pools else [p for p in who.pools if p in known]

    # -- pools and queues ---------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        found = await self.signed_in(request)
        if found is None:
            return _redirect("/login")
        session, who = found
        now_ms = int(time.time() * 1000)
        rows = []
        for pool in self.pools_of(who):
            waiting, oldest, past = await self.r.index.backlog(pool, now_ms)
            spec = self.policies.current.pools[pool]
            rows.append({"pool": pool, "waiting": waiting, "past_sla": past,
                         "oldest_s": (now_ms - oldest) / 1000 if oldest else None,
                         "description": spec.description,
                         "languages": ", ".join(spec.languages) or "any"})  # fmt: skip
        return _page("home.html", who=who, session=session, rows=rows, now_ms=now_ms)

    async def queue(
        self, request: Request, pool: str, domain: str = "", language: str = "", notice: str = ""
    ) -> Response:
        found = await self.signed_in(request)
        if found is None:
            return _redirect("/login")
        session, who = found
        if pool not in self.pools_of(who):
            return _page("error.html", 403, who=who, session=session,
                         message=f"You are not granted pool {pool}.")  # fmt: skip
        visible = who.domains_in(pool)
        granted = None if visible is None else list(visible)
        domains = [domain] if domain and (granted is None or domain in granted) else granted
        order = self.policies.current.pools[pool].queue_order
        total, metas = await self.r.index.queue(pool, order=order, limit=200, domains=domains)
        if language:
            wanted = language.lower()
            metas = [m for m in metas if (m.language or "").lower().startswith(wanted)]
        now_ms = int(time.time() * 1000)
        holders = await self.r.leases.holders([m.item_id for m in metas], now_ms)
        domain_choices = sorted({m.domain for m in metas} | ({domain} if domain else set()))
        return _page("queue.html", who=who, session=session, pool=pool, total=total,
                     items=metas, holders=holders, now_ms=now_ms, domain=domain,
                     language=language, domains=domain_choices, notice=notice,
                     seats=seats)  # fmt: skip

    # -- an item ------------------------------------------------------------------------

    async def take(self, request: Request, item_id: str) -> Response:
        found = await self.signed_in(request)
        if found is None:
            return _redirect("/login")
        session, who = found
        form = await self.form_of(request, session)
        try:
            await take_item(self.r, who, item_id)
        except HTTPException as exc:
            back = form.get("back") or "/"
            return _redirect(f"{back}?notice={quote(str(exc.detail))}")
        return _redirect(f"/items/{quote(item_id, safe='')}")

    async def renew(self, request: Request, item_id: str) -> Response:
        found = await self.signed_in(request)
        if found is None:
            return JSONResponse({"error": "signed out"}, 401)
        session, who = found
        if not session.csrf_ok(request.headers.get("x-csrf-token")):
            return JSONResponse({"error": "stale page"}, 403)
        try:
            taken, _ = await take_item(self.r, who, item_id)
        except HTTPException as exc:
            return JSONResponse({"error": exc.detail}, exc.status_code)
        mine = taken.of(who.id)
        return JSONResponse({"expires_at_ms": mine.expires_ms if mine else None})

    async def release(self, request: Request, item_id: str) -> Response:
        found = await self.signed_in(request)
        if found is None:
            return _redirect("/login")
        session, who = found
        form = await self.form_of(request, session)
        await self.r.leases.release(item_id, who.id)
        return _redirect(form.get("back") or "/")

    async def item(self, request: Request, item_id: str, notice: str = "") -> Response:
        found = await self.signed_in(request)
        if found is None:
            return _redirect("/login")
        session, who = found
        held = await self.r.index.get(item_id)
        if held is None:
            return _page("error.html", 404, who=who, session=session,
                         message=f"{item_id} is not held (decided, or never held).")  # fmt: skip
        meta = held.meta
        deciding = meta.adjudicator_pool if meta.stage == "adjudication" else meta.pool
        if not who.may_review(deciding or meta.pool, meta.domain):
            message = f"You are not granted pool {meta.pool} for {meta.domain}."
            return _page("error.html", 403, who=who, session=session, message=message)
        record = blind_view(held.value) if meta.blind else read_json(held.value)
        output = output_of(record)
        now_ms = int(time.time() * 1000)
        live = (await self.r.leases.holders([item_id], now_ms)).get(item_id, [])
        mine = next((lease for lease in live if lease.reviewer == who.id), None)
        rubric = self.policies.current.routing.rubrics.get(meta.rubric or "")
        loaded = self.policies.current.policies.get(meta.domain)
        return _page(
            "item.html", who=who, session=session, meta=meta, record=record,
            shown=shown(output), editable=editable(output), rubric=rubric,
            judge=None if meta.blind else meta.judge, lease=mine, others=[
                lease for lease in live if lease.reviewer != who.id
            ], now_ms=now_ms, notice=notice, back=f"/pools/{quote(meta.pool)}",
            renew_every_s=max(1, min(60, int(self.r.settings.review.lease_s / 3))),
            reject_reasons=getattr(rubric, "reject_reasons", ()) or (),
            owner=loaded.policy.owner if loaded else "", decision_id=uuid.uuid4().hex,
            criteria=_criteria(rubric),
        )  # fmt: skip

    async def decide(self, request: Request, item_id: str) -> Response:
        found = await self.signed_in(request)
        if found is None:
            return _redirect("/login")
        session, who = found
        form = await self.form_of(request, session)
        try:
            body = decision(form)
        except ValueError as exc:
            return _redirect(f"/items/{quote(item_id, safe='')}?notice={quote(str(exc))}")
        try:
            status, result = await submit(self.r, who, item_id, body)
        except HTTPException as exc:
            status, result = exc.status_code, {"state": "refused", "message": str(exc.detail)}
        return _page("result.html", who=who, session=session, item_id=item_id, status=status,
                     result=result, back=form.get("back") or "/")  # fmt: skip

    # -- my work ------------------------------------------------------------------------

    async def me(self, request: Request) -> Response:
        found = await self.signed_in(request)
        if found is None:
            return _redirect("/login")
        session, who = found
        day = await self.r.work.today(who.id)
        planned = {p: self.policies.current.pools[p].cases_per_hour for p in self.pools_of(who)}
        return _page("me.html", who=who, session=session, day=day, planned=planned)

    async def static(self, name: str) -> Response:
        if name not in _STATIC:
            raise HTTPException(404, "no such file")
        body = resources.files("hitl_gateway.workspace").joinpath("static", name).read_bytes()
        return Response(body, media_type=_STATIC[name], headers={"Cache-Control": "max-age=300"})

    def router(self) -> APIRouter:
        router = APIRouter(prefix=PREFIX, include_in_schema=False)
        self.sign_in.routes(router)
        router.add_api_route("/", self.home, methods=["GET"])
        router.add_api_route("/pools/{pool}", self.queue, methods=["GET"])
        router.add_api_route("/items/{item_id}/take", self.take, methods=["POST"])
        router.add_api_route("/items/{item_id}/renew", self.renew, methods=["POST"])
        router.add_api_route("/items/{item_id}/release", self.release, methods=["POST"])
        router.add_api_route("/items/{item_id}", self.item, methods=["GET"])
        router.add_api_route("/items/{item_id}/decide", self.decide, methods=["POST"])
        router.add_api_route("/me", self.me, methods=["GET"])
        router.add_api_route("/static/{name}", self.static, methods=["GET"])
        return router


def _criteria(rubric: Any) -> Any:
    """A rubric's one-page criteria, rendered (None when it has none)."""
    text = getattr(rubric, "criteria", "") if rubric is not None else ""
    return markdown(text) if text else None
