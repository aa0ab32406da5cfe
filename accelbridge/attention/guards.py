"""Guards: the per-call conditions under which a provider hands a call to the next one, as data.

A binding (``adapters.bind``) lists its guards once: which argument, the condition (a Python
expression over the canonical arguments), the reason. The generated call inlines each condition
in front of the provider call (``if COND: return _reroute(ARG, args)``); ``explain``, the reroute's
error and conformance evaluate the same condition as a function (``accelbridge.codegen.Expression``)
and render the reason. No guard is written twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from accelbridge.codegen import Expression
from accelbridge.ops.spec import EXPRESSION_ENV, OpSpec


@dataclass
class Guard:
    """When ``condition`` holds for a call, this provider cannot serve it because of ``argument``.

    ``reason``: the text ``explain`` shows; ``shown``: an expression whose value it ends with
    (``does not take dtype`` + ``q.dtype``). ``names``: values the condition reads besides the
    arguments and the declarations' helpers.
    ``unknown``: the answer where the condition cannot be evaluated on a partial call (``resolve``).
    """

    spec: OpSpec
    argument: str
    condition: str
    reason: str
    shown: str | None = None
    names: dict[str, Any] = field(default_factory=dict)
    unknown: bool = False
    _test: Expression | None = field(default=None, init=False, repr=False)
    _why: Expression | None = field(default=None, init=False, repr=False)

    def _expression(self, text: str, what: str) -> Expression:
        if not self.names:
            return self.spec.expression(text, what)
        env = {**EXPRESSION_ENV, **self.names}
        return Expression(text, self.spec.params, env, f"<{self.spec.id} {what}: {text}>")

    def holds(self, values: Mapping[str, Any]) -> bool:
        """Whether this guard refuses a call with these canonical values (``unknown`` where it cannot tell)."""
        if self._test is None:
            self._test = self._expression(self.condition, f"guard {self.argument}")
        try:
            return bool(self._test(self.spec.with_defaults(values)))
        except Exception:
            return self.unknown

    def why(self, values: Mapping[str, Any]) -> str:
        """The reason, rendered for this call."""
        if self.shown is None:
            return self.reason
        if self._why is None:
            self._why = self._expression(self.shown, f"guard {self.argument} shown")
        return f"{self.reason} {self._why(self.spec.with_defaults(values))}"

    def line(self, pack: str) -> str:
        """The generated call's line for this guard."""
        return f"if {self.condition}: return _reroute({self.argument!r}, {pack})"


def reasons(guards: list[Guard], values: Mapping[str, Any]) -> list[str]:
    """The reasons of every guard that refuses this call (empty: none does)."""
    return [g.why(values) for g in guards if g.holds(values)]
