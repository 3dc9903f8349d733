"""The dashboard over HTTP (SPEC 9), in this process: every page served whole, the runs
page's filters and keyset pages, the live fragment, the actions, and bad input as a clear
4xx page, never a traceback."""

from __future__ import annotations

import html
import re
from datetime import timedelta

from pinrepl.db.models import utcnow
from pinrepl.runs.control import RunFilter

from .conftest import History, client, csrf_of


def main_of(page: str) -> str:
    """The page's content as text: its tags removed, its spaces folded."""
    body = page[page.index("<main>"):page.index("</main>")]
    return html.unescape(" ".join(re.sub(r"<[^>]+>", " ", body).split()))


def run_ids(page: str) -> list[int]:
    return [int(found) for found in re.findall(r'<tr data-run="(\d+)"', page)]


async def test_the_jobs_page_holds_schedules_next_slots_last_runs_and_buttons(app, history):
    async with client(app) as web:
        page = await web.get("/")
    assert page.status_code == 200
    text = main_of(page.text)
    assert 'hello jobs/hello.py */5 * * * * ["world"]' in text
    # A schedule in another timezone than the app's says which, with its arguments.
    assert '0 6 * * * Europe/Paris [] {"kind": "short"}' in text
    assert "reports/daily-summary" in text and "per tenant" in text
    assert "succeeded" in text and "never" in text  # hello's last run; needs-args never ran
    for action in ("run", "pause"):
        assert f'action="http://dashboard.test/jobs/reports/daily-summary/{action}"' in page.text
    assert 'hx-trigger="every 2s"' in page.text  # updated live


async def test_the_jobs_page_shows_a_paused_job_with_its_reason_and_resume(app, history):
    await app.pause_job("hello", reason="mail server down")
    async with client(app) as web:
        page = await web.get("/")
    row = page.text[page.text.index('data-job="hello"'):]
    row = row[:row.index("</tr>")]
    assert "paused" in row and "mail server down" in row
    assert "/jobs/hello/resume" in row and "/jobs/hello/pause" not in row


async def test_the_runs_page_lists_newest_first_with_every_column(app, history: History):
    async with client(app) as web:
        page = await web.get("/runs")
    assert page.status_code == 200
    ids = run_ids(page.text)
    assert ids == sorted(ids, reverse=True) and history.failed in ids
    text = main_of(page.text)
    assert "ValueError: no luck today" in text
    assert "acme" in text  # tenant names, not ids
    assert 'hx-trigger="every 2s"' in page.text


async def test_the_runs_page_filters_by_job_status_tenant_origin_and_since(app, history):
    async with client(app) as web:
        by_job = run_ids((await web.get("/runs", params={"job": "fails"})).text)
        by_status = run_ids((await web.get("/runs", params={"status": "queued"})).text)
        by_tenant = run_ids((await web.get("/runs", params={"tenant": "acme"})).text)
        by_origin = run_ids((await web.get("/runs", params={"origin": "defer"})).text)
        recent = run_ids((await web.get("/runs", params={"since": "1h"})).text)
        future = (await web.get("/runs", params={"since": "2100-01-01T00:00"})).text
        empty = run_ids((await web.get("/runs", params={"job": "", "status": ""})).text)
    assert by_job == [history.failed]
    assert set(by_status) == {history.queued, history.acme_queued}
    assert history.acme_queued in by_tenant and history.queued not in by_tenant
    assert set(by_origin) == {history.queued, history.acme_queued, history.acme_queued - 1}
    assert len(recent) == len(empty) > 5
    assert run_ids(future) == [] and "no runs match these filters" in main_of(future)


async def test_the_runs_page_pages_by_keyset_older_and_older(app):
    for n in range(57):
        await app.defer("hello", f"n{n}")
    async with client(app) as web:
        first = await web.get("/runs")
        older = re.search(r'<a rel="next" href="([^"]+)"', first.text)
        assert older is not None
        second = await web.get(older[1].replace("&amp;", "&"))
    ids, more = run_ids(first.text), run_ids(second.text)
    assert len(ids) == 50 and len(more) == 7
    assert older[1].endswith(f"before={ids[-1]}")
    assert ids + more == sorted(ids + more, reverse=True)
    assert 'rel="next"' not in second.text and ">newest<" in second.text


async def test_one_run_shows_its_arguments_error_traceback_and_times(app, history):
    async with client(app) as web:
        failed = await web.get(f"/runs/{history.failed}")
        ok = await web.get(f"/runs/{history.succeeded}")
    text = main_of(failed.text)
    assert failed.status_code == 200 and "failed" in text
    assert "ValueError: no luck today" in text and "Traceback" in text
    assert 'raise ValueError("no luck today")' in html.unescape(failed.text)
    assert f"/runs/{history.failed}/retry" in failed.text  # Retry: it did not succeed
    assert "/cancel" not in failed.text
    assert '"there"' in main_of(ok.text)  # its arguments
    assert "/retry" not in ok.text and "/cancel" not in ok.text


async def test_a_fan_out_counts_its_tenants_by_status_and_lists_the_failed(app, history):
    async with client(app) as web:
        page = await web.get(f"/runs/{history.fan_out}")
    text = main_of(page.text)
    assert "Tenants" in text
    assert "failed 1 · succeeded 2" in text  # globex; acme and initech
    failed = page.text[page.text.index('class="runs failed"'):]
    assert "globex" in failed and "not globex" in failed and "acme" not in failed


async def test_the_bots_page_shows_each_bot_its_last_beat_and_running_runs(app, history):
    run = await app.defer("hello", "on a bot")
    (claimed,) = await app.repository.claim("bot-1@web-test", ["hello"], 1, utcnow())
    assert claimed.id in (run.id, history.queued)
    async with client(app) as web:
        page = await web.get("/bots")
    text = main_of(page.text)
    assert "bot-1@web-test" in text and "web-test" in text and "4242" in text
    assert " up " in f" {text} " and "ago" in text
    assert f'href="http://dashboard.test/runs/{claimed.id}"' in page.text


async def test_a_bot_is_up_while_its_own_lease_holds(app, history):
    minute_ago = utcnow() - timedelta(minutes=1)
    await app.repository.register("patient", "host-2", 1, minute_ago, timedelta(minutes=2))
    await app.repository.register("hasty", "host-3", 2, minute_ago)  # the default 30 s
    async with client(app) as web:
        page = await web.get("/bots")

    def up(bot: str) -> str:
        row = page.text[page.text.index(f'data-bot="{bot}"'):]
        return main_of(f"<main>{row[:row.index('</tr>')]}</main>")

    assert " up " in up("patient") and "silent" not in up("patient")
    assert "silent" in up("hasty")


async def test_the_live_fragment_is_the_polled_block_alone(app, history):
    async with client(app) as web:
        fragment = await web.get("/runs?job=fails", headers={"HX-Request": "true",
                                                                 "HX-Target": "live"})
    assert fragment.status_code == 200
    assert fragment.text.startswith('<div id="live" hx-get="/runs?job=fails"')
    assert "<html" not in fragment.text and "<form" not in fragment.text
    assert run_ids(fragment.text) == [history.failed]


async def test_run_now_queues_a_deferred_run_and_says_so_on_the_page_it_returns_to(app,
                                                                                  history):
    async with client(app) as web:
        csrf = await csrf_of(web)
        done = await web.post("/jobs/reports/daily-summary/run",
                              data={"csrf": csrf, "next": "/runs?job=reports/daily-summary"})
        assert done.status_code == 303
        assert done.headers["location"] == "/runs?job=reports/daily-summary"
        page = await web.get(done.headers["location"])
    (newest, *_) = await app.list_runs(RunFilter(job="reports/daily-summary"))
    assert (newest.status, newest.origin, newest.tenant_id) == ("queued", "defer", None)
    assert f"run {newest.id} of reports/daily-summary queued" in main_of(page.text)
    assert run_ids(page.text)[0] == newest.id


async def test_pause_and_resume_from_the_buttons(app, history):
    async with client(app) as web:
        csrf = await csrf_of(web)
        paused = await web.post("/jobs/hello/pause", data={"csrf": csrf},
                                headers={"HX-Prompt": "deploying"})
        assert paused.status_code == 303
        assert [(p.job, p.tenant_id, p.reason) for p in await app.pauses()] == [
            ("hello", None, "deploying")]
        resumed = await web.post("/jobs/hello/resume", headers={"X-CSRF-Token": csrf})
        assert resumed.status_code == 303
        page = await web.get(resumed.headers["location"])
    assert await app.pauses() == []
    assert "hello resumed" in main_of(page.text)


async def test_retry_and_cancel_from_the_run_page(app, history):
    async with client(app) as web:
        csrf = await csrf_of(web)
        retried = await web.post(f"/runs/{history.failed}/retry", data={"csrf": csrf})
        assert retried.status_code == 303
        new_id = int(retried.headers["location"].rsplit("/", 1)[1])
        page = await web.get(retried.headers["location"])
        assert f"run {history.failed} retried: run {new_id} queued" in main_of(page.text)
        cancelled = await web.post(f"/runs/{new_id}/cancel",
                                   data={"csrf": csrf, "next": f"/runs/{new_id}"})
        again = await web.post(f"/runs/{new_id}/cancel", data={"csrf": csrf})
        page = await web.get(again.headers["location"])
    new = await app.get_run(new_id)
    assert new is not None and (new.job, new.origin, new.status) == ("fails", "defer",
                                                                      "cancelled")
    assert cancelled.status_code == 303
    assert f"run {new_id} is cancelled: only a queued or running run is cancelled" in \
        main_of(page.text)


async def acme_of(app, history: History) -> int:
    acme_run = await app.get_run(history.acme_queued)
    assert acme_run is not None and acme_run.tenant_id is not None
    return acme_run.tenant_id


async def test_run_now_on_a_tenant_dashboard_links_to_that_tenants_run(app, history):
    async with client(app, tenant="acme") as web:
        csrf = await csrf_of(web)
        ran = await web.post("/jobs/each/run", data={"csrf": csrf})
        page = await web.get(ran.headers["location"])
        (linked,) = re.findall(r'class="flash".*?href="[^"]*/runs/(\d+)"', page.text)
        shown = await web.get(f"/runs/{linked}")  # the tenant's row, not its fan-out's
    assert ran.status_code == 303 and shown.status_code == 200
    new = await app.get_run(int(linked))
    assert new is not None and (new.job, new.tenant_id, new.status) == (
        "each", await acme_of(app, history), "queued")
    assert f"run {linked} of each queued for tenant acme" in main_of(page.text)


async def test_pause_retry_and_cancel_on_a_tenant_dashboard_act_for_that_tenant(app,
                                                                              history):
    acme = await acme_of(app, history)
    async with client(app, tenant="acme") as web:
        csrf = await csrf_of(web)
        paused = await web.post("/jobs/hello/pause", data={"csrf": csrf},
                                headers={"HX-Prompt": "acme asked"})
        pauses = [(p.job, p.tenant_id, p.reason) for p in await app.pauses()]
        resumed = await web.post("/jobs/hello/resume", data={"csrf": csrf})
        cancelled = await web.post(f"/runs/{history.acme_queued}/cancel", data={"csrf": csrf})
        cancel_page = await web.get(cancelled.headers["location"])
        retried = await web.post(f"/runs/{history.acme_queued}/retry", data={"csrf": csrf})
        retry_page = await web.get(retried.headers["location"])
        others = await web.post(f"/runs/{history.failed}/retry", data={"csrf": csrf})
    assert (paused.status_code, resumed.status_code) == (303, 303)
    assert pauses == [("hello", acme, "acme asked")] and await app.pauses() == []
    assert cancelled.status_code == 303
    assert f"run {history.acme_queued} cancelled" in main_of(cancel_page.text)
    assert retried.status_code == 303
    new_try = await app.get_run(int(retried.headers["location"].rsplit("/", 1)[1]))
    assert new_try is not None and (new_try.tenant_id, new_try.status, new_try.retry_of) == (
        acme, "queued", history.acme_queued)
    assert f"run {history.acme_queued} retried: run {new_try.id} queued" in \
        main_of(retry_page.text)
    assert others.status_code == 404  # a run of no tenant: not this dashboard's
    assert [r.retry_of for r in await app.list_runs(RunFilter(job="fails"))] == [None]


async def test_bad_input_is_a_clear_4xx_page_never_a_traceback(app, history):
    cases = {
        "/runs/999999": (404, "there is no run 999999"),
        "/runs/abc": (400, "run id 'abc' is not a run id"),
        "/runs?status=nope": (400, "unknown status 'nope': one of queued, running"),
        "/runs?origin=mars": (400, "unknown origin 'mars'"),
        "/runs?since=yesterday": (400, "since 'yesterday' is neither a duration"),
        "/runs?since=0001-01-01T00:00%2B14:00": (400, "before year 1 or after year 9999"),
        "/runs?since=9999-12-31T23:59-12:00": (400, "before year 1 or after year 9999"),
        "/runs?before=12x": (400, "before '12x' is not a run id"),
        "/runs?tenant=nobody": (400, "unknown tenant 'nobody'"),
        "/runs?job=nope": (400, "unknown background job 'nope'"),
        "/runs?stauts=failed": (400, "unknown filter 'stauts'"),
        "/nowhere": (404, "there is no page at /nowhere"),
    }
    async with client(app) as web:
        for url, (status, message) in cases.items():
            page = await web.get(url)
            assert (page.status_code, message in main_of(page.text)) \
                == (status, True), (url, main_of(page.text))
            assert "Traceback" not in page.text
        csrf = await csrf_of(web)
        unknown = await web.post("/jobs/nope/run", data={"csrf": csrf})
        no_args = await web.post("/jobs/needs-args/run", data={"csrf": csrf})
        no_run = await web.post("/runs/424242/retry", data={"csrf": csrf})
        get_action = await web.get("/jobs/hello/run")
    assert unknown.status_code == 404 and "unknown background job 'nope'" in \
        main_of(unknown.text)
    assert no_args.status_code == 400 and "who" in main_of(no_args.text)
    assert no_run.status_code == 404
    assert get_action.status_code == 405


async def test_mounted_in_another_app_its_links_carry_the_prefix(app, history):
    import httpx
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from pinrepl.web import create_app

    outer = Starlette(routes=[Mount("/ops/jobs", create_app(app))])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=outer),
                                 base_url="http://site.test") as web:
        page = await web.get("/ops/jobs/runs")
        csrf = web.cookies["pinrepl_csrf"]
        done = await web.post("/ops/jobs/jobs/hello/run", data={"csrf": csrf})
    assert page.status_code == 200
    assert 'href="http://site.test/ops/jobs/runs/' in page.text
    assert "http://site.test/ops/jobs/static/htmx.min.js" in page.text
    assert done.status_code == 303 and done.headers["location"] == "http://site.test/ops/jobs/"
    assert "Path=/ops/jobs" in page.headers["set-cookie"]


async def test_static_files_are_served_with_the_package(app):
    async with client(app) as web:
        htmx = await web.get("/static/htmx.min.js")
        css = await web.get("/static/style.css")
    assert htmx.status_code == 200 and "htmx" in htmx.text[:200]
    assert css.status_code == 200
