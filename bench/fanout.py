"""What a multi-tenant fan-out costs over a hand-written loop.

2,000 tenants on SQLite. The job does one scoped `count()` and one scoped `update()` per
tenant, each tenant in its own workspace. The reference is a hand-written loop doing the
same two queries per tenant in a single AsyncSession, committing after each tenant (each
tenant's work is durable on its own, as in the fan-out). A loop committing once at the very
end is printed too, for scale. Target: the fan-out within 1.5x of the reference.

Run: python bench/fanout.py [TENANTS]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from pinrepl import App

JOB = """
from pinrepl import BackgroundJob

class Touch(BackgroundJob):
    multi_tenant = True

    async def run(self):
        items = self.database.bench_items
        await items.count()
        await items.update(touched=True)
"""

MODELS = """
from sqlalchemy import ForeignKey
from sqlalchemy.orm import Mapped, mapped_column
from pinrepl import Model

class BenchItem(Model):
    __tablename__ = "bench_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    touched: Mapped[bool] = mapped_column(default=False)
"""


async def main(tenants: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "jobs").mkdir()
        (root / "jobs" / "touch.py").write_text(textwrap.dedent(JOB))
        (root / "models.py").write_text(textwrap.dedent(MODELS))
        url = f"sqlite+aiosqlite:///{root / 'bench.db'}"
        async with App.open(root, environ={"PINREPL_DATABASE_URL": url}) as app:
            await app.init_database(echo=lambda _: None)
            tenant_model = app.engine.tables["tenants"]
            item = app.engine.tables["bench_items"]
            async with app.engine.engine.begin() as conn:
                await conn.execute(insert(tenant_model),
                                   [{"name": f"t{i}", "active": True} for i in range(tenants)])
                await conn.execute(insert(item), [
                    {"tenant_id": t, "touched": False}
                    for t in range(1, tenants + 1) for _ in range(3)
                ])

            async def by_hand(commit_each: bool) -> None:
                async with AsyncSession(app.engine.engine) as session:
                    ids = (await session.scalars(
                        select(tenant_model.id).order_by(tenant_model.id))).all()
                    for tenant_id in ids:
                        await session.scalar(
                            select(func.count()).select_from(item)
                            .where(item.tenant_id == tenant_id))
                        await session.execute(
                            update(item).where(item.tenant_id == tenant_id)
                            .values(touched=True))
                        if commit_each:
                            await session.commit()
                    await session.commit()

            async def timed(make) -> float:
                start = time.perf_counter()
                await make()
                return time.perf_counter() - start

            hand = fan = once = float("inf")
            for _ in range(3):  # alternate, best of three each
                hand = min(hand, await timed(lambda: by_hand(True)))
                fan = min(fan, await timed(lambda: app.run_background_job("touch")))
                once = min(once, await timed(lambda: by_hand(False)))
            print(f"{tenants} tenants, one count() and one update() each, SQLite:")
            print(f"  hand-written loop, one session, commit per tenant "
                  f"{hand:6.3f} s ({hand / tenants * 1e6:6.0f} us/tenant)")
            print(f"  run_background_job fan-out, a workspace each      "
                  f"{fan:6.3f} s ({fan / tenants * 1e6:6.0f} us/tenant) "
                  f"-> {fan / hand:.2f}x (target <= 1.5x)")
            print(f"  for scale: hand-written, one commit at the end     "
                  f"{once:6.3f} s ({once / tenants * 1e6:6.0f} us/tenant)")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000))
