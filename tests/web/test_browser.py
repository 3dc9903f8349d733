"""The dashboard in a real browser (Playwright driving Debian's chromium, headless): each
page looks as served, and Run now, Pause, Retry and Cancel do what they say. Skipped, with
the reason, where chromium or Playwright is missing (`.ci/run` installs chromium)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import Served, seed

CHROMIUM = Path("/usr/bin/chromium")

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
if not CHROMIUM.exists():
    pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def served(app_root: Path) -> Iterator[tuple[Served, Any]]:
    dashboard = Served(app_root).start()
    try:
        yield dashboard, dashboard.call(seed)
    finally:
        dashboard.stop()


@pytest.fixture
def page(browser: Any, served: tuple[Served, Any]) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    tab = context.new_page()
    tab.on("dialog", lambda dialog: dialog.accept("maintenance"))  # hx-prompt, hx-confirm
    try:
        yield tab
    finally:
        context.close()


def test_every_page_renders_its_content(page, served, tmp_path):
    dashboard, history = served
    for path, shows in [("/", "reports/daily-summary"), ("/runs", "no luck today"),
                        (f"/runs/{history.failed}", "ValueError"), ("/bots", "bot-1@web-test")]:
        page.goto(dashboard.url + path)
        sync_api.expect(page.locator("main")).to_contain_text(shows)
        page.screenshot(path=str(tmp_path / f"{path.strip('/').replace('/', '-') or 'jobs'}.png"),
                        full_page=True)


def test_pause_then_resume_a_job_from_its_row(page, served):
    dashboard, _history = served
    page.goto(dashboard.url + "/")
    row = page.locator('tr[data-job="hello"]')
    row.get_by_role("button", name="Pause").click()
    sync_api.expect(row).to_contain_text("paused: maintenance")
    pauses = dashboard.call(lambda app: app.pauses())
    assert [(p.job, p.reason) for p in pauses] == [("hello", "maintenance")]
    row.get_by_role("button", name="Resume").click()
    sync_api.expect(row.get_by_role("button", name="Pause")).to_be_visible()
    assert dashboard.call(lambda app: app.pauses()) == []


def test_run_now_queues_a_run(page, served):
    dashboard, _history = served
    page.goto(dashboard.url + "/")
    before = {run.id for run in dashboard.call(_runs)}
    page.locator('tr[data-job="reports/daily-summary"]').get_by_role(
        "button", name="Run now").click()
    sync_api.expect(page.locator("body")).to_contain_text(re.compile("queued|run"))
    new = eventually(lambda: [run for run in dashboard.call(_runs) if run.id not in before])
    assert [(run.job, run.status) for run in new] == [("reports/daily-summary", "queued")]


def test_retry_a_failed_run_and_cancel_a_queued_one(page, served):
    dashboard, history = served
    page.goto(f"{dashboard.url}/runs/{history.failed}")
    page.get_by_role("button", name="Retry").click()
    retried = eventually(lambda: [run for run in dashboard.call(_runs)
                                  if run.job == "fails" and run.status == "queued"])
    assert len(retried) == 1
    page.goto(f"{dashboard.url}/runs/{history.queued}")
    page.get_by_role("button", name="Cancel").click()
    sync_api.expect(page.locator("main")).to_contain_text("cancelled")
    (cancelled,) = [run for run in dashboard.call(_runs) if run.id == history.queued]
    assert cancelled.status == "cancelled"


def eventually(read: Callable[[], list[Any]], within: float = 10) -> list[Any]:
    """What `read` gives once it gives something (the row the click made), else []."""
    deadline = time.monotonic() + within
    while not (found := read()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


async def _runs(app: Any) -> list[Any]:
    from pinrepl.runs.control import RunFilter

    return await app.list_runs(RunFilter(), limit=100)
