"""The dashboard's pages and actions: each reads what `Dashboard` gives and renders its
template; each action checks the POST (`safety.check_post`), calls the one `Dashboard`
method it stands for and sends the browser back to a page (303) with a one-line note.

Every page is served whole (its content in the HTML, no empty shell); its `live` block is
what htmx asks for again every two seconds (the request names its target, `live`), so the
page follows the runs as they start and end. A page's errors are pages too (`errors`).
"""

from __future__ import annotations

import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote
from zoneinfo import ZoneInfo

import jinja2
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ..runs.record import decode_args, shown_arguments
from ..runs.status import MEANINGS, STATUSES, Status
from .dashboard import Dashboard, Done
from .filters import ORIGINS, RunsQuery, parse_id
from .safety import (
    CSRF_FIELD,
    SESSION_COOKIE,
    Refused,
    check_post,
    cookie,
    csrf_token,
    session_value,
)

if TYPE_CHECKING:
    from .app import Settings

FLASH_COOKIE = "pinrepl_flash"
#: The id of the block htmx polls; a request that targets it gets that block alone.
LIVE = "live"

environment = jinja2.Environment(
    loader=jinja2.PackageLoader("pinrepl.web", "templates"),
    autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def settings(request: Request) -> Settings:
    return request.app.state.pinrepl


def dashboard(request: Request) -> Dashboard:
    return settings(request).dashboard


def render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
    """Template `name` as the page (or only its live block, for htmx's poll)."""
    template = environment.get_template(name)
    web = settings(request)
    values = {
        "request": request, "url_for": request.url_for, "csrf": csrf_token(request),
        "csrf_field": CSRF_FIELD, "read_only": web.read_only, "token": web.token is not None,
        "signed_in": SESSION_COOKIE in request.cookies, "tenant": web.tenant_shown,
        "zone": web.dashboard.timezone, "now": datetime.now(UTC), "statuses": STATUSES,
        "origins": ORIGINS, "meanings": MEANINGS, "path": request.url.path,
        "here": _here(request), "job_names": web.dashboard.app.jobs.names, **context,
    }
    polled = request.headers.get("hx-target") == LIVE and LIVE in template.blocks
    if polled:
        html = "".join(template.blocks[LIVE](template.new_context(values)))
        return HTMLResponse(html, status, headers={"cache-control": "no-store"})
    flash = request.cookies.get(FLASH_COOKIE)
    values["flash"] = json.loads(unquote(flash)) if flash and _is_json(unquote(flash)) else None
    response = HTMLResponse(template.render(values), status,
                            headers={"cache-control": "no-store"})
    if flash:
        response.headers.append("set-cookie", cookie(FLASH_COOKIE, "", _root(request),
                                                     max_age=0))
    return response


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")) or "/"


def _here(request: Request) -> str:
    """This page's address, path and query, to come back to after an action."""
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


# -- pages ---------------------------------------------------------------------------------


async def jobs_page(request: Request) -> Response:
    page = await dashboard(request).jobs()
    return render(request, "jobs.html", page=page, title="Jobs")


async def runs_page(request: Request) -> Response:
    board = dashboard(request)
    query = RunsQuery.parse(dict(request.query_params), board.timezone, datetime.now(UTC))
    page = await board.runs(query)
    return render(request, "runs.html", page=page, q=query, title="Runs")


async def run_page(request: Request) -> Response:
    run_id = parse_id(request.path_params["run_id"])
    page = await dashboard(request).run(run_id)
    if page is None:
        raise _no_run(request, run_id)
    return render(request, "run.html", page=page, title=f"Run {run_id}")


async def bots_page(request: Request) -> Response:
    bots = await dashboard(request).bots()
    return render(request, "bots.html", bots=bots, title="Bots",
                  names=await dashboard(request).names_of([r for b in bots for r in b.running]))


def _no_run(request: Request, run_id: int) -> HTTPException:
    days = settings(request).dashboard.app.settings.keep_runs_days
    return HTTPException(404, f"there is no run {run_id}: not yet, or no longer (the bots keep "
                              f"{days} days of runs: keep_runs_days)")


# -- actions -------------------------------------------------------------------------------


async def run_job(request: Request) -> Response:
    form = await _action(request)
    return _back(request, form, await dashboard(request).run_now(request.path_params["name"]),
                 default=request.url_for("jobs"))


async def pause_job(request: Request) -> Response:
    form = await _action(request)
    reason = (request.headers.get("hx-prompt") or form.get("reason") or "").strip()
    done = await dashboard(request).pause(request.path_params["name"], reason or None)
    return _back(request, form, done, default=request.url_for("jobs"))


async def resume_job(request: Request) -> Response:
    form = await _action(request)
    done = await dashboard(request).resume(request.path_params["name"])
    return _back(request, form, done, default=request.url_for("jobs"))


async def retry_run(request: Request) -> Response:
    await _action(request)
    run_id = parse_id(request.path_params["run_id"])
    done = await dashboard(request).retry(run_id)
    if done is None:
        raise _no_run(request, run_id)
    return _back(request, {}, done, default=request.url_for("run", run_id=str(done.run_id)))


async def cancel_run(request: Request) -> Response:
    form = await _action(request)
    run_id = parse_id(request.path_params["run_id"])
    done = await dashboard(request).cancel(run_id)
    if done is None:
        raise _no_run(request, run_id)
    return _back(request, form, done, default=request.url_for("run", run_id=str(run_id)))


async def _action(request: Request) -> dict[str, str]:
    return await check_post(request, read_only=settings(request).read_only)


def _back(request: Request, form: dict[str, str], done: Done, default: Any) -> Response:
    """303 to the page the form came from (its `next`, if it is one of this site's), else
    to `default`, with `done`'s note for that page to show once."""
    target = _safe_next(form.get("next")) or str(default)
    response = RedirectResponse(target, 303)
    note = {"message": done.message, "run": done.run_id}
    response.headers.append("set-cookie", cookie(FLASH_COOKIE, json.dumps(note), _root(request),
                                                 max_age=60))
    return response


def _safe_next(target: str | None) -> str | None:
    """`target` if it is a path of this site (never another site: `//host`, `/\\host`)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    return target


# -- signing in ----------------------------------------------------------------------------


async def login_page(request: Request) -> Response:
    if settings(request).token is None:
        return RedirectResponse(str(request.url_for("jobs")), 303)
    return render(request, "login.html", 200, title="Sign in", problem=None,
                  next=_safe_next(request.query_params.get("next")) or "")


async def login(request: Request) -> Response:
    web = settings(request)
    form = await check_post(request)
    if web.token is None:
        return RedirectResponse(str(request.url_for("jobs")), 303)
    given = form.get("token", "").strip()
    target = _safe_next(form.get("next")) or str(request.url_for("jobs"))
    if not hmac.compare_digest(given.encode(), web.token.encode()):
        return render(request, "login.html", 401, title="Sign in", next=target,
                      problem="that is not this dashboard's token")
    response = RedirectResponse(target, 303)
    response.headers.append("set-cookie", cookie(SESSION_COOKIE, session_value(web.token),
                                                 _root(request), max_age=30 * 86400))
    return response


async def logout(request: Request) -> Response:
    await check_post(request)
    response = RedirectResponse(str(request.url_for("login_page")), 303)
    response.headers.append("set-cookie", cookie(SESSION_COOKIE, "", _root(request), max_age=0))
    return response


async def refused(request: Request, refusal: Refused) -> Response:
    """The page of a request the safety rules refused (401: the login form)."""
    if refusal.status == 401:
        response = render(request, "login.html", 401, title="Sign in", problem=None,
                          next=_here(request) if request.method == "GET" else "")
        response.headers["www-authenticate"] = 'Bearer realm="pinrepl"'
        return response
    return render(request, "error.html", refusal.status, title="Refused",
                  message=refusal.message)


# -- what the templates use ----------------------------------------------------------------


def when(moment: datetime | None, zone: ZoneInfo) -> str:
    """A moment in the app's timezone, to the second: `2026-12-02 08:15:03`."""
    if moment is None:
        return ""
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")


def ago(moment: datetime | None, now: datetime) -> str:
    """`3 s ago`, `5 min ago`, `in 2 h`."""
    if moment is None:
        return ""
    seconds = (now - moment).total_seconds()
    later, seconds = seconds < 0, abs(seconds)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            amount = f"{seconds / size:.0f} {unit}"
            break
    else:
        amount = f"{seconds:.0f} s"
    return f"in {amount}" if later else f"{amount} ago"


def took(run: Any) -> str:
    """How long a run ran (so far, for one running): `1.2 s`, `3 min 4 s`."""
    if run.started_at is None:
        return ""
    end = run.finished_at or datetime.now(UTC)
    seconds = max(0.0, (end - run.started_at).total_seconds())
    if seconds < 60:
        return f"{seconds:.1f} s"
    return str(timedelta(seconds=round(seconds)))


def arguments(args: str) -> str:
    try:
        positional, keywords = decode_args(args)
    except (ValueError, AttributeError):
        return args
    return shown_arguments(positional, keywords).strip()


environment.filters.update(when=when, ago=ago, took=took, arguments=arguments,
                           urlquote=lambda text: quote(str(text), safe=""))
environment.globals.update(Status=Status)
