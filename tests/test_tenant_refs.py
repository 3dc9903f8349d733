"""Choosing tenants by reference (SPEC 3, 5, 6): an id, a name, or `id:N` / `name:X` to say
which; a bare reference that is one tenant's id and another's name is refused, naming both.
Through the CLI (`--tenant`), the REPL (`use_tenant`) and the Python API (`tenants=`)."""

from __future__ import annotations

import asyncio

import pytest

from pinrepl import App, UnknownTenant
from pinrepl.errors import AmbiguousTenant

from .conftest import invoke, one_line, write_example_app

JOBS = {"where.py": """
    from pinrepl import BackgroundJob

    class Where(BackgroundJob):
        multi_tenant = True

        async def run(self):
            print("ran for", self.tenant.id, repr(self.tenant.name))
"""}

AMBIGUOUS = ("tenant '2' is ambiguous: it is the id of tenant 2 ('globex') and the name of "
             "tenant 4; choose with id:2 or name:2")


async def add_tenant(root, name):
    async with App.open(root) as app:
        database = app.database()
        try:
            await database.tenants.insert(name=name, active=True)
        finally:
            await database.aclose()


@pytest.fixture
def app(tmp_path):
    """The demo tenants acme (1), globex (2) and initech (3), and a tenant named '2' (4)."""
    root = write_example_app(tmp_path / "app", JOBS)
    asyncio.run(add_tenant(root, "2"))
    return root


def run(app, *tenants):
    return invoke("run-background-job", "--app", app, "--name", "where",
                  *(arg for tenant in tenants for arg in ("--tenant", tenant)))


def test_the_cli_refuses_a_reference_that_is_an_id_and_a_name_naming_both(app):
    assert one_line(run(app, "2")) == AMBIGUOUS


@pytest.mark.parametrize(("ref", "ran"), [
    ("id:2", "ran for 2 'globex'"), ("name:2", "ran for 4 '2'"),
    ("1", "ran for 1 'acme'"), ("acme", "ran for 1 'acme'"), ("4", "ran for 4 '2'"),
    ("name:acme", "ran for 1 'acme'"), ("id:3", "ran for 3 'initech'"),
])
def test_the_cli_takes_id_and_name_prefixes_and_plain_references(app, ref, ran):
    result = run(app, ref)
    assert result.exit_code == 0, result.output
    assert result.stdout == ran + "\n"


def test_the_same_tenant_by_id_and_by_name_runs_once(app):
    result = run(app, "id:4", "name:2", "4")
    assert result.exit_code == 0, result.output
    assert result.stdout == "ran for 4 '2'\n"


@pytest.mark.parametrize(("ref", "message"), [
    ("id:x", "unknown tenant 'id:x': a tenant id is a whole number up to 2147483647"),
    ("id:2147483648", "unknown tenant 'id:2147483648': a tenant id is a whole number up to "
                      "2147483647"),
    ("id:9", "unknown tenant 'id:9'"),
    ("name:nobody", "unknown tenant 'name:nobody'"),
    ("ACME", "unknown tenant 'ACME' (did you mean: acme?)"),
    ("name:Globex", "unknown tenant 'name:Globex' (did you mean: globex?)"),
])
def test_an_unknown_reference_is_one_line(app, ref, message):
    assert one_line(run(app, ref)) == message


def test_the_repl_use_tenant_takes_the_same_references(app):
    code = "\n".join([
        "await use_tenant('name:2')",
        "await runBackgroundJob('where')",
        "await use_tenant('id:2')",
        "await runBackgroundJob('where')",
        "await use_tenant('2')",
    ])
    result = invoke("repl", "--app", app, "--execute", code)
    assert result.exit_code == 1
    assert result.stdout == "ran for 4 '2'\nran for 2 'globex'\n"
    assert f"AmbiguousTenant: {AMBIGUOUS}" in result.stderr


def test_the_repl_tenant_option_takes_the_same_references(app):
    result = invoke("repl", "--app", app, "--tenant", "name:2", "--execute",
                    "await runBackgroundJob('where')")
    assert result.exit_code == 0, result.output
    assert result.stdout == "ran for 4 '2'\n"


async def test_the_python_api_takes_the_same_references(app, capsys):
    async with App.open(app) as opened:
        with pytest.raises(AmbiguousTenant) as error:
            await opened.run_job("where", tenants=["2"])
        assert str(error.value) == AMBIGUOUS
        assert isinstance(error.value, UnknownTenant) and isinstance(error.value, LookupError)
        assert capsys.readouterr().out == ""  # nothing ran
        await opened.run_job("where", tenants=["name:2"])
        await opened.run_job("where", tenants=["id:2"])
        await opened.run_job("where", tenants=[2])  # an int is an id
        workspace = await opened.tenant_workspace("name:2")
        assert workspace.tenant is not None and workspace.tenant.id == 4
        await workspace.aclose()
    assert capsys.readouterr().out == "ran for 4 '2'\nran for 2 'globex'\nran for 2 'globex'\n"


def test_a_prefixed_reference_that_is_another_tenants_whole_name_is_ambiguous(app):
    asyncio.run(add_tenant(app, "id:2"))  # tenant 5
    asyncio.run(add_tenant(app, "id:9"))  # tenant 6; there is no tenant 9
    assert one_line(run(app, "id:2")) == (
        "tenant 'id:2' is ambiguous: it chooses tenant 2 ('globex') and is the whole name "
        "of tenant 5; choose that one with name:id:2")
    assert run(app, "name:id:2").stdout == "ran for 5 'id:2'\n"
    assert run(app, "id:9").stdout == "ran for 6 'id:9'\n"


@pytest.mark.parametrize("ref", [2**31, 2**70, -1])
async def test_an_int_that_cannot_be_an_id_is_an_unknown_tenant(example_app, ref, capsys):
    """On SQLite 2**70 overflowed in the driver and on PostgreSQL 2**31 is past INTEGER."""
    with pytest.raises(UnknownTenant) as error:
        await example_app.run_job("send-newsletter", tenants=[ref])
    assert str(error.value) == f"unknown tenant '{ref}': a tenant id is a whole number up to " \
        "2147483647"
    assert capsys.readouterr().out == ""
