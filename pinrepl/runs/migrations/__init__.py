"""pinrepl's own migrations (Alembic): `env.py` runs them on the connection `runs.migrate`
hands over; `versions/` holds one revision per change of pinrepl's tables, never edited
once released (a change is a new revision)."""
