"""The bot: runs each job at its cron times, exactly once across every bot that is up
(SPEC 7).

`scheduler` is the process (`Bot`: its loop, heartbeat, signals, `--once`); `plan` says
which slots are due; `dispatch` claims runs within this bot's capacity and runs them
through the app's runner; `results` writes their outcomes; `store` holds every statement
on the bot's tables; `outage` tells a database that went away from other errors;
the run history is read back by `db.runs`, and `statuses` names the run statuses.

Importing this package is cheap; its modules load SQLAlchemy.
"""
