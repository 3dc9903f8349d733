"""The demo data (`init-database --demo`, and the test database a transcript replays on):
an app's `seed_demo(database)` adds it, and only it; pinrepl's sample tenants are for the
apps without one."""

from __future__ import annotations

import sqlite3
from contextlib import closing

from ..conftest import invoke, write_app

SEEDS_TWO_TENANTS = """
async def seed_demo(database):
    await database.tenants.insert(name="north")
    await database.tenants.insert(name="south", active=False)
"""

TRANSCRIPT = """\
pinrepl > [(t.name, t.active) for t in await database.tenants.order_by("id").all()]
[('north', True), ('south', False)]
"""


def tenants(path):
    with closing(sqlite3.connect(path)) as db:
        return db.execute("select name from tenants order by id").fetchall()


def test_an_apps_seed_demo_is_the_whole_demo_data(tmp_path):
    app = write_app(tmp_path / "app", {}, models=SEEDS_TWO_TENANTS)
    made = invoke("init-database", "--demo", "--app", app)
    assert made.exit_code == 0, made.output
    assert tenants(app / "pinrepl.db") == [("north",), ("south",)]
    again = invoke("init-database", "--demo", "--app", app)
    assert again.stdout.splitlines()[-1] == \
        "demo data already present (the tenants table has rows); nothing added"
    assert tenants(app / "pinrepl.db") == [("north",), ("south",)]


def test_a_transcripts_test_database_holds_only_what_seed_demo_adds(tmp_path):
    app = write_app(tmp_path / "app", {}, models=SEEDS_TWO_TENANTS)
    (app / "test_tenants.transcript").write_text(TRANSCRIPT)
    result = invoke("transcript", app / "test_tenants.transcript")
    assert result.exit_code == 0, result.output


def test_an_app_without_seed_demo_gets_the_sample_tenants(tmp_path):
    app = write_app(tmp_path / "app", {})
    assert invoke("init-database", "--demo", "--app", app).exit_code == 0
    assert tenants(app / "pinrepl.db") == [("acme",), ("globex",), ("initech",)]
