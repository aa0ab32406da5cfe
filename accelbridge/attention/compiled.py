"""torch.compile and CUDA graphs: each facade op as a torch.library custom op (namespace ``accelbridge``).

Under ``torch.compile`` a facade function does not trace into resolution, checks or the provider
(vendor kernels are opaque ops without fake implementations; providers import and log on first
use): it calls ``torch.ops.accelbridge.<op>``, whose schema, mutated arguments and fake
implementation are derived from the op declaration. The custom op's implementation is the eager
facade call, so resolution, loading and checks run at run time, outside the traced region, as
in eager mode. The graph holds no provider fact: a change of provider never recompiles it.

One custom op per variant of a call: with or without ``out`` (written in place, then not
returned: a custom op returns no alias of an input) and with or without each declared in-place
write (``k_cache``/``v_cache`` when ``k`` is passed). Planning ops return the no-plan answer under
compile (their tensors' shapes are the provider's, not the call's); the consumer op then plans
each call inside its implementation with the producer's arguments the declaration gives.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from accelbridge import codegen, ops
from accelbridge.attention.errors import NotCompilableError
from accelbridge.ops.spec import EXPRESSION_ENV, OpSpec

NAMESPACE = "accelbridge"
_INT_TWIN = "Tensor?|SymInt?"  # a tensor that may be given as an int: an int-typed twin argument carries it
_lock = threading.Lock()
_lib: torch.library.Library | None = None
_registered: dict[str, str] = {}  # qualified name -> schema
Facade = Callable[[str], Callable[..., Any]]  # op id -> its eager facade function


def _library() -> torch.library.Library:
    global _lib
    if _lib is None:
        _lib = torch.library.Library(NAMESPACE, "FRAGMENT")
    return _lib


def op_name(spec: OpSpec) -> str:
    """``fa3.kvcache`` -> ``fa3_kvcache`` (torch.library names are identifiers)."""
    return spec.id.replace(".", "_").replace("-", "_")


def schema_type(spec: OpSpec, name: str) -> str | None:
    """The torch.library type of a canonical argument; None where it has none (a callable)."""
    p = spec.params[name]
    if p.schema is not None:
        return p.schema
    if p.role in ("index", "plan", "out"):
        return "Tensor?"
    if p.role == "data":
        return "Tensor" if p.required else "Tensor?"
    d = p.default  # optional as well: a caller's None travels to the eager call as given
    if isinstance(d, bool):
        return "bool?"
    if isinstance(d, int):
        return "SymInt?"
    if isinstance(d, float):
        return "float?"
    if isinstance(d, tuple) and all(isinstance(x, int) for x in d):
        return "SymInt[]"
    return None


@dataclass
class CompiledOp:
    """The custom ops of one op declaration and the traced call that picks among them."""

    spec: OpSpec
    args: list[tuple[str, str]] = field(default_factory=list)  # (schema argument, type) in order, out excluded
    unrepresentable: list[str] = field(default_factory=list)  # must be inert under compile
    conditions: list[str] = field(default_factory=list)  # distinct mutation conditions
    variants: dict[tuple[bool, ...], str] = field(default_factory=dict)  # (conditions..., out) -> op name
    traced: Callable[..., Any] | None = None
    reason: str = ""  # why this op cannot run under torch.compile, where it cannot

    @property
    def has_out(self) -> bool:
        return "out" in self.spec.params

    @property
    def lse_flag(self) -> bool:
        return "return_softmax_lse" in self.spec.params


def _plan_answer(spec: OpSpec) -> Any:
    """What a planning op returns under compile: the reference planner's no-plan answer, or None."""
    return spec.reference() if spec.reference is not None else None


def _returns(c: CompiledOp, lse: bool, with_out: bool) -> int:
    """How many tensors a variant returns: the results the call asks for, less ``out`` when written in place."""
    n = (2 if lse else 1) if c.lse_flag else len(c.spec.results)
    return n - with_out


def _variant_schema(c: CompiledOp, flags: tuple[bool, ...], lse: bool, with_out: bool) -> str:
    spec, parts, alias = c.spec, [], 0
    for name, typ in c.args:
        cond = spec.params[name].mutated_when if name in spec.params else None
        if cond is not None and flags[c.conditions.index(cond)]:
            typ = f"Tensor(a{alias}!)" + ("?" if typ.endswith("?") else "")
            alias += 1
        parts.append(f"{typ} {name}")
    if with_out:
        parts.append(f"Tensor(a{alias}!) out")
    n = _returns(c, lse, with_out)  # a fixed tuple: auto-functionalisation takes no Tensor[] return
    returns = "Tensor" if n == 1 else "(" + ", ".join(["Tensor"] * n) + ")"
    return f"({', '.join(parts)}) -> {returns}"


def _unpacker(c: CompiledOp, with_out: bool) -> Callable[[tuple[Any, ...]], dict[str, Any]]:
    """args of one custom-op call -> the canonical keyword arguments (twins folded back, windows as tuples);
    what to fold is worked out once, not per call."""
    names = [n for n, _ in c.args] + (["out"] if with_out else [])
    twins = [(n, n[: -len("__int")]) for n, _ in c.args if n.endswith("__int")]
    lists = [n for n, typ in c.args if typ == "SymInt[]"]

    def to_values(args: tuple[Any, ...]) -> dict[str, Any]:
        values = dict(zip(names, args))
        for twin, name in twins:
            n = values.pop(twin)
            if n is not None:
                values[name] = n
        for name in lists:
            if values[name] is not None:
                values[name] = tuple(values[name])
        return values

    return to_values


def _implementation(c: CompiledOp, lse: bool, with_out: bool, function: Facade) -> Callable[..., Any]:
    """The eager facade call: resolution, checks, provider and plan, outside any traced region."""
    spec = c.spec
    selector = {spec.selector[0]: spec.selector[1]} if spec.selector else {}
    plan = spec.plan if spec.plan is not None and spec.plan.producer_args is not None else None
    n = _returns(c, lse, with_out) + with_out
    to_values = _unpacker(c, with_out)
    facade: list[Callable[..., Any]] = []  # the facade function, looked up on the first call

    def impl(*args: Any) -> Any:
        values = to_values(args)
        if plan is not None and values.get(plan.param) is None:  # planned per call: the plan could not travel
            made = function(plan.producer)(**plan.producer_args(spec.with_defaults(values)))
            made = made if isinstance(made, tuple) else (made,)
            values.update(zip(plan.result_params or (plan.param,), made))
        if not facade:
            facade.append(function(spec.id))
        r = facade[0](**values, **selector)
        r = list(r) if isinstance(r, (tuple, list)) else [r]
        r = [t.contiguous() for t in r[with_out:n]]  # the fake's strides (lse is often a transposed view)
        return r[0] if len(r) == 1 else tuple(r)

    return impl


def _fake(c: CompiledOp, lse: bool, with_out: bool) -> Callable[..., Any]:
    """Output shapes and dtypes from the declaration's result expressions; no provider is asked."""
    spec = c.spec
    first = spec.role_names("data")[0]
    codes = [(spec.expression(s, "result shape"), spec.expression(d, "result dtype")) for s, d in spec.result_shapes]

    n = _returns(c, lse, with_out) + with_out
    to_values = _unpacker(c, with_out)

    def fake(*args: Any) -> Any:
        values = spec.with_defaults(to_values(args))
        like = values[first]
        r = [like.new_empty(s(values), dtype=d(values)) for s, d in codes[with_out:n]]
        return r[0] if len(r) == 1 else tuple(r)

    return fake


def _register(c: CompiledOp, function: Facade) -> None:
    import itertools

    lib, spec = _library(), c.spec
    both = (False, True)
    for flags in itertools.product(both, repeat=len(c.conditions)):
        for lse, with_out in itertools.product(both if c.lse_flag else (False,), both if c.has_out else (False,)):
            name = (op_name(spec) + "".join(f"_w{i}" for i, f in enumerate(flags) if f) + ("_lse" if lse else "")
                    + ("_out" if with_out else ""))  # fmt: skip
            schema = _variant_schema(c, flags, lse, with_out)
            qualified = f"{NAMESPACE}::{name}"
            if qualified not in _registered:
                lib.define(name + schema)
                lib.impl(name, _implementation(c, lse, with_out, function), "CompositeExplicitAutograd")
                torch.library.register_fake(qualified, _fake(c, lse, with_out), lib=lib)
                _registered[qualified] = schema
            elif _registered[qualified] != schema:
                raise NotCompilableError(f"{spec.id}: custom op {qualified} is already defined as {schema}")
            c.variants[(*flags, lse, with_out)] = name


def _traced_code(c: CompiledOp) -> tuple[str, dict[str, Any]]:
    """The function dynamo traces: argument forms for the schema, the variant, the normalised return."""
    spec = c.spec
    names = list(spec.names)
    g: dict[str, Any] = dict(EXPRESSION_ENV)
    g.update(_ints=(int, torch.SymInt), _unrepresentable=_unrepresentable)  # _Tensor, _window: EXPRESSION_ENV's
    body = []
    for name in c.unrepresentable:
        body.append(f"if {spec.params[name].passed}: _unrepresentable({spec.id!r}, {name!r})")
    for name, typ in c.args:
        if name.endswith("__int"):
            base = name[: -len("__int")]
            body.append(f"if isinstance({base}, _ints): {name}, {base} = {base}, None")
            body.append(f"else: {name} = None")
        elif spec.params[name].role == "plan":
            body.append(f"if not isinstance({name}, _Tensor): {name} = None  # a plan object stays outside the graph")
        elif typ == "SymInt[]":
            body.append(f"{name} = list(_window({name}))")
    call_args = ", ".join(n for n, _ in c.args)
    for i, cond in enumerate(c.conditions):
        body.append(f"_m{i} = bool({cond})")
    lse = "bool(return_softmax_lse)" if c.lse_flag else "False"
    key = "(" + "".join(f"_m{i}, " for i in range(len(c.conditions))) + f"{lse}, "
    g["_variants"] = {k: getattr(torch.ops, NAMESPACE).__getattr__(name).default for k, name in c.variants.items()}
    if c.has_out:
        body += [f"if out is None: r = _variants[{key}False)]({call_args})",
                 f"else: r = _variants[{key}True)]({call_args}, out)"]  # fmt: skip
        if c.lse_flag:  # a variant's return: (out, lse), out, lse alone (out written in place) or nothing
            body += ["if out is None: return r if not return_softmax_lse else (r[0], r[1])",
                     "return out if not return_softmax_lse else (out, r)"]  # fmt: skip
        else:
            body += ["return r if out is None else (out, *r)"]
    else:
        body += [f"return _variants[{key}False)]({call_args})"]
    code = f"def traced({', '.join(names)}):\n" + "".join(f"    {line}\n" for line in body)
    return code, g


def _unrepresentable(op: str, name: str) -> None:
    raise NotCompilableError(
        f"{op}: {name}= cannot cross into a torch.compile graph (no torch.library type); call without it "
        "inside the compiled region, or call this op outside it"
    )


def _not_compilable(op: str, reason: str) -> Callable[..., Any]:
    def traced(*args: Any, **kwargs: Any) -> Any:
        raise NotCompilableError(f"{op} cannot run under torch.compile: {reason}")

    return traced


def build(spec: OpSpec, function: Facade) -> CompiledOp:
    """The custom ops of ``spec`` (registered once per process) and its traced call.

    ``function(op)``: the eager facade function of an op, which the custom ops' implementations call.
    """
    c = CompiledOp(spec)
    if ops.planned_by(spec.id):  # a planning op: no plan in the graph, the consumer plans per call
        answer = _plan_answer(spec)
        c.traced = lambda *args: answer
        return c
    if not spec.result_shapes or not spec.role_names("data"):
        c.reason = "its declaration gives no result shapes (OpSpec result_shapes)"
        c.traced = _not_compilable(spec.id, c.reason)
        return c
    for name, p in spec.params.items():
        typ = schema_type(spec, name)
        if name == "out":
            continue
        if typ is None:
            c.unrepresentable.append(name)
        elif typ == _INT_TWIN:
            c.args += [(name, "Tensor?"), (f"{name}__int", "SymInt?")]
        else:
            c.args.append((name, typ))
        if p.mutated_when is not None and p.mutated_when not in c.conditions:
            c.conditions.append(p.mutated_when)
    with _lock:
        _register(c, function)
    code, g = _traced_code(c)
    c.traced = codegen.define(f"<accelbridge traced {spec.id}>", code, g)["traced"]
    return c


_BUILT: dict[str, CompiledOp] = {}


def compiled(op: str, function: Facade | None = None) -> CompiledOp:
    """The (cached) custom ops of ``op``; the facade builds them with its ``function`` (the first build)."""
    with _lock:
        c = _BUILT.get(op)
    if c is None:
        if function is None:
            raise NotCompilableError(f"{op}: its facade function was not built yet (accelbridge.attention.function)")
        c = build(ops.get(op), function)
        with _lock:
            c = _BUILT.setdefault(op, c)
    return c


def custom_op(op: str, out: bool = False, writes: bool = False, lse: bool = False) -> Any:
    """``torch.ops.accelbridge.<op>`` for one variant: ``out=True`` writes ``out``, ``writes=True`` the cache,
    ``lse=True`` returns the LSE (ops with ``return_softmax_lse``)."""
    c = compiled(op)
    key = (*(writes,) * len(c.conditions), lse and c.lse_flag, out)
    return getattr(torch.ops, NAMESPACE).__getattr__(c.variants[key]).default
