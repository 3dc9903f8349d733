"""Runs as records (SPEC 8): every run the bots execute, and the on-demand runs of the CLI
and the REPL, is a row of `background_job_runs` before it starts and after it ends.

`status` names the statuses (cheap to import); `record` is the `Run` a job sees as
`self.current_run` and the codec of a run's arguments (cheap too); `tables` defines
pinrepl's own tables; `repository` holds every statement on them (enqueue, claim, expand,
finish, retry, abandon, prune, the bots' heartbeats), used by the bot, the CLI, the REPL
and the app; `history` reads the history back for the listings; `deferred` is the
`DeferredRun` handle `defer()` returns; `migrate` versions and upgrades the tables with
Alembic. The modules below `record` load SQLAlchemy.
"""

from .record import Run
from .status import Status

__all__ = ["Run", "Status"]
