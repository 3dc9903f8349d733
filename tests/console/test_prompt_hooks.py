"""`ConsoleRepl` overrides private hooks of ptpython's `PythonRepl`, and calls one
(`_show_result`) (pyproject bounds ptpython to >=3.0.26,<3.1): fail loudly, naming the hook,
if one disappears or changes its signature or the way ptpython calls it, rather than letting
the REPL quietly misbehave."""

from __future__ import annotations

import inspect

import pytest
from ptpython.python_input import PythonInput
from ptpython.repl import PythonRepl

from pinrepl.console.prompt import ConsoleRepl

HOOKS = {
    "run_and_show_expression_async": "(self, text: 'str') -> 'Any'",
    "eval_async": "(self, line: 'str') -> 'object'",
    "_handle_exception": "(self, e: 'BaseException') -> 'None'",
    "_add_to_namespace": "(self) -> 'None'",
}

#: Private methods of ptpython's that ConsoleRepl calls without overriding them:
#: `eval_async` shows every value of a line but the last (ptpython shows that one).
CALLED = {
    "_show_result": "(self, result: 'object') -> 'None'",
}

#: What ConsoleRepl relies on in the code around each hook.
CALLS = {
    "run_async": ["self._add_to_namespace()", "await self.run_and_show_expression_async("],
    "run_and_show_expression_async": [
        "await self.eval_async(text)", "loop.add_signal_handler(signal.SIGINT",
        "except SystemExit", "self._handle_exception(e)", "self._show_result(result)",
    ],
    "_add_to_namespace": ['globals["exit"] = exit()'],
}


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_each_overridden_hook_is_still_ptpythons_with_the_same_signature(hook):
    assert hook in vars(ConsoleRepl), f"ConsoleRepl no longer overrides {hook}"
    original = getattr(PythonRepl, hook, None)
    assert original is not None, f"ptpython's PythonRepl has no {hook} any more"
    assert str(inspect.signature(original)) == HOOKS[hook], f"ptpython changed {hook}"


@pytest.mark.parametrize("hook", sorted(CALLED))
def test_each_called_private_method_is_still_ptpythons_with_the_same_signature(hook):
    assert f"self.{hook}(" in inspect.getsource(ConsoleRepl), f"ConsoleRepl no longer calls {hook}"
    original = getattr(PythonRepl, hook, None)
    assert original is not None, f"ptpython's PythonRepl has no {hook} any more"
    assert str(inspect.signature(original)) == CALLED[hook], f"ptpython changed {hook}"


@pytest.mark.parametrize("method", sorted(CALLS))
def test_ptpython_still_calls_the_hooks_as_console_repl_expects(method):
    source = inspect.getsource(getattr(PythonRepl, method))
    for call in CALLS[method]:
        assert call in source, f"ptpython's {method} no longer does {call!r}"


def test_ptpython_still_takes_a_completer():
    parameter = inspect.signature(PythonInput.__init__).parameters.get("_completer")
    assert parameter is not None, "ptpython's PythonInput no longer takes _completer"
