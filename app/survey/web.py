"""Rendering the survey's HTML: templates, security headers, the self-served static files.

Every page is sent with a Content-Security-Policy that allows nothing but
this server (no CDN, no fonts, no analytics, no inline script), so a page
that tried to reach elsewhere would be blocked by the browser, and the
browser test checks that none tries.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.templating import Jinja2Templates

# Inside the app package, so an installed wheel has them (app/templates is a
# link to the top-level templates/ in the source tree).
PACKAGE_DIR = Path(str(resources.files("app")))
TEMPLATES_DIR = PACKAGE_DIR / "templates"
STATIC_DIR = PACKAGE_DIR / "static" / "survey"
STATIC_URL = "/static/survey"
STATIC_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}



def csp(*, frame_ancestors: tuple[str, ...] = (), form_action: tuple[str, ...] = ()) -> str:
    """The pages' policy: this server only. An MTurk study's pages may be framed by the MTurk hosts
    (``frame_ancestors``) and post the finished HIT to its ``turkSubmitTo`` (``form_action``)."""
    ancestors = " ".join(frame_ancestors) or "'none'"
    actions = " ".join(["'self'", *form_action])
    return ("default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; "
            f"form-action {actions}; base-uri 'none'; frame-ancestors {ancestors}")


CSP = csp()
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}

# The statistics report is one self-contained file: inline CSS and SVG, images from this server
# (or embedded), never a script.
REPORT_CSP = ("default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; base-uri 'none'; "
              "form-action 'none'; frame-ancestors 'none'")
REPORT_HEADERS = {**SECURITY_HEADERS, "Content-Security-Policy": REPORT_CSP}

templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
templates.env.globals["static"] = lambda name: f"{STATIC_URL}/{name}"
templates.env.filters["paragraphs"] = lambda text: [p.strip() for p in str(text).split("\n\n") if p.strip()]


def render(request: Request, name: str, context: dict, status_code: int = 200,
           headers: dict[str, str] | None = None, policy: str | None = None) -> HTMLResponse:
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    response.headers.update(SECURITY_HEADERS)
    if policy:
        response.headers["Content-Security-Policy"] = policy
    if headers:
        response.headers.update(headers)
    return response


def message(request: Request, title: str, text: str, status_code: int = 200, *, link: str | None = None,
            link_text: str | None = None, headers: dict[str, str] | None = None,
            policy: str | None = None) -> HTMLResponse:
    return render(request, "survey/message.html",
                  {"title": title, "text": text, "link": link, "link_text": link_text or "Continue"},
                  status_code=status_code, headers=headers, policy=policy)


static_router = APIRouter(include_in_schema=False)


@static_router.get(STATIC_URL + "/{name}")
def static_file(name: str) -> FileResponse:
    """The survey's CSS, script and icon; nothing else (no directory listing, no path traversal)."""
    path = STATIC_DIR / name
    if "/" in name or name.startswith(".") or path.suffix not in STATIC_TYPES or not path.is_file():
        raise HTTPException(404, f"no static file {name!r}")
    return FileResponse(path, media_type=STATIC_TYPES[path.suffix],
                        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"})
