"""Adapters: how one provider function serves one op, in two steps.

``bind`` reads the provider's ``inspect.signature`` once, with the catalog's ``adapt`` block,
and decides where each canonical argument goes: a provider parameter (renamed, converted), a
hint the provider lacks (dropped, noted), or an argument it cannot honour (a call that passes
it goes to the next provider). It also gives the static reasons a provider cannot serve at all.

``compile`` turns a binding into the steady-state call: one small generated function taking the
canonical arguments positionally that runs the op's metadata checks (at the check level), the
guards, the plan check, the conversions and the provider call, and normalises the return.
Both use the op declaration's one "is this argument passed" predicate.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from accelbridge import codegen
from accelbridge.attention import emulations, guards, plans
from accelbridge.attention.errors import InvalidArgumentError, ProviderContractError
from accelbridge.attention.guards import Guard
from accelbridge.kernels_catalog import OpEntry
from accelbridge.ops.spec import EXPRESSION_ENV, OpSpec
from accelbridge.platforms.dtypes import DTYPE_ATTRS

# kvcache served by a varlen function (FA4): cache tensors become k/v, lengths become seqused_k
KVCACHE_VIA_VARLEN_RENAME = {"k_cache": "k", "v_cache": "v", "cache_seqlens": "seqused_k"}
KVCACHE_VIA_VARLEN_UNSUPPORTED = frozenset(
    {"k", "v", "rotary_cos", "rotary_sin", "rotary_seqlens", "cache_batch_idx", "cache_leftpad", "cu_seqlens_k_new"}
)
_SIMPLE = (type(None), bool, int, float, str, tuple)
_EMPTY = inspect.Parameter.empty

WINDOW_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "none-for-infinite": lambda w: (None, None) if w is None else tuple(None if x is None or x < 0 else x for x in w),
    "none-if-infinite": lambda w: None if w is None or tuple(w) == (-1, -1) else tuple(w),
    "triple": lambda w: (-1, -1, 0) if w is None else (*tuple(w)[:2], 0),
}


def _rename_hint(name: str, params: dict[str, inspect.Parameter], spec: OpSpec) -> str:
    """'; it has X: adapt.rename {name: X}?' when the provider has a similar, otherwise unused parameter."""
    import difflib

    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    free = [p for p in params if p not in spec.params and params[p].kind not in variadic]
    close = difflib.get_close_matches(name, free, n=1, cutoff=0.6)
    return f"; it has {close[0]!r}: map it with adapt.rename {{{name}: {close[0]}}}?" if close else ""


def _window_mode(declared: str, provider_default: Any) -> str:
    """``auto``: the spelling the provider's own default shows ((-1, -1), (None, None), None, (-1, -1, 0))."""
    if declared != "auto":
        return declared
    if provider_default is None:
        return "none-if-infinite"
    if isinstance(provider_default, tuple) and len(provider_default) == 3:
        return "triple"
    if isinstance(provider_default, tuple) and provider_default[:1] == (None,):
        return "none-for-infinite"
    return "as-is"


def torch_dtypes(names: frozenset[str]) -> frozenset[torch.dtype]:
    out = set()
    for name in names:
        out.add(getattr(torch, DTYPE_ATTRS[name]))
        if name == "fp8_e4m3":
            out.add(torch.float8_e4m3fnuz)
    return frozenset(out)


def _full_seqlens(q: torch.Tensor, n: int) -> torch.Tensor:
    return torch.full((q.shape[0],), n, dtype=torch.int32, device=q.device)


@dataclass
class Binding:
    """Where each canonical argument of ``spec`` goes in the provider's call, and what it cannot take."""

    provider_id: str
    spec: OpSpec
    source: str
    fn: Callable[..., Any] | None = None
    entry: OpEntry | None = None
    mapped: dict[str, str] = field(default_factory=dict)  # canonical -> provider parameter
    unsupported: dict[str, str] = field(default_factory=dict)  # canonical -> why it cannot be honoured
    refusals: list[tuple[str, str, str]] = field(default_factory=list)  # (argument, when-expression, why)
    dropped: list[str] = field(default_factory=list)  # hints and plans the provider has no parameter for
    out_emulated: bool = False
    lse_always: bool = False
    reasons: list[str] = field(default_factory=list)  # static: this provider cannot serve the op at all
    notes: list[str] = field(default_factory=list)
    dtypes: frozenset[torch.dtype] | None = None
    head_dim_ok: Callable[[int], bool] | None = None
    params: dict[str, inspect.Parameter] = field(default_factory=dict)
    window: str = "as-is"  # how window_size is spelled for this provider
    _guards: list[Guard] | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.fn is not None and not self.reasons

    @property
    def guards(self) -> list[Guard]:
        """Every per-call refusal of this binding, once: the generated call inlines them, explain renders them."""
        if self._guards is None:
            spec, out = self.spec, []
            for name, why in self.unsupported.items():
                out.append(Guard(spec, name, spec.params[name].passed, f"cannot honour {name}= ({why})", unknown=True))
            for name, when, why in self.refusals:
                reason = f"cannot honour {name}= when {when} ({why or 'the catalog says so'})"
                out.append(Guard(spec, name, f"({spec.params[name].passed}) and ({when})", reason))
            if self.dtypes is not None:
                dtype = spec.features["dtype"]
                out.append(Guard(spec, "dtype", f"{dtype} not in _dtypes", "does not take dtype", dtype,
                                 {"_dtypes": self.dtypes}))  # fmt: skip
            if self.head_dim_ok is not None:
                head_dim = spec.features["head_dim"]
                out.append(Guard(spec, "head_dim", f"not _head_dim_ok({head_dim})", "does not take head_dim",
                                 head_dim, {"_head_dim_ok": self.head_dim_ok}))  # fmt: skip
            self._guards = out
        return self._guards

    def call_reasons(self, values: dict[str, Any]) -> list[str]:
        """Why this provider cannot serve a call with these canonical values (empty: it can)."""
        return guards.reasons(self.guards, values)


def bind(provider_id: str, spec: OpSpec, entry: OpEntry, fn: Callable[..., Any], source: str) -> Binding:
    """Map the canonical arguments of ``spec`` onto ``fn``'s parameters; problems go to ``reasons``."""
    b = Binding(provider_id, spec, source, entry=entry)
    if entry.adapt.emulate in emulations.WRAPPERS:  # a function of another shape: call it through a wrapper
        fn = emulations.WRAPPERS[entry.adapt.emulate](fn)
        b.notes.append(f"{spec.id} served through {entry.adapt.emulate} ({source})")
    try:
        params = dict(inspect.signature(fn).parameters)
    except (TypeError, ValueError) as e:
        b.reasons.append(f"cannot read the signature of {source}: {e}")
        return b
    b.params = params
    adapt = entry.adapt
    emulating = adapt.emulate == "kvcache-via-varlen"
    rename = dict(KVCACHE_VIA_VARLEN_RENAME) if emulating else {}
    rename.update(adapt.rename)
    blocked = (KVCACHE_VIA_VARLEN_UNSUPPORTED if emulating else frozenset()) | frozenset(adapt.ignores)
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    renamed = []
    for name, param in spec.params.items():
        target = rename.get(name, name)
        p = params.get(target)
        takes = p is not None and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        if name not in blocked and (takes or (name in adapt.kwargs and var_kw)):
            b.mapped[name] = target
            if target != name:
                renamed.append(f"{name}->{target}")
        elif param.role == "out":
            b.out_emulated = True
        elif param.role in ("hint", "plan"):
            b.dropped.append(name)
        elif name == "return_softmax_lse" and adapt.returns == "always-tuple":
            b.lse_always = True
        elif param.required:
            b.reasons.append(f"{source} has no parameter for the required argument {name!r}")
        elif name in adapt.ignores:
            b.unsupported[name] = f"the catalog marks it ignored by {source}"
        else:
            b.unsupported[name] = f"no such parameter in {source}" + _rename_hint(name, params, spec)
    targets = list(b.mapped.values()) + list(adapt.constants)
    for t in sorted({t for t in targets if targets.count(t) > 1}):
        b.reasons.append(f"two arguments map onto {source}'s parameter {t!r}; check adapt.rename")
    for p in params.values():
        if p.default is _EMPTY and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in targets:
            b.reasons.append(f"{source} requires parameter {p.name!r}, which no canonical argument supplies")
    req = entry.requires
    if spec.features.get("dtype") and req.dtypes:
        b.dtypes = frozenset.intersection(*(torch_dtypes(d) for d in req.dtypes))
    if spec.features.get("head_dim") and req.head_dim:
        rules = req.head_dim
        b.head_dim_ok = lambda n: all(r.matches(n) for r in rules)
    if renamed:
        b.notes.append("renamed " + ", ".join(renamed))
    if "window_size" in b.mapped:
        b.window = _window_mode(adapt.window, params[b.mapped["window_size"]].default)
        if b.window != "as-is":
            b.notes.append(f"window_size converted ({b.window})")
    if emulating:
        b.notes.append("kvcache served by the varlen kernel (seqused_k=cache_seqlens)")
    if b.out_emulated:
        b.notes.append("out emulated (result copied into out)")
    if b.dropped:
        b.notes.append("drops hints " + ", ".join(b.dropped) + " (they change speed, never results)")
    if b.unsupported:
        b.notes.append("cannot honour " + ", ".join(b.unsupported) + " (calls passing them go elsewhere)")
    for args, when, why in adapt.refuses:
        b.refusals += [(name, when, why) for name in args if name in b.mapped]
        for name in args:  # an argument it has no parameter for at all: the catalog's reason says why
            if name in b.unsupported and when.strip() == "True" and why:
                b.unsupported[name] = why
        b.notes.append(f"refuses {', '.join(args)} when {when}" + (f" ({why})" if why else ""))
    b.fn = fn if not b.reasons else None
    return b


# -- compile ---------------------------------------------------------------------------------------
def _capturing(t: Any) -> bool:
    return bool(getattr(t, "is_cuda", False)) and torch.cuda.is_current_stream_capturing()


def compile_call(b: Binding, level: str, reroute: Callable[[str, tuple[Any, ...]], Any]) -> Callable[..., Any]:
    """The steady-state function of binding ``b`` at check ``level`` (full | cheap | off)."""
    spec = b.spec
    names = spec.names
    args = ", ".join(names)
    pack = f"({args},)"
    g: dict[str, Any] = dict(EXPRESSION_ENV)
    g.update(_fn=b.fn, _reroute=reroute, _full_seqlens=_full_seqlens, _capturing=_capturing, _EXACT=level == "full")
    body: list[str] = []
    checking = level != "off" and bool(spec.metadata_checks)
    first = (*spec.role_names("data"), "")[0]
    device = f"{first}.get_device()"  # where the values line reads q's device index from
    if checking:  # inline what the kernel does not check itself; the rest is explained if the kernel raises
        g["_explain"] = lambda *a: spec.explain_metadata(dict(zip(names, a)))
        g["_Invalid"] = InvalidArgumentError
        reads, condition = spec.metadata_fast_path(b.entry.validates, exact=level == "full")  # type: ignore[union-attr]
        if condition != "True":
            # a read or condition that raises (None.dtype) is explained too; the explanation decides
            body += ["try:", *(f"    {line}" for line in reads), f"    if not ({condition}): _explain({args})",
                     "except _Invalid:", "    raise", "except Exception:", f"    _explain({args})"]  # fmt: skip
            if first and f"_device_{first} " in "".join(f"{line} " for line in reads):
                body.append(f"    _device_{first} = {device}")  # the explanation passed: q is a tensor
                device = f"_device_{first}"
    if level != "off" and spec.values_checks:
        g["_values"] = lambda *a: spec.check_values(dict(zip(names, a)))
        if level == "full":
            body.append(f"if not _capturing({first}): _values({args})")
        else:  # CPU tensors: the host read is free (no device copy, no sync), so the values are checked too
            g["_values"] = _host_values(spec)
            body.append(f"if {device} < 0 and {first}.is_cpu: _values({args})")
    for guard in b.guards:
        g.update(guard.names)
        body.append(guard.line(pack))
    plan = spec.plan
    if plan is not None and plan.keys and plan.param in b.mapped:
        g["_plan"] = plans.checker(b.provider_id, spec.facade, plan)
        key = "(" + ", ".join(c for _, _, c in plan.keys) + ",)"
        body.append(f"if {plan.param} is not None: {plan.param} = _plan({plan.param}, {key})")
    if plan is not None and plan.freeze and plan.param in b.mapped:
        g["_freeze"] = plans.freezer(spec.facade, plan)
        key = "(" + ", ".join(expr for _, expr in plan.freeze) + ",)"
        body.append(f"if {plan.param} is not None: {plan.param} = _freeze({plan.param}, {key})")
    adapt = b.entry.adapt  # type: ignore[union-attr]
    if "window_size" in b.mapped and b.window != "as-is":
        g["_window_convert"] = WINDOW_CONVERTERS[b.window]
        body.append("window_size = _window_convert(window_size)")
    if adapt.emulate == "kvcache-via-varlen" and "cache_seqlens" in b.mapped:
        body.append("if isinstance(cache_seqlens, int): cache_seqlens = _full_seqlens(q, cache_seqlens)")
    for name, target in b.mapped.items():  # canonical inert value -> the provider's own default
        param, pd = spec.params[name], b.params[target].default if target in b.params else _EMPTY
        if name == "window_size" or param.required or pd is _EMPTY or param.inert is None:
            continue
        cd = param.default
        if isinstance(cd, _SIMPLE) and isinstance(pd, _SIMPLE) and (type(cd) is not type(pd) or cd != pd):
            g[f"_pd_{name}"] = pd
            body.append(f"if {param.inert}: {name} = _pd_{name}")
    call = f"r = _fn({', '.join(_call_arguments(b, g))})"
    if checking:  # a bad argument the kernel rejected becomes InvalidArgumentError; other errors pass unchanged
        body += ["try:", f"    {call}", "except Exception:", f"    _explain({args})", "    raise"]
    else:
        body.append(call)
    body += _returns(b, g, adapt.returns)
    code = f"def adapter({args}):\n" + "".join(f"    {line}\n" for line in body)
    return codegen.define(f"<accelbridge adapter {b.provider_id}:{spec.id}:{level}>", code, g)["adapter"]


def _host_values(spec: OpSpec) -> Callable[..., None]:
    """The values checks of a call whose first data tensor is on the host (the cheap level's free host read).

    Device indices cannot tell the host from the meta device (both -1): a tensor elsewhere than the host is
    named by the whole-device comparisons first, so no value is read from a device that cannot give it."""
    names = spec.names
    tensors = [i for i, n in enumerate(names) if spec.params[n].role in ("data", "index", "out")]

    def values(*a: Any) -> None:
        call = dict(zip(names, a))
        if not all(a[i].is_cpu for i in tensors if isinstance(a[i], torch.Tensor)):
            spec.explain_metadata(call)
        spec.check_values(call)

    return values


def _call_arguments(b: Binding, g: dict[str, Any]) -> list[str]:
    """Verified positions first (the provider's own leading parameters), keywords after.

    A provider parameter no canonical argument maps to, followed by mapped ones, is passed its
    own default by position, so the prefix continues (a positional call is the cheapest).
    """
    by_target = {t: n for n, t in b.mapped.items()}
    for cname, value in b.entry.adapt.constants.items():  # type: ignore[union-attr]
        g[f"_c_{cname}"] = value
        by_target[cname] = f"_c_{cname}"
    params = list(b.params.values())
    last = max((i for i, p in enumerate(params) if p.name in by_target), default=-1)
    positional, keywords, in_prefix = [], [], True
    for i, p in enumerate(params[: last + 1]):
        if in_prefix and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            if p.name in by_target:
                positional.append(by_target[p.name])
                continue
            if p.default is not _EMPTY:
                g[f"_d_{i}"] = p.default
                positional.append(f"_d_{i}")
                continue
        in_prefix = False
        if p.name in by_target:
            keywords.append(f"{p.name}={by_target[p.name]}")
    keywords += [f"{t}={n}" for n, t in b.mapped.items() if t not in b.params]  # through **kwargs (adapt.kwargs)
    return positional + keywords


def _returns(b: Binding, g: dict[str, Any], mode: str) -> list[str]:
    """Normalise to ``out`` or ``(out, lse, ...)`` for ops with an LSE flag; record plans for producers."""
    spec = b.spec
    lines = []
    for rel in plans.relations_produced_by(spec.id):
        g[f"_record_{rel.param}"] = plans.recorder(b.provider_id, rel)
        key = "(" + ", ".join(p for _, p, _ in rel.keys) + ",)"
        lines.append(f"if r is not None: _record_{rel.param}(r, {key})")
    if "return_softmax_lse" not in spec.params or "out" not in spec.params:
        if len(spec.results) > 1:  # sgl-kernel 0.4.5's flash_mla_sparse_fwd returns a list (H200): a tuple, always
            lines.append("if r.__class__ is list: r = tuple(r)")
        return lines + ["return r"]
    if mode == "always-tuple" or b.lse_always:
        lines.append("if not return_softmax_lse: r = r[0]")
    elif mode == "auto":
        g["_no_lse"] = _no_lse_raiser(b.provider_id, spec.id, b.mapped.get("return_softmax_lse"))
        lines += ["if not return_softmax_lse:", "    if r.__class__ is tuple: r = r[0]",
                  "elif r.__class__ is not tuple: _no_lse(r)"]  # fmt: skip
    if b.out_emulated:
        lines += ["if out is not None:", "    if return_softmax_lse:", "        out.copy_(r[0])",
                  "        return (out, *r[1:])", "    out.copy_(r)", "    return out"]  # fmt: skip
    return lines + ["return r"]


def _no_lse_raiser(provider_id: str, op: str, flag: str | None) -> Callable[[Any], None]:
    def no_lse(result: Any) -> None:
        raise ProviderContractError(
            f"{op}: provider {provider_id!r} returned {type(result).__name__}, not (out, lse, ...), although "
            f"return_softmax_lse=True was passed (as {flag!r}); fix adapt.rename/returns in its catalog entry"
        )

    return no_lse
