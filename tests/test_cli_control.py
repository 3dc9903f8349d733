"""The control commands as an operator uses them (SPEC 9): `pause-job` / `resume-job`,
`retry-runs`, `cancel-runs`, and `list-background-job-runs`' new filters; each mistake is
one line, exit 2, and changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import invoke, one_line
from .test_cli_defer import BotDouble, defer_app

App = tuple[Path, dict[str, str]]


@pytest.fixture
def app(tmp_path: Path, database_url: str) -> App:
    return defer_app(tmp_path, database_url)


def run(app: App, *args: str):
    root, env = app
    return invoke(*args, "--app", root, env=env)


def runs(app: App, *filters: str) -> list[dict]:
    result = run(app, "list-background-job-runs", "--json", *filters)
    assert result.exit_code == 0, result.output
    return sorted(json.loads(result.stdout), key=lambda r: r["id"])


def jobs(app: App) -> dict[str, list[dict]]:
    """Each job's pauses, as `list-background-jobs --json` shows them."""
    result = run(app, "list-background-jobs", "--json")
    assert result.exit_code == 0, result.output
    return {job["name"]: job["paused"] for job in json.loads(result.stdout)["jobs"]}


def deferred(app: App, *args: str) -> int:
    result = run(app, "defer", "--name", "hello", *args)
    assert result.exit_code == 0, result.output
    return int(result.stdout)


def test_pause_shows_in_the_job_list_and_resume_lifts_it(app):
    assert run(app, "pause-job", "--name", "hello", "--reason", "mail down").exit_code == 0
    assert [p["reason"] for p in jobs(app)["hello"]] == ["mail down"]
    table = run(app, "list-background-jobs")
    assert "hello (paused: mail down)" in table.stdout, table.output
    resumed = run(app, "resume-job", "--name", "hello")
    assert resumed.exit_code == 0, resumed.output
    assert jobs(app)["hello"] == []


def test_cancel_runs_cancels_a_queued_run_and_says_how_many(app):
    first, second = deferred(app), deferred(app)
    result = run(app, "cancel-runs", "--id", str(first))
    assert result.exit_code == 0, result.output
    assert "1" in result.output
    statuses = {r["id"]: r["status"] for r in runs(app)}
    assert statuses == {first: "cancelled", second: "queued"}


def test_retry_runs_queues_a_new_try_of_a_failed_run_only(app):
    failed, ok = deferred(app), deferred(app)
    double = BotDouble(*app)
    claimed = {row.id: row for row in double.claim()}
    double.finish(claimed[failed], failed=True)
    double.finish(claimed[ok])
    result = run(app, "retry-runs", "--name", "hello")
    assert result.exit_code == 0, result.output
    assert "1" in result.output
    after = runs(app)
    assert len(after) == 3
    new = after[-1]
    assert (new["job"], new["status"], new["origin"]) == ("hello", "queued", "defer")


def test_the_runs_list_filters_by_origin_and_since(app):
    deferred(app)
    assert len(runs(app, "--origin", "defer", "--since", "1h")) == 1
    assert runs(app, "--origin", "cli") == []


@pytest.mark.parametrize("args, says", [
    (("pause-job", "--name", "nope"), "nope"),
    (("resume-job", "--name", "nope"), "nope"),
    (("pause-job", "--name", "hello", "--tenant", "nobody"), "nobody"),
    (("retry-runs",), "--id"),
    (("retry-runs", "--id", "1", "--name", "hello"), "--id"),
    (("cancel-runs",), "--id"),
    (("retry-runs", "--name", "hello", "--since", "soon"), "soon"),
    (("list-background-job-runs", "--since", "yesterday"), "yesterday"),
    (("cancel-runs", "--name", "hello", "--status", "failed"), "failed"),
    (("retry-runs", "--id", "99999999999999999999"), "not in the range 1<=x<=9223372036854775807"),
    (("cancel-runs", "--id", "9223372036854775808"), "not in the range 1<=x<=9223372036854775807"),
    (("list-background-job-runs", "--limit", "99999999999999999999999"),
     "not in the range 1<=x<=9223372036854775807"),
])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(app, args, says):
    queued = deferred(app)
    line = one_line(run(app, *args))
    assert says in line
    assert [(r["id"], r["status"]) for r in runs(app)] == [(queued, "queued")]
    assert not any(jobs(app).values())


def test_the_largest_run_id_and_limit_are_no_error(app):
    queued = deferred(app)
    largest = str(2**63 - 1)
    cancelled = run(app, "cancel-runs", "--id", largest)
    retried = run(app, "retry-runs", "--id", largest)
    assert (cancelled.exit_code, retried.exit_code) == (0, 0), cancelled.output + retried.output
    assert [r["id"] for r in runs(app, "--limit", largest)] == [queued]
