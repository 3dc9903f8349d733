"""Helpers of the dashboard's tests: an app of a few jobs over the example models (tenants
acme, globex, initech), its history made through the public API (runs in this process,
recorded; deferred runs; a registered bot), and the dashboard over it, reached in this
process through httpx or served by uvicorn on a port of its own for the browser."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from pinrepl import App
from pinrepl.db.models import utcnow
from pinrepl.web import create_app

from ..conftest import write_example_app

T = TypeVar("T")

JOBS = {
    "hello.py": """
        from pinrepl import BackgroundJob

        class Hello(BackgroundJob):
            def meta(self):
                self.schedule("*/5 * * * *", "world")

            async def run(self, who="you"):
                print("hello", who)
    """,
    "fails.py": """
        from pinrepl import BackgroundJob

        class Fails(BackgroundJob):
            async def run(self):
                raise ValueError("no luck today")
    """,
    "each.py": """
        from pinrepl import BackgroundJob

        class Each(BackgroundJob):
            multi_tenant = True

            async def run(self):
                if self.tenant.name == "globex":
                    raise RuntimeError("not globex")
    """,
    "reports/daily_summary.py": """
        from pinrepl import BackgroundJob

        class DailySummary(BackgroundJob):
            def meta(self):
                self.schedule("0 6 * * *", timezone="Europe/Paris", kind="short")

            async def run(self, kind="long"):
                pass
    """,
    "needs_args.py": """
        from pinrepl import BackgroundJob

        class NeedsArgs(BackgroundJob):
            async def run(self, who):
                pass
    """,
}


@dataclass
class History:
    """The runs made by `seed`, by what they are."""

    succeeded: int
    failed: int
    fan_out: int
    queued: int
    acme_queued: int


async def seed(app: App) -> History:
    """A history of every kind: a run that succeeded, one that failed (with its
    traceback), a fan-out with a failed tenant, a queued deferred run, a run deferred for
    tenant acme (its fan-out's row, running, and acme's run, queued), and a bot that is up
    running nothing."""
    await app.run_job("hello", ("there",), record=True)
    with contextlib.suppress(ValueError):
        await app.run_job("fails", record=True)
    with contextlib.suppress(Exception):
        await app.run_job("each", record=True)
    queued = await app.defer("hello", "later")
    acme = await app.defer_job("reports/daily-summary", tenants=["acme"])
    await app.repository.register("bot-1@web-test", "web-test", 4242, utcnow())
    runs = await app.list_runs(_all(), limit=100)
    by_job = {(run.job, run.status, run.tenant_id, run.parent_id): run.id for run in runs}
    fan_out = next(run.id for run in runs if run.job == "each" and run.parent_id is None)
    (acme_run,) = [run for run in runs if run.parent_id == acme.id]  # its tenant's run
    return History(
        succeeded=by_job[("hello", "succeeded", None, None)],
        failed=by_job[("fails", "failed", None, None)],
        fan_out=fan_out, queued=queued.id, acme_queued=acme_run.id)


def _all() -> Any:
    from pinrepl.runs.control import RunFilter

    return RunFilter()


async def open_app(root: Path) -> App:
    app = App.open(root, environ={})
    await app.init_database(demo=True, echo=lambda _line: None)
    return app


@pytest.fixture
def app_root(tmp_path: Path) -> Path:
    return write_example_app(tmp_path / "app", JOBS, demo=False)


@pytest.fixture
async def app(app_root: Path) -> AsyncIterator[App]:
    opened = await open_app(app_root)
    try:
        yield opened
    finally:
        await opened.aclose()


@pytest.fixture
async def history(app: App) -> History:
    return await seed(app)


def client(app: App, **options: Any) -> httpx.AsyncClient:
    """An HTTP client of the dashboard of `app` made with `options`, in this process."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(app, **options)),
                             base_url="http://dashboard.test")


async def csrf_of(web: httpx.AsyncClient) -> str:
    """The session's CSRF token, after a first page (which sets its cookie)."""
    if "pinrepl_csrf" not in web.cookies:
        assert (await web.get("/")).status_code == 200
    return str(web.cookies["pinrepl_csrf"])


class Served:
    """The dashboard of an app served by uvicorn on 127.0.0.1 (a free port), in a thread
    of its own whose event loop owns the app; `call(fn)` runs `await fn(app)` there."""

    def __init__(self, root: Path, **options: Any) -> None:
        self.root, self.options = root, options
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.app: App | None = None
        self.url = ""

    def call(self, fn: Callable[[App], Awaitable[T]], timeout: float = 30) -> T:
        async def call() -> T:
            assert self.app is not None
            return await fn(self.app)

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(timeout)

    def start(self) -> Served:
        import uvicorn

        self.thread.start()

        async def start() -> None:
            self.app = await open_app(self.root)
            config = uvicorn.Config(create_app(self.app, **self.options), host="127.0.0.1",
                                    port=0, log_config=None, access_log=False, lifespan="off")
            self.server = uvicorn.Server(config)
            self.serving = asyncio.ensure_future(self.server.serve())
            while not self.server.started:
                if self.serving.done():
                    self.serving.result()
                await asyncio.sleep(0.02)
            port = self.server.servers[0].sockets[0].getsockname()[1]
            self.url = f"http://127.0.0.1:{port}"

        asyncio.run_coroutine_threadsafe(start(), self.loop).result(30)
        return self

    def stop(self) -> None:
        async def stop() -> None:
            self.server.should_exit = True
            await self.serving
            if self.app is not None:
                await self.app.aclose()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
