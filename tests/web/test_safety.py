"""The dashboard's safety rules over HTTP (SPEC 9): the token (bearer header or the login
page's cookie, else 401), CSRF on every POST (403, nothing changed), read-only (no buttons,
403) and one tenant's view; and `pinrepl web` refusing another host without a token or an
address in use, each in one line, and serving where it says it does."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from ..conftest import clean_env, invoke, one_line
from .conftest import History, client, csrf_of

TOKEN = "s3cret-token"


async def test_with_a_token_every_request_needs_it(app, history):
    async with client(app, token=TOKEN) as web:
        assert (await web.get("/")).status_code == 401
        assert (await web.get("/runs")).status_code == 401
        wrong = await web.get("/", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        right = await web.get("/", headers={"Authorization": f"Bearer {TOKEN}"})
        assert right.status_code == 200 and "hello" in right.text


async def test_the_login_page_sets_a_cookie_that_lets_the_browser_in(app, history):
    async with client(app, token=TOKEN) as web:
        page = await web.get("/login")
        assert page.status_code == 200
        csrf = web.cookies["pinrepl_csrf"]
        refused = await web.post("/login", data={"csrf": csrf, "token": "nope"})
        assert refused.status_code == 401 and "token" in refused.text
        signed = await web.post("/login", data={"csrf": csrf, "token": TOKEN})
        assert signed.status_code == 303
        assert (await web.get("/runs")).status_code == 200


async def test_a_post_without_its_csrf_token_is_403_and_changes_nothing(app, history):
    async with client(app) as web:
        await csrf_of(web)
        missing = await web.post("/jobs/hello/pause", data={})
        wrong = await web.post("/jobs/hello/pause", data={"csrf": "forged"})
    assert (missing.status_code, wrong.status_code) == (403, 403)
    assert await app.pauses() == []


async def test_read_only_hides_the_buttons_and_refuses_the_actions(app, history: History):
    async with client(app, read_only=True) as web:
        jobs = await web.get("/")
        run = await web.get(f"/runs/{history.failed}")
        csrf = await csrf_of(web)
        retried = await web.post(f"/runs/{history.failed}/retry", data={"csrf": csrf})
        paused = await web.post("/jobs/hello/pause", data={"csrf": csrf})
    assert "Pause" not in jobs.text and "Run now" not in jobs.text
    assert "Retry" not in run.text
    assert (retried.status_code, paused.status_code) == (403, 403)
    assert await app.pauses() == []


async def test_a_tenant_dashboard_shows_that_tenants_runs_only(app, history: History):
    async with client(app, tenant="acme") as web:
        runs = await web.get("/runs")
        others = await web.get(f"/runs/{history.failed}")  # a run of no tenant
        own = await web.get(f"/runs/{history.acme_queued}")
    assert runs.status_code == 200
    assert "no luck today" not in runs.text and "globex" not in runs.text
    assert others.status_code == 404
    assert own.status_code == 200


def test_pinrepl_web_refuses_another_host_without_a_token(app_root: Path):
    result = invoke("web", "--host", "0.0.0.0", "--app", app_root)
    assert result.exit_code == 2
    assert "token" in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_pinrepl_web_on_a_port_in_use_says_so_in_one_line(app_root: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = invoke("web", "--port", str(port), "--app", app_root)
    assert one_line(result) == (f"cannot serve the dashboard on 127.0.0.1:{port}: Address "
                                "already in use (choose another --port or --host)")


def test_pinrepl_web_serves_where_its_first_line_says(app, app_root: Path):
    command = [sys.executable, "-m", "pinrepl", "web", "--port", "0", "--app", str(app_root)]
    with subprocess.Popen(command, env=clean_env(), stderr=subprocess.PIPE, text=True) as web:
        try:
            assert web.stderr is not None
            first = web.stderr.readline().strip()
            (url,) = re.findall(r"the dashboard of .* at (http://127\.0\.0\.1:\d+/)$", first)
            assert httpx.get(f"{url}runs", timeout=10).status_code == 200
        finally:
            web.terminate()
