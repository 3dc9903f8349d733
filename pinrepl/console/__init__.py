"""The console: the REPL (`repl`: a session's namespace and workspace; `prompt`: ptpython
over it; `listing`: its `jobs`; `current`: the namespace entries that follow the session),
the one `evaluator` they and transcripts share, `transcripts`, and the pytest plugin that
collects them."""

#: How a logged line reads in a terminal and in a transcript.
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
