"""What the REPL's namespace offers beyond running jobs: the app's model classes, `echo`,
tab completion of job names, a readable `jobs['name']`, and a broken models file reported
once while the jobs that need no models stay usable."""

from __future__ import annotations

import asyncio
import re
import threading
import time

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from pinrepl.console.prompt import DetachedCompleter

from ..conftest import invoke, write_app, write_example_app
from .terminal import Repl

HELLO = """
    from pinrepl import BackgroundJob

    class Hello(BackgroundJob):
        async def run(self, name="world"):
            print(f"hello {name}")
"""

GREET = """
    from pinrepl import BackgroundJob

    class Greet(BackgroundJob):
        multi_tenant = True
        tenant_concurrency = 2

        def meta(self):
            self.schedule("0 9 * * 1", "weekly", timezone="Europe/Paris")

        async def run(self, kind, *, loud=False):
            print(kind)
"""


GATED = HELLO + """
    import os, time

    # The REPL's loader waits here (a slow import) until the test opens the gate.
    gate = os.environ.get("LOADER_GATE")
    for _ in range(1200 if gate else 0):
        if os.path.exists(gate):
            break
        time.sleep(0.05)
"""


def test_the_models_are_in_the_namespace_once_loaded_in_the_background(tmp_path):
    app = write_example_app(tmp_path / "app", {"slow.py": GATED})
    gate = tmp_path / "gate"
    repl = Repl(app, tmp_path, LOADER_GATE=str(gate))
    repl.expect("the app's models by class name")
    repl.expect("pinrepl >")  # while the loader waits at the gate: the prompt came first
    repl.run("import sys; 'sqlalchemy' in sys.modules, type(app).__name__", "(False, 'App')")
    gate.touch()
    repl.expect("1 job loaded: slow")
    repl.expect("models: ")
    repl.expect("Notification")
    repl.run("User, Notification, Tenant",
             "(<class 'models.User'>, <class 'models.Notification'>, "
             "<class 'pinrepl.db.models.Tenant'>)")
    repl.run("await database.users.where(User.email.like('%@acme.example')).count()", "3")
    repl.run("[helper.__module__.split('.')[0] for helper in (select, text)], func.count().name",
             "(['sqlalchemy', 'sqlalchemy'], 'count')")
    assert repl.quit() == 0


def test_echo_prints_the_sql_that_runs(tmp_path):
    app = write_example_app(tmp_path / "app", {"hello.py": HELLO})
    result = invoke("repl", "--app", app, "--echo", "-e",
                    "await database.users.where(name='Alice').count()")
    assert result.stdout.endswith(
        "SELECT count(*) AS count_1\nFROM users\nWHERE users.name = ?\n"
        "-- parameters: ('Alice',)\n1\n"
    )
    toggled = invoke("repl", "--app", app, "-e",
                     "await database.users.count()\necho(True)\nawait database.users.count()\n"
                     "echo(False)\nawait database.users.count()")
    assert toggled.stdout == "6\nBEGIN\nSELECT count(*) AS count_1\nFROM users\n6\n6\n"


def test_tab_completes_job_names(tmp_path):
    app = write_example_app(tmp_path / "app", {"hello.py": HELLO, "greet.py": GREET},
                            demo=False)
    repl = Repl(app, tmp_path)
    repl.expect("2 jobs loaded: greet, hello")
    # Tab inserts the completion at once when the menu of completions (computed as the
    # name is typed) is on screen: the keys typed after it follow it.
    repl.child.send("await runBackgroundJob('he")
    repl.expect("'he")
    repl.expect(" hello")
    repl.child.send("\t")
    repl.run("', 'tab')", "hello tab")
    repl.child.send("jobs['gr")
    repl.expect("'gr")
    repl.expect(" greet")
    repl.child.send("\t")
    repl.run("'].name", "'greet'")  # jedi may still be completing `.name`: see below
    assert repl.quit() == 0


#: An object whose `__dir__` (which completing `slow.` calls) makes file {started} and
#: takes a minute. (It does not print: output from a completion's thread can wedge
#: prompt_toolkit's patched stdout.)
SLOW_DIR = ("slow = type('SlowDir', (), {{'__dir__': lambda self: (open({started!r}, 'w').close(),"
            " __import__('time').sleep(60), [])[-1]}})()")


def test_neither_a_line_nor_leaving_waits_for_a_completion_still_being_computed(tmp_path):
    app = write_example_app(tmp_path / "app", {"hello.py": HELLO}, demo=False)
    started = tmp_path / "completing"
    repl = Repl(app, tmp_path)
    repl.expect("1 job loaded: hello")
    repl.child.sendline(SLOW_DIR.format(started=str(started)))
    repl.child.send("slow.")  # completing it as typed runs `__dir__`
    deadline = time.monotonic() + 15
    while not started.exists():
        assert time.monotonic() < deadline, "the completion of 'slow.' never started"
        time.sleep(0.05)
    repl.child.sendcontrol("u")  # an empty line
    repl.run("6 * 7", "42")  # within `expect`'s 15 s, not after 60 s
    assert repl.quit() == 0  # within `ended()`'s 10 s
def test_a_job_shows_as_a_readable_summary(tmp_path):
    app = write_example_app(tmp_path / "app", {"greet.py": GREET}, demo=False)
    result = invoke("repl", "--app", app, "-e", "jobs['greet']\njobs")
    lines = result.stdout.splitlines()
    assert lines[:2] == [f"background job 'greet' ({app / 'jobs' / 'greet.py'})",
                         "  run(kind, *, loud=False)"]
    assert lines[2].startswith("  schedule 0 9 * * 1 with ('weekly'), next ")
    assert lines[2].endswith(("CET", "CEST"))
    assert lines[3:5] == ["  multi-tenant, 2 tenants at a time",
                          f"1 background job in {app / 'jobs'} (times in UTC):"]
    assert re.fullmatch(r'  greet  0 9 \* \* 1 \(Europe/Paris\) \["weekly"\]  \S+ \S+ UTC  - +yes',
                        lines[6]), lines[6]


BROKEN_MODELS = """
    from pinrepl import Model

    class User(Model):
        __tablename__ = "users"
        id = undefined_name
"""


def test_a_broken_models_file_is_reported_once_and_jobs_stay_usable(tmp_path):
    app = write_app(tmp_path / "app", {"hello.py": HELLO}, models=BROKEN_MODELS)
    problem = f"{app / 'models.py'}:6: NameError: name 'undefined_name' is not defined"
    repl = Repl(app, tmp_path)
    loaded = repl.expect("1 job loaded: hello")
    loaded += repl.expect(f"load error: {problem}")
    repl.run("jobs.names", "['hello']")
    repl.run("await runBackgroundJob('hello')", "hello world")
    first = repl.run("database.users", f"ConfigError: {problem}")
    second = repl.run("database.users", f"ConfigError: {problem}")
    for shown in (first, second):  # the same one frame each time, not a growing traceback
        assert shown[shown.index("Traceback"):] == (
            'Traceback (most recent call last):\n  File "<stdin>", line 1, in <module>\n'
            f"pinrepl.errors.ConfigError: {problem}"
        )
    assert repl.quit() == 0
    assert repl.raw.count("load error:") == 1


def test_execute_and_stdin_say_what_failed_to_load_on_stderr(tmp_path):
    app = write_app(tmp_path / "app", {"hello.py": HELLO}, models=BROKEN_MODELS)
    line = (f"load error: {app / 'models.py'}:6: NameError: name 'undefined_name' is not "
            "defined\n")
    executed = invoke("repl", "--app", app, "-e", "await runBackgroundJob('hello')")
    assert (executed.exit_code, executed.stdout, executed.stderr) == (0, "hello world\n", line)
    piped = invoke("repl", "--app", app, input="await runBackgroundJob('hello')\n")
    assert (piped.exit_code, piped.stdout, piped.stderr) == (0, "hello world\n", line)


def test_the_app_and_sqlalchemys_select_func_and_text_are_in_the_namespace(tmp_path):
    app = write_example_app(tmp_path / "app", {"greet.py": GREET})
    result = invoke("repl", "--app", app, "-e", "\n".join([
        "app.settings.root.name",
        "await app.run_job('greet', ['for acme only'], tenants=['acme'])",
        "await database.session.scalar(select(func.count()).select_from(User))",
        "(await database.session.execute(text('select count(*) from tenants'))).scalar()",
    ]))
    assert (result.exit_code, result.stdout, result.stderr) == (
        0, "'app'\nfor acme only\n6\n3\n", "")


class Blocking(Completer):
    """Completes any text with `done`, once `release` is set; tells `started` each call."""

    def __init__(self, started):
        self.release = threading.Event()
        self.started = started
        self.calls = []

    def get_completions(self, document, complete_event):
        self.calls.append(document.text)
        self.started(document.text)
        self.release.wait(timeout=60)
        yield Completion("done")


async def test_completing_as_each_key_is_typed_takes_one_thread_and_the_latest_text():
    loop = asyncio.get_running_loop()
    first = loop.create_future()
    inner = Blocking(lambda text: loop.call_soon_threadsafe(
        lambda: first.done() or first.set_result(text)))
    completer = DetachedCompleter(inner)

    async def complete(text):
        found = completer.get_completions_async(Document(text), CompleteEvent())
        return [completion.text async for completion in found]

    before = threading.active_count()
    tasks = [asyncio.create_task(complete("k"))]
    assert await first == "k"  # the worker is busy with the first key
    tasks += [asyncio.create_task(complete("k" * n)) for n in range(2, 51)]
    try:
        await asyncio.sleep(0)  # the tasks just created have asked
        assert threading.active_count() <= before + 1
        for task in tasks[1:-1]:  # replaced by the next key before they started
            assert await task == []
    finally:
        inner.release.set()
    assert [await tasks[0], await tasks[-1]] == [["done"], ["done"]]
    assert inner.calls == ["k", "k" * 50]
