"""Generated code, visible: every function accelbridge writes at run time is made by ``define``.

The facade's public functions, the provider adapters, the traced custom-op calls and the rule
expressions of the op declarations are small Python functions written from declarations. Each is
compiled under a file name of its own (``<accelbridge adapter torch:fa3.kvcache>``) whose text is
registered with ``linecache``: a traceback shows the generated line, ``inspect.getsource`` and
debuggers read it, and ``accelbridge explain --source OP`` prints it (``source``, ``sources``).
"""

from __future__ import annotations

import ast
import linecache
import threading
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any

_SOURCES: dict[str, str] = {}  # file name -> generated source, in definition order
_lock = threading.Lock()


def define(filename: str, source: str, globals: dict[str, Any]) -> dict[str, Any]:
    """Run generated ``source`` (function definitions) in ``globals`` under ``filename``; returns ``globals``.

    The source is kept in ``linecache`` (and here) for as long as the process lives, so every
    frame of it shows its line; another text under a name already used gets a numbered name
    (``<accelbridge adapter p:op:cheap #2>``), so an older function keeps showing its own lines.
    """
    if not source.endswith("\n"):
        source += "\n"
    with _lock:
        name, n = filename, 1
        while _SOURCES.get(name, source) != source:
            n += 1
            name = f"{filename[:-1]} #{n}>" if filename.endswith(">") else f"{filename} #{n}"
        _SOURCES[name] = source
        linecache.cache[name] = (len(source), None, source.splitlines(keepends=True), name)
    code = compile(source, name, "exec")
    exec(code, globals)  # noqa: S102 - our own generated text, registered above
    return globals


def source(filename: str) -> str | None:
    """The generated source defined under ``filename`` (None: nothing was)."""
    with _lock:
        return _SOURCES.get(filename)


def sources(part: str = "") -> dict[str, str]:
    """Every generated source whose file name contains ``part``, in definition order."""
    with _lock:
        return {name: text for name, text in _SOURCES.items() if part in name}


def source_of(fn: Callable[..., Any]) -> str | None:
    """The generated source of a function made by ``define`` (None for ordinary code)."""
    code = getattr(fn, "__code__", None)
    return source(code.co_filename) if code is not None else None


class Expression:
    """A rule of a declaration or catalog (``q.dim() == 3``, ``causal and window_size[0] >= 0``) as a function.

    The text is parsed once; the names it reads among ``variables`` (an op's canonical
    arguments) become the parameters of a generated function whose globals are ``env`` (the
    declarations' helpers). Called with a mapping of the call's values: a variable the mapping
    lacks raises NameError, as reading an unbound name does.
    """

    __slots__ = ("text", "filename", "params", "_fn", "_env")

    def __init__(self, text: str, variables: Iterable[str], env: dict[str, Any], filename: str):
        tree = ast.parse(text, mode="eval")  # SyntaxError here names the rule, before any call
        bound = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        read = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        known = set(variables)
        self.text, self.filename, self._env, self._fn = text, filename, env, None
        self.params = tuple(sorted((read - bound) & known))

    @property
    def fn(self) -> Callable[..., Any]:
        """The generated function, made at first use (after every declaration added its helpers)."""
        if self._fn is None:
            g = define(self.filename, f"def rule({', '.join(self.params)}):\n    return ({self.text})\n", {})
            self._fn = types.FunctionType(g["rule"].__code__, self._env, "rule")  # the helpers' live namespace
        return self._fn

    def __call__(self, values: Mapping[str, Any]) -> Any:
        try:
            args = [values[n] for n in self.params]
        except KeyError as e:
            raise NameError(f"name {e.args[0]!r} is not defined") from None
        return self.fn(*args)

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"
