"""The bot: runs each job at its cron times, exactly once across every bot that is up
(SPEC 7).

`scheduler` is the process (`Bot`: its loop, heartbeat, signals, `--once`); `plan` says
which slots are due; `dispatch` claims runs within this bot's capacity and runs them
through the app's runner; `results` writes their outcomes; `store` holds every statement
on the bot's tables; `outage` tells a database that went away from other errors;
the run history is read back by `db.runs`, and `statuses` names the run statuses. Here:
`counted`, the numbers of the bot's log lines.

Importing this package is cheap; its modules load SQLAlchemy.
"""


def counted(count: int, noun: str) -> str:
    """'1 slot', '3 slots' (`noun` takes an s)."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
