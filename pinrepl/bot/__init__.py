"""The bot: runs each job at its cron times, exactly once across every bot that is up
(SPEC 7 to 9).

`process` is the bot (`Bot`: its loop, heartbeat, signals, `--once`); `plan` says which
slots are due and `scheduler` queues them; `worker` claims runs within this bot's
capacity and runs them through the app's runner; `results` writes their outcomes;
`outage` tells a database that went away from other errors; `events` is what happens in
a bot, which its log lines, `metrics` (Prometheus, `--metrics-port`) and `hooks` (a job's
`on_failure`) hear. The statements are `runs.repository`'s. Here: `counted`, the numbers
of the bot's log lines, and `JOB_FAILURE`, the mark of a logged traceback that is a job's.

Importing this package is cheap; its modules load SQLAlchemy.
"""

#: The attribute (`extra={JOB_FAILURE: True}`) of a log record whose exception is a job's
#: failure (its `run` or `tenants_filter` raised it): the `bot` command shows its traceback
#: as `run-background-job` and the REPL do, without pinrepl's frames. An error of the
#: bot's own keeps them, for a bug report.
JOB_FAILURE = "job_failure"


def counted(count: int, noun: str) -> str:
    """'1 slot', '3 slots' (`noun` takes an s)."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
