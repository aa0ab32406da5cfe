"""The requirement rule grammar shared by arch and numeric rules.

``[">=sm80, <sm90", "sm100"]``: the list is an OR of alternatives, a comma inside one
alternative is an AND, each term is ``OP VALUE`` with OP one of ``>= > <= < == !=``
(no OP means ``==``). The same grammar serves ``head_dim: "<=256"``.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from accelbridge.errors import PlatformError
from accelbridge.platforms.arch import Arch

T = TypeVar("T")

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
}
_TERM = re.compile(r"^(>=|<=|==|!=|>|<)?\s*([A-Za-z0-9_.]+)$")


class RuleError(PlatformError):
    """A rule that does not parse; the message names the offending token."""


@dataclass(frozen=True)
class Term(Generic[T]):
    op: str
    value: T

    def holds(self, x: T) -> bool:
        return _OPS[self.op](x, self.value)

    def __str__(self) -> str:
        return f"{'' if self.op == '==' else self.op}{self.value}"


@dataclass(frozen=True)
class Rule(Generic[T]):
    """An OR of AND-clauses of terms."""

    alternatives: tuple[tuple[Term[T], ...], ...]
    source: tuple[str, ...]

    def matches(self, x: T) -> bool:
        return any(all(t.holds(x) for t in clause) for clause in self.alternatives)

    def __str__(self) -> str:
        return " or ".join(", ".join(str(t) for t in clause) for clause in self.alternatives)


def parse_rule(rule: str | Sequence[str], parse_value: Callable[[str], T]) -> Rule[T]:
    """Parse a rule; every malformed token raises RuleError naming it."""
    texts = [rule] if isinstance(rule, str) else list(rule)
    if not texts:
        raise RuleError("empty rule: give at least one alternative, e.g. '>=sm80'")
    alternatives = []
    for text in texts:
        if not isinstance(text, str):
            raise RuleError(f"rule alternative {text!r} is not a string")
        if not text.strip():
            raise RuleError("empty rule alternative ''")
        clause = []
        for raw in text.split(","):
            token = raw.strip()
            if not token:
                raise RuleError(f"empty term in rule {text!r} (stray comma?)")
            m = _TERM.match(token)
            if not m:
                raise RuleError(f"bad rule token {token!r}: expected OP VALUE with OP one of {' '.join(_OPS)}")
            try:
                value = parse_value(m.group(2))
            except PlatformError as e:
                raise RuleError(f"bad rule token {token!r}: {e}") from None
            clause.append(Term(m.group(1) or "==", value))
        alternatives.append(tuple(clause))
    try:
        _sound(alternatives, texts)
    except RuleError:
        raise
    except (TypeError, PlatformError):  # values that do not compare (mixed arch families): said elsewhere
        pass
    return Rule(tuple(alternatives), tuple(texts))


def _bounds(clause: Sequence[Term[Any]]) -> tuple[Term[Any] | None, Term[Any] | None]:
    """The tightest lower and upper bound terms of an AND-clause (None: unbounded on that side)."""
    lo = hi = None
    for t in clause:
        if t.op in (">=", ">") and (lo is None or t.value > lo.value or (t.value == lo.value and t.op == ">")):
            lo = t
        if t.op in ("<=", "<") and (hi is None or t.value < hi.value or (t.value == hi.value and t.op == "<")):
            hi = t
    return lo, hi


def _sound(alternatives: list[tuple[Term[Any], ...]], texts: list[str]) -> None:
    """A clause no value satisfies, or alternatives that together admit every value: a mistake either way."""
    bounds = [_bounds(clause) for clause in alternatives]
    for clause, text, (lo, hi) in zip(alternatives, texts, bounds):
        equal = [t.value for t in clause if t.op == "=="]
        empty = any(not t.holds(v) for v in equal for t in clause)
        if lo is not None and hi is not None:
            empty |= lo.value > hi.value or (lo.value == hi.value and (lo.op == ">" or hi.op == "<"))
        if empty:
            raise RuleError(f"rule alternative {text!r} can never hold: no value satisfies all its terms")
    lows = [(b, t) for b, t in zip(bounds, texts) if b[0] and not b[1]]
    highs = [(b, t) for b, t in zip(bounds, texts) if b[1] and not b[0]]
    for (lo, _), lo_text in lows:
        for (_, hi), hi_text in highs:
            if hi.value > lo.value or (hi.value == lo.value and (lo.op == ">=" or hi.op == "<=")):
                fix = f"for a range write one alternative '{lo_text}, {hi_text}'" if hi.value > lo.value else "drop one"
                raise RuleError(f"rule {texts} holds for every value: a list's alternatives are OR'd "
                                f"({lo_text!r} or {hi_text!r}); {fix}")  # fmt: skip


def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise PlatformError(f"{text!r} is not an integer") from None


def parse_int_rule(rule: str | Sequence[str]) -> Rule[int]:
    return parse_rule(rule, _parse_int)


@dataclass(frozen=True)
class ArchRule:
    """An arch rule of one vendor family; an arch of another family never matches it."""

    rule: Rule[Arch]
    family: str

    @classmethod
    def parse(cls, rule: str | Sequence[str]) -> ArchRule:
        parsed = parse_rule(rule, Arch.parse)
        families = {t.value.family for clause in parsed.alternatives for t in clause}
        if len(families) > 1:
            names = ", ".join(sorted(f"{t.value.name} ({t.value.vendor})" for c in parsed.alternatives for t in c))
            raise RuleError(f"arch rule {list(parsed.source)} mixes vendor families: {names}")
        return cls(parsed, families.pop())

    def matches(self, arch: Arch) -> bool:
        return arch.family == self.family and self.rule.matches(arch)

    def __str__(self) -> str:
        return str(self.rule)
