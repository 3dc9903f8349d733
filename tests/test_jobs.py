"""Job files: discovery, names, meta(), and load errors that never stop the other jobs."""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pinrepl import App, JobLoadError, UnknownBackgroundJob

from .conftest import invoke

GOOD = """
from pinrepl import BackgroundJob

class Good(BackgroundJob):
    batch_size = 7

    def meta(self):
        self.schedule("0 * * * *")
        self.schedule("30 0 12 * * 1")

    async def run(self):
        print("good ran with", self.batch_size)
"""


def job(body: str = "print('ran')", cls: str = "Job") -> str:
    return f"from pinrepl import BackgroundJob\n\nclass {cls}(BackgroundJob):\n" \
           f"    async def run(self):\n        {body}\n"


@pytest.fixture
def open_app() -> Iterator[Callable[[Path], App]]:
    """`App.open`, each app closed after the test: its folder leaves `sys.path`."""
    apps: list[App] = []

    def open_(root: Path) -> App:
        apps.append(App.open(root))
        return apps[-1]

    yield open_
    for app in apps:
        asyncio.run(app.aclose())  # no engine: this only takes back the imports


def test_names_come_from_paths_and_helpers_are_skipped(open_app, make_app):
    root = make_app({
        "send_newsletter.py": GOOD,
        "reports/daily_summary.py": job(),
        "_helpers.py": "VALUE = 1\n",
        "reports/_shared.py": "X = 2\n",
    })
    registry = open_app(root).jobs
    assert registry.names == ["reports/daily-summary", "send-newsletter"]
    assert registry.errors == []


def test_meta_schedules_and_custom_attributes(open_app, make_app):
    spec = open_app(make_app({"good.py": GOOD})).jobs.get("good")
    assert [s.cron for s in spec.schedules] == ["0 * * * *", "30 0 12 * * 1"]
    assert spec.cls.batch_size == 7
    assert spec.multi_tenant is False


async def test_job_may_import_a_helper_relatively(open_app, make_app, capsys):
    root = make_app({
        "_helpers.py": "GREETING = 'hi from helper'\n",
        "greet.py": "from pinrepl import BackgroundJob\nfrom ._helpers import GREETING\n\n"
                    "class Greet(BackgroundJob):\n    async def run(self):\n"
                    "        print(GREETING)\n",
    })
    await open_app(root).run_background_job("greet")
    assert capsys.readouterr().out == "hi from helper\n"


BROKEN = {
    "syntax.py": "def oops(:\n",
    "imports.py": "import no_such_module_here\n",
    "empty.py": "X = 1\n",
    "two.py": job(cls="A") + "\n" + job(cls="B").split("\n", 1)[1],
    "not_async.py": "from pinrepl import BackgroundJob\n\nclass S(BackgroundJob):\n"
                    "    def run(self):\n        pass\n",
    "no_run.py": "from pinrepl import BackgroundJob\n\nclass N(BackgroundJob):\n    pass\n",
    "bad_cron.py": "from pinrepl import BackgroundJob\n\nclass C(BackgroundJob):\n"
                   "    def meta(self):\n        self.schedule('61 * * * *')\n"
                   "    async def run(self):\n        pass\n",
    "seven_fields.py": "from pinrepl import BackgroundJob\n\nclass C(BackgroundJob):\n"
                       "    def meta(self):\n        self.schedule('0 0 0 * * * 2030')\n"
                       "    async def run(self):\n        pass\n",
    "never.py": "from pinrepl import BackgroundJob\n\nclass C(BackgroundJob):\n"
                "    def meta(self):\n        self.schedule('0 0 31 2 *')\n"
                "    async def run(self):\n        pass\n",
    "same_name.py": job(),
    "same-name.py": job(),
}

EXPECTED_ERRORS = {
    "syntax": "SyntaxError",
    "imports": "ModuleNotFoundError: No module named 'no_such_module_here' (line 1)",
    "empty": "defines no BackgroundJob subclass",
    "two": "defines 2 BackgroundJob subclasses (A, B)",
    "not-async": "run() must be 'async def'",
    "no-run": "N defines no run()",
    "bad-cron": "invalid cron '61 * * * *'",
    "seven-fields": "invalid cron '0 0 0 * * * 2030': expected 5 fields, or 6",
    "never": "invalid cron '0 0 31 2 *': never fires",
    "same-name": "job name 'same-name' is taken by several files",
}


def test_each_broken_file_is_a_load_error_naming_it_and_the_rest_still_load(
        open_app, make_app):
    root = make_app({**BROKEN, "good.py": GOOD})
    registry = open_app(root).jobs
    assert registry.names == ["good"]
    messages = {e.path.rsplit("/", 1)[-1]: e.message for e in registry.errors}
    assert len(registry.errors) == len(BROKEN)
    for name, expected in EXPECTED_ERRORS.items():
        files = [f for f in messages if f.replace("_", "-").removesuffix(".py") == name]
        assert files, name
        for file in files:
            assert expected in messages[file], (file, messages[file])


def test_running_a_broken_job_raises_its_load_error(open_app, make_app):
    registry = open_app(make_app({**BROKEN, "good.py": GOOD})).jobs
    with pytest.raises(JobLoadError, match=r"bad_cron.py: invalid cron '61"):
        registry.get("bad-cron")
    with pytest.raises(UnknownBackgroundJob, match=r"'god' \(did you mean: good\?\)"):
        registry.get("god")


async def test_a_load_error_is_raised_afresh_each_time(open_app, make_app):
    """The stored error does not grow notes or traceback frames with each run."""
    app = open_app(make_app({"broken.py": "def oops(:\n", "calls_broken.py": job(
        "await self.run_background_job('broken')", cls="CallsBroken")}))
    raised = []
    for _ in range(3):
        with pytest.raises(JobLoadError) as error:
            await app.run_background_job("calls-broken")
        raised.append(error.value)
    assert [e.__notes__ for e in raised] == [["in background job 'calls-broken'"]] * 3
    assert len({len(traceback.format_exception(e)) for e in raised}) == 1


def test_reload_sees_new_changed_and_deleted_files(open_app, make_app):
    root = make_app({"one.py": job("print(1)")})
    app = open_app(root)
    assert app.jobs.names == ["one"]
    (root / "jobs" / "one.py").unlink()
    (root / "jobs" / "two.py").write_text(job("print(2)"))
    assert app.reload().names == ["two"]


# -- what a job declares is checked when it loads ------------------------------------------


def scheduled(schedule: str, run: str = "async def run(self)", attributes: str = "") -> str:
    return (f"from pinrepl import BackgroundJob\n\nclass Job(BackgroundJob):\n{attributes}"
            f"    def meta(self):\n        self.schedule({schedule})\n\n"
            f"    {run}:\n        pass\n")


@pytest.mark.parametrize(("schedule", "run", "problem"), [
    ('"* * * * *", "a", nope=1', "async def run(self)",
     "schedule '* * * * *' passes ('a', nope=1), which Job.run() does not take: "
     "too many positional arguments"),
    ('"0 * * * *", nope=1', "async def run(self, a)",
     "schedule '0 * * * *' passes (nope=1), which Job.run(a) does not take: "
     "missing a required argument: 'a'"),
    ('"@daily"', "async def run(self, who, *, loud)",
     "schedule '@daily' passes (), which Job.run(who, *, loud) does not take: "
     "missing a required argument: 'who'"),
])
def test_schedule_arguments_that_run_does_not_take_are_a_load_error(
        open_app, make_app, schedule, run, problem):
    root = make_app({"job.py": scheduled(schedule, run), "good.py": GOOD})
    registry = open_app(root).jobs
    assert registry.names == ["good"]
    (error,) = registry.errors
    assert error.path.endswith("jobs/job.py") and error.message == problem


def test_schedule_arguments_that_fit_run_load(open_app, make_app):
    root = make_app({"job.py": scheduled('"0 * * * *", 1, b=[2], timezone="Europe/London"',
                                         "async def run(self, a, *, b=None, **rest)")})
    registry = open_app(root).jobs
    assert registry.errors == []
    (schedule,) = registry.get("job").schedules
    assert (schedule.args, schedule.kwargs) == ((1,), {"b": [2]})


@pytest.mark.parametrize(("attribute", "problem"), [
    ('multi_tenant = "no"', "Job.multi_tenant = 'no': it must be True, False, or None for "
                            "the app's multi_tenant setting"),
    ("multi_tenant = 0", "Job.multi_tenant = 0: it must be True, False"),
    ("tenant_concurrency = 0", "Job.tenant_concurrency = 0: it must be a whole number of at "
                               "least 1"),
    ("tenant_concurrency = 2.5", "Job.tenant_concurrency = 2.5: it must be a whole number"),
    ("tenant_concurrency = True", "Job.tenant_concurrency = True: it must be a whole number"),
    ("misfire_grace = -5", "Job.misfire_grace = -5: it must be a number of seconds, 0 or more"),
    ('misfire_grace = "60"', "Job.misfire_grace = '60': it must be a number of seconds"),
    ('misfire_grace = float("inf")', "Job.misfire_grace = inf: it must be a number"),
    ('overlap = "yes"', "Job.overlap = 'yes': it must be True or False"),
    ("timeout = 0", "Job.timeout = 0: it must be a number of seconds above 0, or None"),
    ("timeout = -1", "Job.timeout = -1: it must be a number of seconds above 0"),
    ('timeout = "300"', "Job.timeout = '300': it must be a number of seconds above 0"),
    ("timeout = True", "Job.timeout = True: it must be a number of seconds above 0"),
    ('timeout = float("nan")', "Job.timeout = nan: it must be a number of seconds above 0"),
    ("retries = -1", "Job.retries = -1: it must be a whole number of tries, 0 or more, a "
                     "pinrepl.Retry(...), or None"),
    ("retries = 2.5", "Job.retries = 2.5: it must be a whole number of tries"),
    ("retries = True", "Job.retries = True: it must be a whole number of tries"),
    ('retries = "3"', "Job.retries = '3': it must be a whole number of tries"),
    ("retries = {'attempts': 3}", "Job.retries = {'attempts': 3}: it must be a whole number"),
])
def test_a_job_attribute_of_the_wrong_kind_is_a_load_error_naming_it(
        open_app, make_app, attribute, problem):
    root = make_app({"job.py": scheduled('"0 * * * *"', attributes=f"    {attribute}\n\n"),
                     "good.py": GOOD})
    registry = open_app(root).jobs
    assert registry.names == ["good"]
    (error,) = registry.errors
    assert error.path.endswith("jobs/job.py") and error.message.startswith(problem), error
    assert "\n" not in str(error)


@pytest.mark.parametrize("attributes", [
    "    multi_tenant = True\n    tenant_concurrency = 3\n    misfire_grace = 0\n"
    "    overlap = True\n",
    "    multi_tenant = None\n    misfire_grace = 1.5\n",
    "    timeout = 300\n    retries = 3\n",
    "    timeout = 0.5\n    retries = 0\n",
    "    timeout = None\n    retries = None\n",
])
def test_job_attributes_of_the_right_kind_load(open_app, make_app, attributes):
    root = make_app({"job.py": scheduled('"0 * * * *"', attributes=attributes + "\n")})
    assert open_app(root).jobs.errors == []


# -- reload() ----------------------------------------------------------------------------

HELPED = """
from pinrepl import BackgroundJob
from jobs._helpers import fmt

class Greet(BackgroundJob):
    async def run(self):
        print(fmt("greet"))
"""


def test_reload_reimports_helpers_imported_by_their_absolute_name(make_app):
    """`from jobs._helpers import fmt`: the app folder is importable, so `jobs` is a
    package there; after `reload()` the job runs the helper as the file is now."""
    root = make_app({"_helpers.py": "def fmt(x):\n    return f'old {x}'\n", "greet.py": HELPED})
    helpers = root / "jobs" / "_helpers.py"
    code = "\n".join([
        "await runBackgroundJob('greet')",
        "import pathlib",
        f"_ = pathlib.Path({str(helpers)!r}).write_text("
        "'def fmt(x):\\n    return f\"new and {x}\"\\n')",
        "reload()",
        "await runBackgroundJob('greet')",
    ])
    result = invoke("repl", "--app", root, "--execute", code)
    assert result.exit_code == 0, result.output
    assert result.stdout == "old greet\n1 job reloaded: greet\nnew and greet\n"


MODELS = """
from sqlalchemy.orm import Mapped, mapped_column
from pinrepl import Model

class Thing{n}(Model):
    __tablename__ = "things_{n}"
    id: Mapped[int] = mapped_column(primary_key=True)
"""


def test_reload_says_when_the_models_file_changed_that_a_restart_uses_it(make_app, tmp_path):
    suffix = tmp_path.name.replace("-", "_")  # tables are defined once per process
    root = make_app({"one.py": job()}, models=MODELS.format(n=f"{suffix}_a"))
    models = root / "models.py"
    code = "\n".join([
        "reload()",
        "import pathlib",
        f"_ = pathlib.Path({str(models)!r}).write_text('# changed')",
        "reload()",
    ])
    result = invoke("repl", "--app", root, "--execute", code)
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "1 job reloaded: one\n"
        "1 job reloaded: one\n"
        "models.py changed since it was loaded, and models cannot be swapped while running: "
        "restart to use the change\n"
    )
