"""The app's footprint on the interpreter: what opening an app adds to the imports
(its folder on `sys.path`, its job modules) is taken back when it closes."""

from __future__ import annotations

import sys
from pathlib import Path

from pinrepl import App

JOB = """
from pinrepl import BackgroundJob
from jobs._helpers import fmt
from ._helpers import fmt as relative_fmt

class Greet(BackgroundJob):
    async def run(self):
        print(fmt("hi"), relative_fmt("there"))
"""


def modules_of(folder: Path) -> list[str]:
    """The names in `sys.modules` of modules whose file is in `folder`."""
    return sorted(
        name for name, module in sys.modules.items()
        if str(getattr(module, "__file__", None) or "").startswith(str(folder))
    )


def an_app(make_app) -> Path:
    return make_app({"greet.py": JOB, "_helpers.py": "def fmt(x):\n    return x.upper()\n"})


async def test_closing_the_app_takes_back_its_folder_on_sys_path_and_its_job_modules(
        make_app, capsys):
    root = an_app(make_app)
    folder = str(root.resolve())
    async with App.open(root) as app:
        await app.run_background_job("greet")
        assert folder in sys.path
        assert modules_of(root / "jobs")  # the job and its helper, by both names
    assert capsys.readouterr().out == "HI THERE\n"
    assert folder not in sys.path
    assert modules_of(root / "jobs") == []
    package = sys.modules.get("jobs")  # the jobs folder as a package of the app folder
    assert package is None or str(root / "jobs") not in list(getattr(package, "__path__", []))


async def test_an_app_of_the_same_folder_still_open_keeps_them(make_app, capsys):
    root = an_app(make_app)
    folder = str(root.resolve())
    first, second = App.open(root), App.open(root)
    first.jobs, second.jobs  # noqa: B018 - loading them is the point
    await first.aclose()
    assert folder in sys.path
    await second.run_background_job("greet")
    assert capsys.readouterr().out == "HI THERE\n"
    await second.aclose()
    assert folder not in sys.path


async def test_a_folder_on_sys_path_before_the_app_opened_stays(make_app, monkeypatch):
    root = an_app(make_app)
    folder = str(root.resolve())
    monkeypatch.syspath_prepend(folder)
    async with App.open(root) as app:
        app.jobs  # noqa: B018
    assert folder in sys.path


async def test_the_app_opens_again_after_closing(make_app, capsys):
    root = an_app(make_app)
    for _ in range(2):
        async with App.open(root) as app:
            await app.run_background_job("greet")
    assert capsys.readouterr().out == "HI THERE\nHI THERE\n"
