"""The retry policy (SPEC 8): `pinrepl.Retry` and a job's `retries`, when each next try is
due, and which outcomes get one. The bots' use of it (a row per try) is tested with the bot.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from pinrepl import (
    AmbiguousTenant,
    App,
    BadJobArguments,
    JobDefinitionError,
    JobLoadError,
    JobTimeout,
    Retry,
    TenantViolation,
    UnknownBackgroundJob,
    UnknownTenant,
)
from pinrepl.retry import retry_delay


def test_the_defaults_are_the_contracts():
    assert Retry() == Retry(attempts=3, delay=15, factor=2, max_delay=3600, jitter=True,
                            on=(Exception,))
    with pytest.raises(dataclasses.FrozenInstanceError):
        Retry().attempts = 5  # type: ignore[misc]


def test_each_try_waits_longer_up_to_max_delay():
    retry = Retry(attempts=10, delay=15, factor=2, max_delay=100, jitter=False)
    assert [retry.delay_after(n) for n in range(1, 6)] == [15, 30, 60, 100, 100]
    assert Retry(factor=1, jitter=False).delay_after(7) == 15  # a constant delay
    assert Retry(attempts=5000, jitter=False).delay_after(5000) == 3600  # no overflow


@pytest.mark.parametrize(("drawn", "factor"), [(0.0, 0.5), (0.5, 0.75), (0.999999, 1.0)])
def test_jitter_takes_between_half_and_all_of_the_delay(drawn, factor):
    retry = Retry(delay=10, factor=3)
    assert retry.delay_after(2, random=lambda: drawn) == pytest.approx(30 * factor)
    assert retry.delay_after(1) == pytest.approx(10 * 0.75, abs=2.5)  # the real random


@pytest.mark.parametrize(("options", "error", "problem"), [
    ({"attempts": 0}, ValueError, "Retry(attempts=0): it must be a whole number of at least 1"),
    ({"attempts": 2.5}, ValueError, "Retry(attempts=2.5)"),
    ({"attempts": True}, ValueError, "Retry(attempts=True)"),
    ({"delay": -1}, ValueError, "Retry(delay=-1): it must be a number of seconds, 0 or more"),
    ({"delay": float("inf")}, ValueError, "Retry(delay=inf)"),
    ({"factor": 0.5}, ValueError, "Retry(factor=0.5): it must be a number of at least 1"),
    ({"max_delay": "1h"}, ValueError, "Retry(max_delay='1h')"),
    ({"jitter": 1}, ValueError, "Retry(jitter=1): it must be True or False"),
    ({"on": (int,)}, TypeError, "Retry(on=(<class 'int'>,)): it must be an exception class"),
    ({"on": ()}, TypeError, "Retry(on=()): it must be an exception class or a tuple"),
])
def test_a_bad_retry_is_refused_where_it_is_written(options, error, problem):
    with pytest.raises(error) as raised:
        Retry(**options)
    assert str(raised.value).startswith(problem), raised.value


def test_on_may_be_one_class():
    assert Retry(on=OSError).on == (OSError,)


def test_exceptions_of_on_and_timeouts_retry():
    retry = Retry(on=(OSError,))
    assert retry.retries(ConnectionResetError("reset"))
    assert retry.retries(JobTimeout("timed out after 1 s"))  # whatever `on` says
    assert not retry.retries(ValueError("bad"))
    assert Retry().retries(ValueError("bad"))
    assert not Retry().retries(KeyboardInterrupt())  # Exception is the default


@pytest.mark.parametrize("error", [
    BadJobArguments("background job 'x': missing a required argument"),
    UnknownTenant("unknown tenant 'acme'"),
    AmbiguousTenant("tenant '2' is ambiguous"),
    TenantViolation("tenant 'acme' may not run 'x' for tenant 'globex'"),
    JobDefinitionError("tenants_filter must return a query of tenants"),
    JobLoadError("jobs/x.py", "SyntaxError"),
    UnknownBackgroundJob("typo", ["x"]),
])
def test_the_callers_and_the_definitions_errors_never_retry(error):
    assert not Retry(on=(BaseException,)).retries(error)
    assert retry_delay(Retry(), 1, "failed", error) is None


def test_retry_delay_says_whether_and_when_the_next_try_is_due():
    retry = Retry(attempts=2, delay=10, jitter=False, on=(OSError,))
    assert retry_delay(retry, 1, "failed", OSError()) == 10
    assert retry_delay(retry, 2, "failed", OSError()) == 20
    assert retry_delay(retry, 3, "failed", OSError()) is None  # no try left
    assert retry_delay(retry, 1, "failed", ValueError()) is None  # not of `on`
    assert retry_delay(retry, 1, "failed") == 10  # known only by its status
    # Stopped at its timeout, or its bot died: a retry whatever the error was.
    assert retry_delay(retry, 1, "timed_out") == 10
    assert retry_delay(retry, 2, "abandoned", ValueError()) == 20
    for status in ("succeeded", "cancelled", "skipped"):
        assert retry_delay(retry, 1, status) is None
    assert retry_delay(None, 1, "abandoned") is None  # a job without retries
    assert retry_delay(Retry(), 1, "failed", random=lambda: 0.0) == 7.5


# -- the job attribute ------------------------------------------------------------------------

def job(attributes: str, name: str = "Job") -> str:
    return (f"import pinrepl\nfrom pinrepl import BackgroundJob\n\nclass {name}(BackgroundJob):\n"
            f"    {attributes}\n\n    async def run(self):\n        pass\n")


def test_a_jobs_retries_is_its_policy(make_app):
    root = make_app({
        "three.py": job("retries = 3"),
        "custom.py": job("retries = pinrepl.Retry(attempts=5, delay=1, on=OSError)"),
        "none.py": job("retries = 0"),
        "plain.py": job("pass"),
    })
    app = App.open(root)
    try:
        assert app.jobs["three"].retry == Retry(attempts=3)
        assert app.jobs["custom"].retry == Retry(attempts=5, delay=1, on=(OSError,))
        assert app.jobs["none"].retry is None and app.jobs["plain"].retry is None
        assert "\n  3 retries\n" in repr(app.jobs["three"])  # the REPL's summary
        assert not any(line.endswith("retries") for line in repr(app.jobs["none"]).split("\n"))
    finally:
        asyncio.run(app.aclose())


def test_a_bad_retry_in_a_job_is_a_load_error_naming_its_line(make_app):
    root = make_app({"job.py": job("retries = pinrepl.Retry(delay=-1)"),
                     "good.py": job("retries = 2")})
    app = App.open(root)
    try:
        assert app.jobs.names == ["good"]
        (error,) = app.jobs.errors
        assert error.message == "ValueError: Retry(delay=-1): it must be a number of " \
                                "seconds, 0 or more (line 5)"
    finally:
        asyncio.run(app.aclose())
