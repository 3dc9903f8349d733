"""What runBackgroundJob costs over calling the job directly.

1. `await app.run_background_job('noop')` against a bare `await job.run()` of the same no-op
   job. Target: at most 10 us per call.
2. A job doing one `count()` through the facade against hand-written SQLAlchemy doing the
   same query in its own AsyncSession and committing (building its statement on each call,
   as a job would), on the app's engine. Target: within 1.3x. The same session on a plain
   engine is printed too: the difference is what SQLAlchemy's documented SQLite transaction
   recipe (which the app's engine uses, so that savepoints nest) costs: a real BEGIN and
   COMMIT around every call.

Both are measured in this process, in this run, best of several rounds, on SQLite.
Run: python bench/dispatch.py
"""

from __future__ import annotations

import asyncio
import tempfile
import textwrap
import time
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from pinrepl import App

ROUNDS = 5


def make_app(root: Path) -> Path:
    (root / "jobs").mkdir(parents=True)
    (root / "jobs" / "noop.py").write_text(textwrap.dedent("""
        from pinrepl import BackgroundJob

        class Noop(BackgroundJob):
            async def run(self):
                pass
    """))
    (root / "jobs" / "count.py").write_text(textwrap.dedent("""
        from pinrepl import BackgroundJob

        class Count(BackgroundJob):
            async def run(self):
                await self.database.items.count()
    """))
    (root / "models.py").write_text(textwrap.dedent("""
        from sqlalchemy.orm import Mapped, mapped_column
        from pinrepl import Model

        class Item(Model):
            __tablename__ = "items"
            id: Mapped[int] = mapped_column(primary_key=True)
            name: Mapped[str]
    """))
    return root


async def best(calls: int, make_call) -> float:
    """Best time per call, in seconds, over ROUNDS rounds."""
    times = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(calls):
            await make_call()
        times.append((time.perf_counter() - start) / calls)
    return min(times)


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = make_app(Path(tmp))
        url = f"sqlite+aiosqlite:///{root / 'bench.db'}"
        async with App.open(root, environ={"PINREPL_DATABASE_URL": url}) as app:
            await app.init_database(echo=lambda _: None)
            await app.database().items.insert(name="one")

            spec = app.jobs.get("noop")
            job = spec.cls()
            bare = await best(50_000, job.run)
            dispatched = await best(50_000, lambda: app.run_background_job("noop"))
            print(f"no-op job:  bare await job.run() {bare * 1e6:6.2f} us/call")
            print(f"            run_background_job   {dispatched * 1e6:6.2f} us/call "
                  f"(overhead {(dispatched - bare) * 1e6:.2f} us, "
                  f"{dispatched / bare:.1f}x the bare call; target <= 10 us)")

            plain = create_async_engine(url)
            model = app.engine.tables["items"]

            async def by_hand(engine: AsyncEngine) -> None:  # a job without the facade
                async with AsyncSession(engine) as session:
                    await session.scalar(select(func.count()).select_from(model))
                    await session.commit()

            await by_hand(plain)
            await app.run_background_job("count")
            bare = hand = facade = float("inf")
            for _ in range(2):  # alternate, so drift hits all alike
                bare = min(bare, await best(1_000, lambda: by_hand(plain)))
                hand = min(hand, await best(1_000, lambda: by_hand(app.engine.engine)))
                facade = min(facade, await best(1_000, lambda: app.run_background_job("count")))
            await plain.dispose()
            print(f"count():    hand-written session, plain engine   {bare * 1e6:7.1f} us/call")
            print(f"            hand-written session, app's engine   {hand * 1e6:7.1f} us/call "
                  f"(the SQLite transaction recipe: +{(hand - bare) * 1e6:.0f} us)")
            print(f"            job through facade                   {facade * 1e6:7.1f} us/call "
                  f"({facade / hand:.2f}x the app's engine, {facade / bare:.2f}x the plain "
                  "one; target <= 1.3x)")


if __name__ == "__main__":
    asyncio.run(main())
