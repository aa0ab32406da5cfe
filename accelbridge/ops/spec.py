"""One declaration per op: what the facade, adapters, resolver, checks and conformance all read.

An op is declared by a *signature function*: a Python function whose parameters are the
canonical ones (names, order, defaults) and whose annotations give each parameter's role and,
where the default does not say it, the value at which it asks for nothing (its *inert* value).
Next to it: a check table (small checks, each with its reason), the reference function, the
scheduler-metadata relation and the conformance cases. Everything else is derived.

Inert and check expressions are Python expressions over the canonical argument names. The same
compiled text serves the fast path (inlined into the generated call) and the explanation (run
one check at a time to name the first that fails), so no rule is written twice.
"""

from __future__ import annotations

import ast
import builtins
import functools
import inspect
from collections import ChainMap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from accelbridge.codegen import Expression
from accelbridge.errors import DeclarationError, InvalidArgumentError

_EMPTY = inspect.Parameter.empty

# -- roles -------------------------------------------------------------------------------------
ROLES = ("data", "index", "option", "hint", "plan", "out", "selector")


class Arg:
    """A parameter's role, used as its annotation; call it to declare a conditional inert value.

    Roles: ``data`` (tensors the result is computed from), ``index`` (int32 index tensors:
    lengths, offsets, page tables), ``option`` (values that change the result), ``hint``
    (scheduling: speed only, any provider may ignore it), ``plan`` (a planning object from
    another op), ``out`` (the output buffer), ``selector`` (picks the op, e.g. ``ver``).
    """

    __slots__ = ("role", "inert", "schema", "mutated_when")

    def __init__(self, role: str, inert: str | None = None, schema: str | None = None,
                 mutated_when: str | None = None):  # fmt: skip
        if role not in ROLES:
            raise DeclarationError(f"unknown role {role!r}; valid: {', '.join(ROLES)}")
        self.role, self.inert, self.schema, self.mutated_when = role, inert, schema, mutated_when

    def __call__(self, inert: str | None = None, *, schema: str | None = None,
                 mutated_when: str | None = None) -> Arg:  # fmt: skip
        """The same role, inert when the expression ``inert`` holds (it may read other arguments).

        ``schema``: its torch.library type where role and default do not tell (``SymInt?`` for an
        int defaulting to None; ``Tensor?|SymInt?`` for a tensor that may be an int). ``mutated_when``:
        the condition under which the kernel writes this tensor in place (the kvcache append).
        """
        return Arg(self.role, inert, schema, mutated_when)

    def __repr__(self) -> str:
        return self.role if self.inert is None else f"{self.role}(inert: {self.inert})"


Data, Index, Option, Hint, Plan, Out, Selector = (Arg(r) for r in ROLES)


def window_inert(w: Any) -> bool:
    """(-1, -1), (None, None) or None: an infinite window asks for nothing."""
    if w is None:
        return True
    if w.__class__ not in (tuple, list) or len(w) < 2:
        return False
    return w[0] in (-1, None) and w[1] in (-1, None)


def default_inert(name: str, default: Any) -> str | None:
    """The inert expression a default implies; None for a required parameter (always passed)."""
    if default is _EMPTY:
        return None
    if default is None:
        return f"{name} is None"
    if default is True:
        return f"{name} is True"
    if default is False or (type(default) in (int, float) and default == 0):
        return f"not {name}"
    if isinstance(default, tuple) and tuple(default) == (-1, -1):
        return f"_window_inert({name})"
    return f"{name} == {default!r}"


@dataclass(frozen=True)
class Param:
    name: str
    role: str
    default: Any
    inert: str | None  # expression that holds when the value asks for nothing; None: required
    schema: str | None = None  # torch.library type, where role and default do not tell
    mutated_when: str | None = None  # condition under which the kernel writes it in place

    @property
    def required(self) -> bool:
        return self.default is _EMPTY

    @property
    def passed(self) -> str:
        """The expression "this argument asks for something": inlined by adapters, evaluated by reasons."""
        return "True" if self.inert is None else f"not ({self.inert})"


# -- checks ------------------------------------------------------------------------------------
class CheckFailed(Exception):
    """Raised by a values check: which argument, what it is, what was expected."""

    def __init__(self, arg: str, got: str, expected: str):
        super().__init__(arg, got, expected)
        self.arg, self.got, self.expected = arg, got, expected


def fail(arg: str, got: str, expected: str) -> None:
    raise CheckFailed(arg, got, expected)


@dataclass(frozen=True)
class Check:
    """One rule with its reason. ``metadata``: an expression reading dtype/shape/device only.

    ``values``: a function of the argument mapping that reads index tensors (a device->host
    copy) and calls ``fail(arg, got, expected)``; only run at the ``full`` check level.
    """

    arg: str
    ok: str | Callable[[Mapping[str, Any]], None]
    got: str = ""
    expected: str = ""
    kind: str = "metadata"
    what: str = "shape"  # shape (also type and rank) | dtype | device: what a kernel may check itself

    def __post_init__(self) -> None:
        if self.what not in ("shape", "dtype", "device"):
            raise DeclarationError(f"check what must be shape, dtype or device, not {self.what!r}")
        if self.kind not in ("metadata", "values"):
            raise DeclarationError(f"check kind must be metadata or values, not {self.kind!r}")
        if (self.kind == "metadata") != isinstance(self.ok, str):
            raise DeclarationError("a metadata check is an expression string; a values check is a function")


def on_q_device(name: str) -> Check:
    """An optional tensor (index tensors, sinks) on q's device, as every kernel reads it there.

    Device indices on the fast path (two integer reads: another GPU or the host next to a GPU);
    whole devices where ``_EXACT`` holds (the full level, and the pass that explains a kernel error).
    """
    same = f"{name}.get_device() == q.get_device() and (not _EXACT or {name}.device == q.device)"
    return Check(name, f"{name} is None or ({same})", f"is on {{{name}.device}} but q is on {{q.device}}",
                 "every tensor on q's device", what="device")  # fmt: skip


def _shape(x: Any) -> str:
    return f"has shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else f"is {type(x).__name__}"


def _index_desc(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"is {x.dtype} with shape {tuple(x.shape)}"
    return "is None" if x is None else f"is {type(x).__name__}"


def _tensor_desc(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"is {x.dtype} {tuple(x.shape)} on {x.device}"
    return f"is {type(x).__name__}"


FLOAT_DTYPES = frozenset(
    getattr(torch, n)
    for n in ("float16", "bfloat16", "float32", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz")
    if hasattr(torch, n)
)
FP8_DTYPES = frozenset(d for d in FLOAT_DTYPES if "float8" in str(d))


def out_dtype(dtype: torch.dtype) -> torch.dtype:
    """Attention kernels write bf16 for FP8 inputs, the input dtype otherwise."""
    return torch.bfloat16 if dtype in FP8_DTYPES else dtype


def window_tuple(w: Any) -> tuple[int, int]:
    """A window in FA's (-1, -1) convention, whatever form the caller used."""
    return (-1, -1) if w is None else tuple(-1 if x is None else int(x) for x in tuple(w)[:2])  # type: ignore[return-value]


# names every inert and check expression may use besides the canonical arguments
EXPRESSION_ENV: dict[str, Any] = {
    "torch": torch,
    "_Tensor": torch.Tensor,
    "_I32": torch.int32,
    "_F": FLOAT_DTYPES,
    "_FP8": FP8_DTYPES,
    "_window_inert": window_inert,
    "_EXACT": True,  # exact comparisons (whole devices): False only on the cheap level's fast path
    "_window": window_tuple,
    "_out_dtype": out_dtype,
    "_shape": _shape,
    "_index": _index_desc,
    "_tensor": _tensor_desc,
}


@dataclass(frozen=True)
class PlanRelation:
    """A planning object passed to this op (``param``) that op ``producer`` built.

    ``keys``: (label, expression over the producer's arguments, expression over this op's
    arguments); a plan used with other values is refused before any kernel runs.
    ``producer_args``: the producer's arguments for a call of this op (conformance plans with it).
    """

    param: str
    producer: str
    keys: tuple[tuple[str, str, str], ...]
    producer_args: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None
    result_params: tuple[str, ...] = ()  # the consumer arguments a tuple result fills; () -> (param,)
    # a plan object (not a tensor) the kernel fills on first use and then reads: (label, expression over
    # this op's arguments) it is frozen to; a later call with other values is refused before any kernel
    freeze: tuple[tuple[str, str], ...] = ()


# -- the spec ----------------------------------------------------------------------------------
@dataclass
class OpSpec:
    """Every fact about one op. Build with ``OpSpec(id, signature_function, ...)``; register with ``ops.register``."""

    id: str
    signature: Callable[..., Any]
    selector: tuple[str, Any] | None = None  # ("ver", 3): the facade argument value selecting this op
    checks: tuple[Check, ...] = ()
    reference: Callable[..., Any] | None = None
    plan: PlanRelation | None = None
    cases: Callable[[bool], list[Any]] | None = None  # full -> conformance cases
    inputs: Callable[[Any, Any], dict[str, Any]] | None = None  # (case, inputs) -> canonical kwargs
    features: dict[str, str] = field(default_factory=lambda: {"dtype": "q.dtype", "head_dim": "q.shape[-1]"})
    without_provider: str = "raise"  # "none": no provider is a no-op returning None (planning ops)
    results: tuple[str, ...] = ("out", "lse")  # what a tuple result holds, in order (conformance compares each)
    # per result, (shape, dtype) as expressions over the arguments: the fake implementation under torch.compile
    result_shapes: tuple[tuple[str, str], ...] = ()
    family: str = ""
    params: dict[str, Param] = field(init=False)

    def __post_init__(self) -> None:
        self.family = self.family or self.id.split(".")[0]
        sig = inspect.signature(self.signature)
        params = {}
        for p in sig.parameters.values():
            ann = p.annotation
            if not isinstance(ann, Arg):
                raise DeclarationError(f"{self.id}: parameter {p.name!r} needs a role annotation (ops.spec.Data, ...)")
            if ann.role == "selector":
                continue
            params[p.name] = Param(p.name, ann.role, p.default, ann.inert or default_inert(p.name, p.default),
                                   ann.schema, ann.mutated_when)  # fmt: skip
        self.params = params
        if self.result_shapes and len(self.result_shapes) > len(self.results):
            raise DeclarationError(f"{self.id}: {len(self.result_shapes)} result shapes for results {self.results}")

    def validate(self) -> None:
        """Every expression of the declaration reads only known names: a bug of the declaration, found when it is
        registered (``ops.register``; the built-in ones in tests/test_import.py, not at each import)."""
        for c in self.metadata_checks:
            _names_known(self, c.ok, f"check on {c.arg}")  # type: ignore[arg-type]
        for n, p in self.params.items():
            if p.inert is not None:
                _names_known(self, p.inert, f"inert value of {n}")
            if p.mutated_when is not None:
                _names_known(self, p.mutated_when, f"mutation condition of {n}")
        for name, (shape, dtype) in zip(self.results, self.result_shapes):
            _names_known(self, shape, f"shape of result {name}")
            _names_known(self, dtype, f"dtype of result {name}")

    def expression(self, text: str, what: str = "rule") -> Expression:
        """A rule over this op's arguments as a function (made once per text; ``accelbridge.codegen``)."""
        e = self._expressions.get(text)
        if e is None:
            e = self._expressions[text] = Expression(text, self.params, EXPRESSION_ENV, f"<{self.id} {what}: {text}>")
        return e

    @functools.cached_property
    def _expressions(self) -> dict[str, Expression]:
        return {}

    @functools.cached_property
    def _inert_code(self) -> dict[str, Expression]:
        """Made at first use, not at import."""
        return {n: self.expression(p.inert, f"inert {n}") for n, p in self.params.items()
                if p.inert is not None}  # fmt: skip

    @functools.cached_property
    def _check_code(self) -> list[tuple[Expression, Any, Any, Any]]:
        """The metadata checks and their messages, made at the first call that fails one."""
        return [(self.expression(c.ok, f"check {c.arg}"), self._fstring(c.arg), self._fstring(c.got),  # type: ignore[arg-type]
                 self._fstring(c.expected)) for c in self.metadata_checks]  # fmt: skip

    def _fstring(self, template: str) -> Expression | None:
        return self.expression("f" + repr(template), "check message") if template else None

    # -- derived facts ----------------------------------------------------------------------
    @property
    def facade(self) -> str:
        """The accelbridge.attention function serving this op."""
        return self.signature.__name__

    @property
    def names(self) -> tuple[str, ...]:
        """Canonical parameter names in order (the selector excluded): how adapters take arguments."""
        return tuple(self.params)

    @property
    def help(self) -> str:
        return (inspect.getdoc(self.signature) or "").split("\n")[0]

    def role_names(self, *roles: str) -> tuple[str, ...]:
        return tuple(n for n, p in self.params.items() if p.role in roles)

    @functools.cached_property
    def metadata_checks(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.kind == "metadata")

    @functools.cached_property
    def values_checks(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.kind == "values")

    def with_defaults(self, values: Mapping[str, Any]) -> Mapping[str, Any]:
        """The call's values, the declared defaults for what it leaves out."""
        if len(values) == len(self.params):
            return values  # a complete call (what adapters pass): nothing to fill
        return ChainMap(dict(values), self._defaults)

    @functools.cached_property
    def _defaults(self) -> dict[str, Any]:
        return {n: p.default for n, p in self.params.items() if not p.required}

    def is_passed(self, name: str, values: Mapping[str, Any]) -> bool:
        """Whether the call's value of ``name`` asks for something (the one predicate everyone uses)."""
        code = self._inert_code.get(name)
        if code is None:
            return True
        try:
            return not code(self.with_defaults(values))
        except NameError:  # a partial feature set (resolve()) without a required argument it reads
            return True

    def holds(self, expr: str, values: Mapping[str, Any]) -> bool:
        """Whether a condition over the call's arguments holds (False where it cannot be told)."""
        try:
            return bool(self.expression(expr, "condition")(self.with_defaults(values)))
        except Exception:
            return False

    def feature(self, name: str, values: Mapping[str, Any]) -> Any:
        """``dtype`` or ``head_dim`` of a call (None where it cannot be told)."""
        expr = self.features.get(name)
        if expr is None:
            return None
        try:
            return self.expression(expr, f"feature {name}")(values)
        except Exception:
            return None

    # -- checks -----------------------------------------------------------------------------
    def metadata_condition(self, skip: frozenset[str] = frozenset()) -> str:
        """The metadata checks (but those of the kinds in ``skip``) as one expression, as declared."""
        return " and ".join(f"({c.ok})" for c in self.metadata_checks if c.what not in skip) or "True"

    def metadata_fast_path(self, skip: frozenset[str] = frozenset(), exact: bool = False) -> tuple[list[str], str]:
        """The same checks for the generated call: (prologue lines, condition).

        Each attribute (shape, dtype, device index) of a required tensor argument is read once
        into a local by the prologue, ``x.dim()`` becomes ``len(shape)`` and a sliced shape a tuple:
        on a small VM one tensor attribute costs ~0.1 us, and the declared expressions read q's up
        to eight times. Optional arguments, mostly None, keep the declared ``x is None or ...``. A
        required argument no valid call leaves None (some check cannot hold for None) is read
        without an isinstance guard (0.05 us each); the others read as None when not tensors. A
        read or condition that raises is decided by the declared expressions (``explain_metadata``).
        ``exact``: the value of ``_EXACT`` (whole-device comparisons), folded in.
        """
        hoist = _Hoist(frozenset(n for n, p in self.params.items() if p.required), exact)
        trees = [ast.parse(c.ok, mode="eval") for c in self.metadata_checks]
        hoist.may_be_none = frozenset(n for n in hoist.params if not any(_fails_if_none(t.body, n) for t in trees))
        parts = [ast.unparse(hoist.visit(t).body)
                 for c, t in zip(self.metadata_checks, trees) if c.what not in skip]  # fmt: skip
        prologue = []
        for name in sorted(hoist.read, key=list(self.params).index):
            attrs = [a for a in _HOISTED if a in hoist.read[name]]
            local = ", ".join(f"_{a}_{name}" for a in attrs)
            reads = ", ".join(_HOISTED[a].format(name) for a in attrs)
            if "tuple" in hoist.read[name]:  # sliced somewhere: a tuple of the sizes
                reads = reads.replace(f"{name}.shape", f"tuple({name}.shape)")
            if name not in hoist.may_be_none:  # never None: a non-tensor raises here and the explanation decides
                prologue.append(f"{local} = {reads}")
                continue
            tensor = f"{name}.__class__ is _Tensor or ({name} is not None and isinstance({name}, _Tensor))"
            prologue += [f"if {tensor}: {local} = {reads}",  # isinstance(None, Tensor) alone costs 0.2 us
                         f"else: {' = '.join(f'_{a}_{name}' for a in attrs)} = None"]  # fmt: skip
        parts = [p for p in parts if p != "True"]
        return prologue, " and ".join(f"({p})" for p in parts) or "True"

    def explain_metadata(self, values: Mapping[str, Any]) -> None:
        """Raise InvalidArgumentError for the first metadata check that fails (the slow, explaining pass)."""
        env = self.with_defaults(values)
        for code, arg, got, expected in self._check_code:
            try:
                ok = code(env)
            except Exception:
                ok = False
            if not ok:
                raise InvalidArgumentError(self.message(_render(arg, env), _render(got, env), _render(expected, env)))

    def check_values(self, values: Mapping[str, Any]) -> None:
        """Run the values checks (reads index tensors on the host)."""
        env = self.with_defaults(values)
        try:
            for check in self.values_checks:
                check.ok(env)  # type: ignore[operator]
        except CheckFailed as f:
            raise InvalidArgumentError(self.message(f.arg, f.got, f.expected)) from None

    def message(self, arg: str, got: str, expected: str) -> str:
        return f"{self.facade}: {arg} {got}; expected {expected}"


def _raises_if_none(node: ast.AST, name: str) -> bool:
    """Whether evaluating ``node`` raises when ``name`` is None (it reads an attribute of it)."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return node.value.id == name and not node.attr.startswith("__")
    if isinstance(node, ast.BoolOp):
        return _raises_if_none(node.values[0], name)  # the first operand always runs
    if isinstance(node, ast.Compare):
        return _raises_if_none(node.left, name) or _raises_if_none(node.comparators[0], name)
    if isinstance(node, ast.IfExp):
        return _raises_if_none(node.test, name)
    if isinstance(node, (ast.Lambda, ast.comprehension, ast.GeneratorExp, ast.ListComp)):
        return False
    return any(_raises_if_none(child, name) for child in ast.iter_child_nodes(node))


def _fails_if_none(node: ast.AST, name: str) -> bool:
    """Whether the check ``node`` can never hold when ``name`` is None (it fails or raises)."""
    if isinstance(node, ast.BoolOp):
        each = (_fails_if_none(v, name) for v in node.values)
        return any(each) if isinstance(node.op, ast.And) else all(each)
    if isinstance(node, ast.IfExp):
        both = _fails_if_none(node.body, name) and _fails_if_none(node.orelse, name)
        return _fails_if_none(node.test, name) or both
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return _raises_if_none(node.operand, name)
    if isinstance(node, ast.Compare):  # a chain stops at its first false link: any operand that raises decides
        return any(_raises_if_none(x, name) for x in (node.left, *node.comparators))
    return _raises_if_none(node, name)


_HOISTED = {"shape": "{}.shape", "dtype": "{}.dtype", "device": "{}.get_device()"}  # local name -> its read


class _Hoist(ast.NodeTransformer):
    """``x.shape``, ``x.dtype``, ``x.dim()``, ``x.get_device()`` of an argument -> the locals the prologue reads."""

    def __init__(self, params: frozenset[str], exact: bool):
        self.params, self.exact, self.read = params, exact, {}  # type: ignore[var-annotated]
        self.may_be_none: frozenset[str] = frozenset()

    def visit_Name(self, node: ast.Name) -> ast.AST:
        return ast.Constant(self.exact) if node.id == "_EXACT" else node

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        node = self.generic_visit(node)  # type: ignore[assignment]
        if isinstance(node.op, ast.Not) and isinstance(node.operand, ast.Constant):
            return ast.Constant(not node.operand.value)
        return node

    def visit_BoolOp(self, node: ast.BoolOp) -> ast.AST:
        """Fold the constants ``_EXACT`` leaves: ``x or True`` -> True, ``x and True`` -> x."""
        node = self.generic_visit(node)  # type: ignore[assignment]
        decisive = isinstance(node.op, ast.Or)  # the constant that decides an or (True) / an and (False)
        values = []
        for v in node.values:
            if isinstance(v, ast.Constant) and isinstance(v.value, bool):
                if v.value is decisive:  # what it skips is dropped, unless it binds a name (a := ...)
                    kept = [x for x in values if any(isinstance(n, ast.NamedExpr) for n in ast.walk(x))]
                    return ast.BoolOp(node.op, [*kept, v]) if kept else ast.Constant(decisive)
                continue
            values.append(v)
        if not values:
            return ast.Constant(not decisive)
        return values[0] if len(values) == 1 else ast.BoolOp(node.op, values)

    def _local(self, name: str, attr: str) -> ast.Name:
        self.read.setdefault(name, set()).add(attr)
        return ast.Name(f"_{attr}_{name}", ast.Load())

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        v = node.value  # a slice of a torch.Size builds another Size (0.3 us): slice a tuple of it instead
        if (isinstance(node.slice, ast.Slice) and isinstance(v, ast.Attribute) and v.attr == "shape"
                and isinstance(v.value, ast.Name) and v.value.id in self.params):  # fmt: skip
            self.read.setdefault(v.value.id, set()).update(("shape", "tuple"))
            return ast.Subscript(ast.Name(f"_shape_{v.value.id}", ast.Load()), node.slice, ast.Load())
        return self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        if isinstance(node.value, ast.Name) and node.value.id in self.params and node.attr in ("shape", "dtype"):
            return self._local(node.value.id, node.attr)
        return self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> ast.AST:
        f = node.func
        if (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in self.params
                and not node.args and f.attr in ("dim", "get_device")):  # fmt: skip
            if f.attr == "dim":
                return ast.Call(ast.Name("len", ast.Load()), [self._local(f.value.id, "shape")], [])
            return self._local(f.value.id, "device")
        return self.generic_visit(node)


def _render(code: Expression | None, env: Mapping[str, Any]) -> str:
    if code is None:
        return ""
    try:
        return code(env)
    except Exception:
        return "is not of the expected form"


def _names_known(spec: OpSpec, expr: str, what: str) -> None:
    """A declaration reading an unknown name is a bug of the declaration: fail when it is registered, not per call."""
    tree = ast.parse(expr, mode="eval")
    bound = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    read = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    unknown = sorted(read - bound - set(spec.params) - set(EXPRESSION_ENV) - _BUILTINS)
    if unknown:
        raise DeclarationError(f"{spec.id}: {what} reads unknown name(s) {unknown}")


_BUILTINS = frozenset(dir(builtins))
