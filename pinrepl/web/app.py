"""`create_app(app)`: the dashboard as a Starlette (ASGI) app, what `pinrepl web` serves and
what another ASGI app mounts (`Mount("/jobs", create_app(app))`): its addresses (SPEC 9),
its safety (`safety`) and its error pages, each a clear message with its status, never a
traceback (a bad filter or run id: 400; an unknown run or job: 404; refused: 401 or 403;
the database away: 503).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import DBAPIError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..db.engine import first_line
from ..errors import BadRunFilter, DatabaseUnavailable, PinreplError, UnknownBackgroundJob
from .dashboard import Dashboard
from .pages import (
    bots_page,
    cancel_run,
    jobs_page,
    login,
    login_page,
    logout,
    pause_job,
    refused,
    render,
    resume_job,
    retry_run,
    run_job,
    run_page,
    runs_page,
)
from .safety import Guard, Refused

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger("pinrepl.web")


@dataclass(frozen=True)
class Settings:
    """How this dashboard was made: its reads and actions, read-only or not, its token."""

    dashboard: Dashboard
    read_only: bool
    token: str | None
    #: The tenant as given (shown in the header), or None.
    tenant_shown: str | None


def create_app(app: App, *, read_only: bool = False, tenant: Any = None,
               token: str | None = None) -> Starlette:
    """The dashboard of `app`. `read_only`: no buttons, every action refused (403);
    `tenant` (an id or a name): only that tenant's runs, and the buttons act for it alone;
    `token`: every request must carry it (`Authorization: Bearer TOKEN`, or the cookie the
    login page sets), else 401. `app` stays the caller's to close."""
    routes = [
        Route("/", jobs_page, name="jobs"),
        Route("/runs", runs_page, name="runs"),
        Route("/runs/{run_id}", run_page, name="run"),
        Route("/bots", bots_page, name="bots"),
        Route("/jobs/{name:path}/run", run_job, methods=["POST"], name="run_job"),
        Route("/jobs/{name:path}/pause", pause_job, methods=["POST"], name="pause_job"),
        Route("/jobs/{name:path}/resume", resume_job, methods=["POST"],
              name="resume_job"),
        Route("/runs/{run_id}/retry", retry_run, methods=["POST"], name="retry_run"),
        Route("/runs/{run_id}/cancel", cancel_run, methods=["POST"], name="cancel_run"),
        Route("/login", login_page, methods=["GET"], name="login_page"),
        Route("/login", login, methods=["POST"], name="login"),
        Route("/logout", logout, methods=["POST"], name="logout"),
        Mount("/static", StaticFiles(packages=[("pinrepl.web", "static")]), name="static"),
    ]
    web = Starlette(
        routes=routes,
        middleware=[Middleware(Guard, token=token, refused=refused)],
        exception_handlers={
            Refused: _refused,
            BadRunFilter: _bad_filter,
            UnknownBackgroundJob: _unknown_job,
            HTTPException: _http_error,
            PinreplError: _pinrepl_error,
            DBAPIError: _database_error,
            OSError: _database_error,
            Exception: _internal_error,
        },
    )
    web.state.pinrepl = Settings(Dashboard(app, tenant), read_only, token,
                                 None if tenant is None else str(tenant))
    return web


def _error(request: Request, status: int, message: str, title: str) -> Response:
    return render(request, "error.html", status, title=title, message=message)


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)
    return await refused(request, exc)


async def _bad_filter(request: Request, exc: Exception) -> Response:
    return _error(request, 400, str(exc), "Bad request")


async def _unknown_job(request: Request, exc: Exception) -> Response:
    return _error(request, 404, str(exc), "No such job")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    messages = {404: f"there is no page at {request.url.path}",
                405: f"{request.method} is not how {request.url.path} is used"}
    detail = exc.detail if exc.detail and exc.detail not in (
        "Not Found", "Method Not Allowed") else messages.get(exc.status_code, str(exc.detail))
    titles = {404: "Not found", 405: "Not allowed"}
    return _error(request, exc.status_code, detail, titles.get(exc.status_code, "Error"))


async def _pinrepl_error(request: Request, exc: Exception) -> Response:
    """A user error an action or a page ran into (arguments Run now cannot give, an
    unknown tenant, a database pinrepl cannot use): its one line."""
    if isinstance(exc, DatabaseUnavailable):
        return _error(request, 503, str(exc), "Database unavailable")
    return _error(request, 400, str(exc), "Not done")


async def _database_error(request: Request, exc: Exception) -> Response:
    return _error(request, 503, f"the database did not answer: {first_line(exc)}",
                  "Database unavailable")


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return _error(request, 500, f"the dashboard failed: {type(exc).__name__} (its traceback "
                                "is in the server's log)", "Internal error")
