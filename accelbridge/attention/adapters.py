"""Adapters: a function generated at resolution that calls a provider the canonical way.

Each adapter takes the canonical arguments positionally (in the facade's order) and calls
the provider with its own parameter names, read once from ``inspect.signature``: by
position for the leading parameters whose names it has verified, by keyword for the rest.
Renames, value conversions, ``out`` emulation and return normalisation are compiled in, so
the steady-state call does no lookups. An argument the provider cannot honour compiles to
a guard that hands the call to the next viable provider when its value is not the default.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from accelbridge.kernels_catalog import OpEntry
from accelbridge.platforms.dtypes import DTYPE_ATTRS

# Arguments that change speed, never results: a provider without them still serves the call.
HINTS: dict[str, frozenset[str]] = {
    "flash_attn_varlen_func": frozenset({"num_splits", "pack_gqa", "sm_margin", "max_seqlen_q", "max_seqlen_k"}),
    "flash_attn_with_kvcache": frozenset({"num_splits", "pack_gqa", "sm_margin", "max_seqlen_q", "scheduler_metadata"}),
    "get_scheduler_metadata": frozenset({"qkv_dtype", "has_softcap", "sm_margin", "pack_gqa", "max_seqlen_k_new"}),
    "get_mla_metadata": frozenset({"num_q_tokens_per_head_k", "num_heads_k", "num_heads_q"}),
    "flash_mla_with_kvcache": frozenset({"tile_scheduler_metadata", "num_splits"}),
}
# kvcache served by a varlen function (FA4): cache tensors become k/v, lengths become seqused_k
KVCACHE_VIA_VARLEN_RENAME = {"k_cache": "k", "v_cache": "v", "cache_seqlens": "seqused_k"}
KVCACHE_VIA_VARLEN_UNSUPPORTED = frozenset(
    {"k", "v", "rotary_cos", "rotary_sin", "rotary_seqlens", "cache_batch_idx", "cache_leftpad", "cu_seqlens_k_new"}
)
_TENSOR_OPS = ("flash_attn_varlen_func", "flash_attn_with_kvcache", "flash_mla_with_kvcache")
_SIMPLE = (type(None), bool, int, float, str, tuple)
_EMPTY = inspect.Parameter.empty


def is_default(value: Any, default: Any) -> bool:
    """Whether a call left this argument at its canonical default (window lists count too)."""
    if default is None:
        return value is None
    if isinstance(default, tuple):
        return value is None or (isinstance(value, (tuple, list)) and tuple(value) == default)
    if isinstance(value, torch.Tensor):
        return False
    return value is default or (type(value) in (bool, int, float) and value == default)


def _nd_window(w: Any) -> bool:
    return w is not None and tuple(w) != (-1, -1)


WINDOW_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "none-for-infinite": lambda w: (None, None) if w is None else tuple(None if x < 0 else x for x in w),
    "none-if-infinite": lambda w: None if w is None or tuple(w) == (-1, -1) else tuple(w),
    "triple": lambda w: (-1, -1, 0) if w is None else (*tuple(w)[:2], 0),
}


def _full_seqlens(q: torch.Tensor, n: int) -> torch.Tensor:
    return torch.full((q.shape[0],), n, dtype=torch.int32, device=q.device)


def torch_dtypes(names: frozenset[str]) -> frozenset[torch.dtype]:
    out = set()
    for name in names:
        out.add(getattr(torch, DTYPE_ATTRS[name]))
        if name == "fp8_e4m3":
            out.add(torch.float8_e4m3fnuz)
    return frozenset(out)


@dataclass
class Adapter:
    """How one provider function serves one op; ``fn`` is None when it cannot (``reasons``)."""

    provider_id: str
    op: str
    fn: Callable[..., Any] | None = None
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unsupported: dict[str, Any] = field(default_factory=dict)
    dtypes: frozenset[torch.dtype] | None = None
    head_dim_ok: Callable[[int], bool] | None = None
    source: str = ""
    reroute: Callable[[str, tuple[Any, ...]], Any] | None = None
    ignored: frozenset[str] = frozenset()  # in the signature, but the catalog says not honoured

    def call_reasons(self, values: dict[str, Any]) -> list[str]:
        """Why this provider cannot serve a call with these canonical argument values."""
        reasons = []
        for name, default in self.unsupported.items():
            if name in values and not is_default(values[name], default):
                why = "the catalog marks it ignored by" if name in self.ignored else "no such parameter in"
                reasons.append(f"cannot honour {name}= ({why} {self.source})")
        q = values.get("q")
        if isinstance(q, torch.Tensor):
            if self.dtypes is not None and q.dtype not in self.dtypes:
                reasons.append(f"does not take dtype {q.dtype}")
            if self.head_dim_ok is not None and not self.head_dim_ok(q.shape[-1]):
                reasons.append(f"does not take head_dim {q.shape[-1]}")
        return reasons


def _nondefault_expr(name: str, default: Any, consts: dict[str, Any]) -> str:
    if default is None:
        return f"{name} is not None"
    if default is False:
        return f"{name} is not False and bool({name})"
    if default is True:
        return f"not {name}"
    if default == (-1, -1):
        return f"_nd_window({name})"
    consts[f"_cd_{name}"] = default
    if type(default) in (int, float):  # fast path for the common, default value
        fast = f"{name}.__class__ is {type(default).__name__} and {name} == {default!r}"
        return f"not ({fast}) and not _is_default({name}, _cd_{name})"
    return f"not _is_default({name}, _cd_{name})"


def build(
    provider_id: str,
    entry: OpEntry,
    fn: Callable[..., Any],
    facade: str,
    canonical: inspect.Signature,
    source: str,
    check_meta: Callable[..., Any] | None,
) -> Adapter:
    """Compile the adapter of ``fn`` for ``entry.op``; static problems go to ``reasons``."""
    adapter = Adapter(provider_id, entry.op, source=source)
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError) as e:
        adapter.reasons.append(f"cannot read the signature of {source}: {e}")
        return adapter
    names = list(canonical.parameters)
    adapt = entry.adapt
    emulating = adapt.emulate == "kvcache-via-varlen"
    rename = dict(KVCACHE_VIA_VARLEN_RENAME) if emulating else {}
    rename.update(adapt.rename)
    blocked = (KVCACHE_VIA_VARLEN_UNSUPPORTED if emulating else frozenset()) | frozenset(adapt.ignores)
    adapter.ignored = frozenset(adapt.ignores)
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    hints = HINTS.get(facade, frozenset())
    mapped: dict[str, str] = {}  # canonical -> provider parameter
    ignored_hints, renamed = [], []
    out_emulated = False
    for name in names:
        target = rename.get(name, name)
        p = params.get(target)
        takes = p is not None and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        if name not in blocked and (takes or (name in adapt.kwargs and var_kw)):
            mapped[name] = target
            if target != name:
                renamed.append(f"{name}->{target}")
        elif name == "out":
            out_emulated = True
        elif name in hints:
            ignored_hints.append(name)
        elif name == "return_softmax_lse" and adapt.returns == "always-tuple":
            pass  # the LSE always comes back
        elif canonical.parameters[name].default is _EMPTY:
            adapter.reasons.append(f"{source} has no parameter for the required argument {name!r}")
        else:
            adapter.unsupported[name] = canonical.parameters[name].default
    targets = list(mapped.values()) + list(adapt.constants)
    for t in {t for t in targets if targets.count(t) > 1}:
        adapter.reasons.append(f"two arguments map onto {source}'s parameter {t!r}; check adapt.rename")
    for p in params.values():
        if p.default is _EMPTY and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in targets:
            adapter.reasons.append(f"{source} requires parameter {p.name!r}, which no canonical argument supplies")
    if adapter.reasons:
        return adapter

    req = entry.requires
    if facade in _TENSOR_OPS:
        if req.dtypes:
            adapter.dtypes = frozenset.intersection(*(torch_dtypes(d) for d in req.dtypes))
        if req.head_dim:
            rules = req.head_dim
            adapter.head_dim_ok = lambda n: all(r.matches(n) for r in rules)
    g: dict[str, Any] = {
        "_fn": fn,
        "_nd_window": _nd_window,
        "_is_default": is_default,
        "_full_seqlens": _full_seqlens,
        "_dtypes": adapter.dtypes,
        "_head_dim_ok": adapter.head_dim_ok,
        "_check_meta": check_meta,
        "_adapter": adapter,
    }
    args = ", ".join(names)
    pack = f"({args},)"
    body = []
    for name, default in adapter.unsupported.items():
        body.append(f"if {_nondefault_expr(name, default, g)}: return _adapter.reroute({name!r}, {pack})")
    if adapter.dtypes is not None:
        body.append(f"if q.dtype not in _dtypes: return _adapter.reroute('dtype', {pack})")
    if adapter.head_dim_ok is not None:
        body.append(f"if not _head_dim_ok(q.shape[-1]): return _adapter.reroute('head_dim', {pack})")
    if check_meta is not None and "scheduler_metadata" in names:
        body.append(
            "if scheduler_metadata is not None: "
            "scheduler_metadata = _check_meta(scheduler_metadata, num_splits, causal, window_size, pack_gqa)"
        )
    if "window_size" in mapped and adapt.window != "as-is":
        g["_window"] = WINDOW_CONVERTERS[adapt.window]
        body.append("window_size = _window(window_size)")
        adapter.notes.append(f"window_size converted ({adapt.window})")
    if emulating and "cache_seqlens" in mapped:
        body.append("if isinstance(cache_seqlens, int): cache_seqlens = _full_seqlens(q, cache_seqlens)")
        adapter.notes.append("kvcache served by the varlen kernel (seqused_k=cache_seqlens)")
    for name, target in mapped.items():
        cd, pd = canonical.parameters[name].default, params[target].default
        if name in ("window_size", "out") or pd is _EMPTY or cd is _EMPTY:
            continue
        if isinstance(cd, _SIMPLE) and isinstance(pd, _SIMPLE) and (type(cd) is not type(pd) or cd != pd):
            g[f"_pd_{name}"] = pd
            body.append(f"if not ({_nondefault_expr(name, cd, g)}): {name} = _pd_{name}")
    # call: verified positions first, keywords after
    by_target = {t: n for n, t in mapped.items()}
    for cname, value in adapt.constants.items():
        g[f"_c_{cname}"] = value
        by_target[cname] = f"_c_{cname}"
    positional, keywords, in_prefix = [], [], True
    for p in params.values():
        if p.name not in by_target:
            in_prefix = False
            continue
        if in_prefix and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            positional.append(by_target[p.name])
        elif p.kind is p.POSITIONAL_ONLY:
            adapter.reasons.append(f"{source}'s positional-only parameter {p.name!r} cannot be reached")
            return adapter
        else:
            in_prefix = False
            keywords.append(f"{p.name}={by_target[p.name]}")
    for name, target in mapped.items():
        if target not in params:  # through **kwargs (adapt.kwargs)
            keywords.append(f"{target}={name}")
    body.append(f"r = _fn({', '.join(positional + keywords)})")
    if facade in ("flash_attn_varlen_func", "flash_attn_with_kvcache"):
        lse_flag = "return_softmax_lse"
        if adapt.returns == "always-tuple":
            body.append(f"if not {lse_flag}: r = r[0]")
        elif adapt.returns == "auto":
            body.append(f"if not {lse_flag}:\n        if r.__class__ is tuple: r = r[0]")
            body.append("elif r.__class__ is not tuple: _adapter.no_lse(r)")
        if out_emulated:
            adapter.notes.append("out emulated (result copied into out)")
            body.append(
                f"if out is not None:\n        if {lse_flag}:\n            out.copy_(r[0])\n"
                "            return (out, *r[1:])\n        out.copy_(r)\n        return out"
            )
    body.append("return r")
    if renamed:
        adapter.notes.append("renamed " + ", ".join(renamed))
    if ignored_hints:
        adapter.notes.append("ignores hints " + ", ".join(ignored_hints))
    if adapter.unsupported:
        adapter.notes.append("cannot honour " + ", ".join(adapter.unsupported) + " (such calls go elsewhere)")
    code = f"def adapter({args}):\n" + "".join(f"    {line}\n" for line in body)
    exec(compile(code, f"<accelbridge adapter {provider_id}:{entry.op}>", "exec"), g)
    adapter.fn = g["adapter"]
    adapter.fn.__accelbridge_source__ = code  # type: ignore[attr-defined]
    adapter.no_lse = _no_lse_raiser(provider_id, entry.op, mapped.get("return_softmax_lse"))  # type: ignore[attr-defined]
    return adapter


def _no_lse_raiser(provider_id: str, op: str, flag: str | None) -> Callable[[Any], None]:
    def no_lse(result: Any) -> None:
        raise RuntimeError(
            f"{op}: provider {provider_id!r} returned {type(result).__name__}, not (out, lse, ...), although "
            f"return_softmax_lse=True was passed (as {flag!r}); fix adapt.rename/returns in its catalog entry"
        )

    return no_lse
