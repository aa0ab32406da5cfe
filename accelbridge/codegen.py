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

    The text is parsed once; each name it reads among ``variables`` (an op's canonical
    arguments) becomes a lookup in the mapping of the call's values, made when evaluation reaches
    it (``indices is None or q.shape[-1] == 576`` reads no ``q`` when ``indices`` is None), in a
    generated function whose globals are ``env`` (the declarations' helpers). A variable the
    mapping lacks raises NameError, as reading an unbound name does.
    """

    __slots__ = ("text", "filename", "params", "_fn", "_env", "_tree")

    def __init__(self, text: str, variables: Iterable[str], env: dict[str, Any], filename: str):
        tree = ast.parse(text, mode="eval")  # SyntaxError here names the rule, before any call
        bound = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        read = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        self.text, self.filename, self._env, self._fn, self._tree = text, filename, env, None, tree
        self.params = frozenset((read - bound) & set(variables))

    @property
    def fn(self) -> Callable[[Mapping[str, Any]], Any]:
        """The generated function of the values mapping, made at first use (after every declaration added its
        helpers to ``env``)."""
        if self._fn is None:
            body = ast.unparse(_Lookups(self.params).visit(self._tree))
            g = define(self.filename, f"def rule(_values):\n    # {self.text}\n    return {body}\n", {})
            self._fn = types.FunctionType(g["rule"].__code__, self._env, "rule")  # the helpers' live namespace
        return self._fn

    def __call__(self, values: Mapping[str, Any]) -> Any:
        try:
            return self.fn(values)
        except KeyError as e:
            name = e.args[0] if e.args else None
            if name in self.params and name not in values:
                raise NameError(f"name {name!r} is not defined") from None
            raise

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"


class _Lookups(ast.NodeTransformer):
    """``q`` -> ``_values['q']`` for the variables a rule reads."""

    def __init__(self, names: frozenset[str]):
        self.names = names

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in self.names and isinstance(node.ctx, ast.Load):
            return ast.Subscript(ast.Name("_values", ast.Load()), ast.Constant(node.id), ast.Load())
        return node
