"""Alembic's environment for pinrepl's own tables, run by `pinrepl.runs.migrate` on the
connection it passes in `config.attributes["connection"]`: no URL, no ini file, and a
version table of pinrepl's own, so an app's own Alembic setup (`alembic_version`) is
never read or written."""

from alembic import context

from pinrepl.runs.migrate import VERSION_TABLE

context.configure(
    connection=context.config.attributes["connection"],
    version_table=VERSION_TABLE,
    # One short transaction per revision, committed as it ends.
    transaction_per_migration=True,
    # pinrepl's SQLite engine emits BEGIN itself (db/engine.py), so DDL is transactional
    # there too: a revision that fails halfway leaves nothing behind.
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
