"""Reading the HTML pages in a browser when ``LABELER_API_READ_KEY`` is set.

A browser cannot send the ``X-API-Key`` header, so the key reaches the server once, through
the login form (``POST /login``) or a link's ``?key=...``, and then lives in an HttpOnly,
SameSite=Strict cookie that every read accepts like the header (``labeler.api.deps.can_read``).
A ``?key=`` is dropped from the address at once (a redirect), so it does not stay in the
history or get copied on.  A page opened without a valid key answers 401 with the login form.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Request, Security
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from labeler.api.deps import API_KEY_HEADER, READ_COOKIE, SettingsDep, can_read, read_key_ok
from labeler.api.routes.common import read_form

router = APIRouter(tags=["pages"], include_in_schema=False)


class NeedsLogin(Exception):
    def __init__(self, next_url: str, error: str | None = None) -> None:
        self.next_url, self.error = next_url, error


class KeyInAddress(Exception):
    def __init__(self, clean_url: str, key: str) -> None:
        self.clean_url, self.key = clean_url, key


def _local(url: str) -> str:
    """``url`` if it is a path on this server, else ``/`` (no open redirect through ``next``)."""
    return url if url.startswith("/") and not url.startswith(("//", "/\\")) else "/"


def _without_key(request: Request) -> str:
    url = request.url.remove_query_params("key")
    return url.path + (f"?{url.query}" if url.query else "")


def require_read_page(request: Request, settings: SettingsDep, key: str | None = Security(API_KEY_HEADER)) -> None:
    """Pages' read check: the header, the cookie, or ``?key=`` (made a cookie); else the login page."""
    given = request.query_params.get("key")
    if given is not None and settings.api_read_key:
        if not read_key_ok(settings, given):
            raise NeedsLogin(_without_key(request), "that key is not valid here")
        if request.method == "GET":
            raise KeyInAddress(_without_key(request), given)
        return
    if not can_read(request, settings, key):
        raise NeedsLogin(_without_key(request))


def _set_key_cookie(response: Response, request: Request, key: str) -> None:
    # quoted: a header is Latin-1, a key may be any text (deps.can_read unquotes it)
    response.set_cookie(READ_COOKIE, quote(key, safe=""), httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https")


def _login_page(request: Request, next_url: str, error: str | None, status: int) -> HTMLResponse:
    from labeler.api.routes.pages import templates

    return templates.TemplateResponse(request, "login.html", {"next": _local(next_url), "error": error},
                                      status_code=status)


def install(app: FastAPI) -> None:
    """The routes and the two answers of ``require_read_page`` (a redirect, the login page)."""
    app.include_router(router)

    @app.exception_handler(KeyInAddress)
    async def _key_in_address(request: Request, exc: KeyInAddress) -> Response:
        response = RedirectResponse(_local(exc.clean_url), status_code=303)
        _set_key_cookie(response, request, exc.key)
        return response

    @app.exception_handler(NeedsLogin)
    async def _needs_login(request: Request, exc: NeedsLogin) -> Response:
        return _login_page(request, exc.next_url, exc.error, 401)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/") -> HTMLResponse:
    return _login_page(request, next, None, 200)


@router.post("/login")
async def login(request: Request, settings: SettingsDep) -> Response:
    form = await read_form(request)
    key, next_url = form.get("key", ""), _local(form.get("next", "/"))
    if not key or not read_key_ok(settings, key):
        return _login_page(request, next_url, "that key is not valid here", 401)
    response = RedirectResponse(next_url, status_code=303)
    if settings.api_read_key:  # without a read key every page is open: nothing to keep
        _set_key_cookie(response, request, key)
    return response


@router.get("/logout")
def logout() -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(READ_COOKIE, path="/")
    return response
