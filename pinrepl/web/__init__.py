"""pinrepl's web dashboard (SPEC 9): `create_app(app)` is a Starlette app over an app's run
history (pages: jobs, runs, one run, bots; updated live with htmx), with Run now, Pause,
Resume, Retry and Cancel; `pinrepl web` serves it with uvicorn.

Needs the `web` extra (`pip install 'pinrepl[web]'`): Starlette, Jinja2, uvicorn and
python-multipart. htmx 2 is shipped in `static/` (BSD-0, its licence beside it).
"""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
