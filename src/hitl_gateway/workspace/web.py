"""The workspace's HTTP side: its templates, the security headers every page carries, form
bodies (bounded) and redirects within the workspace."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, PackageLoader, select_autoescape

PREFIX = "/workspace"
MAX_FORM_BYTES = 2_000_000

_env = Environment(
    loader=PackageLoader("hitl_gateway.workspace", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)

# No framing, no sniffing, no referrer, scripts and styles from the gateway only.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self';"
    " img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = _env.get_template(name).render(prefix=PREFIX, **context)
    return HTMLResponse(html, status_code=status, headers=HEADERS)


async def form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise HTTPException(413, "the form is too large")
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[-1] for k, v in parsed.items()}


def redirect(path: str) -> RedirectResponse:
    return RedirectResponse(f"{PREFIX}{path}", status_code=303)
