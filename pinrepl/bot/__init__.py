"""The bot: runs each job at its cron times, exactly once across every bot that is up
(SPEC 7).

`scheduler` is the process (`Bot`: its loop, heartbeat, signals, `--once`); `plan` says
which slots are due; `dispatch` claims runs within this bot's capacity and runs them
through the app's runner; `results` writes their outcomes; `store` holds every statement
on the bot's tables; `outage` tells a database that went away from other errors;
the run history is read back by `db.runs`, and `statuses` names the run statuses. Here:
`counted`, the numbers of the bot's log lines, and `JOB_FAILURE`, the mark of a logged
traceback that is a job's.

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
