"""The engine's unified attention interface, resolved against the current platform.

Each facade function is generated from its op declaration (``accelbridge.ops``): the same
parameters, defaults and docstring as sglang-kernel 0.4.10's (0.4.5's and ``kv_format``), so
``from accelbridge.attention import flash_attn_varlen_func`` is a drop-in. Its body is a dict lookup
of the resolved call (keyed by the selector, e.g. ``ver``) and the call itself.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from typing import Any

import torch

from accelbridge import codegen, ops, platforms
from accelbridge.attention import checks, compiled
from accelbridge.attention.errors import ResolutionError
from accelbridge.attention.resolver import Chain, Resolution, describe, feature_values
from accelbridge.kernels_catalog.schema import did_you_mean
from accelbridge.platforms import devices

_chains: dict[tuple[str, int], Chain] = {}  # (op, device index) -> chain
_tables: dict[str, dict[Any, Callable[..., Any]]] = {}  # facade name -> selector value -> call
_lock = threading.RLock()


def _forget_calls() -> None:
    with _lock:
        for table in _tables.values():
            table.clear()


def reset() -> None:
    """Forget every resolution (after changing env vars or catalogs); the next call resolves anew.

    The check level chosen with ``set_checks`` stays.
    """
    with _lock:
        _forget_calls()
        _chains.clear()


platforms.on_change(reset)
checks.on_change(_forget_calls)


def chain(op: str, device: int | None = None) -> Chain:
    """The (cached) candidate chain of ``op`` on ``device`` (default: this process's) of the current platform."""
    if op not in ops.OPS:
        raise ResolutionError(f"unknown op {op!r}{did_you_mean(op, ops.ids())}; valid: {', '.join(ops.ids())}")
    platform = platforms.current()
    index = platform.device_index(device)
    with _lock:
        c = _chains.get((op, index))
        if c is None:
            c = _chains[(op, index)] = Chain(op, platform, index)
        return c


def resolved_ops() -> list[str]:
    """The ops this process has resolved so far (on any device), in declaration order."""
    with _lock:
        done = {op for op, _ in _chains}
    return [op for op in ops.ids() if op in done]


def resolve(op: str, **features: Any) -> Resolution:
    """Which provider serves ``op`` here for a call with these features, and every candidate's reasons.

    Features: ``dtype`` (torch dtype or name like "bf16"), ``head_dim``, or canonical argument
    names meaning "the call passes this" (``sinks=True``, ``qv=True``).
    """
    return describe(chain(op), feature_values(op, features))


def explain(op: str, **features: Any) -> str:
    """A readable account of ``resolve(op)``: each candidate, viable or with its reasons."""
    r = resolve(op, **features)
    p = platforms.current()
    sim = f" (simulated {getattr(p, 'spec', '')})" if p.simulated else ""
    consumers = ops.planned_by(op)
    none = (f"no provider: fine, it returns None and {', '.join(consumers)} plans each call itself" if consumers
            else "NO provider")  # fmt: skip
    lines = [f"{r.op} on {r.platform} {r.arch}{sim}: " + (f"selected {r.selected}" if r.selected else none)]
    for n, row in enumerate(r.candidates, 1):
        status = "viable" if row["viable"] else "not viable"
        lines.append(f"  {n}. {row['provider']:<14} {status}  {row.get('source', '')}".rstrip())
        for reason in row["reasons"]:
            lines.append(f"       - {reason}")
        for note in row.get("adapts", []):
            lines.append(f"       adapts: {note}")
    lines += [f"  note: {n}" for n in r.notes]
    if p.device_count() > 1 or devices.launch():  # a rank, or one of several devices: say which
        lines.append(f"  device: {devices.describe_rank(p, p.device_index())}")
    return "\n".join(lines)


def generated_source(op: str) -> str:
    """The code a call of ``op`` runs here, as generated (``accelbridge explain --source OP``).

    The facade function, the call of each viable provider at the current check level (the first
    is the steady state; a refused call moves down the list) and the call torch.compile traces.
    """
    fn, c = function(op), chain(op)
    parts = [(f"facade function {fn.__name__}", fn)]
    parts += [(f"{cand.provider_id} at check level {checks.level()}", c.call(i))
              for i, cand in enumerate(c.all()) if cand.viable]  # fmt: skip
    parts.append(("under torch.compile", compiled.compiled(op).traced))
    blocks = []
    for title, f in parts:
        text = codegen.source_of(f) if f is not None else None
        where = f.__code__.co_filename if text else "no generated code (plain Python)"
        blocks.append(f"# {title}: {where}\n{text or ''}")
    return "\n".join(blocks).rstrip("\n")


# -- generated functions -----------------------------------------------------------------------
def _ops_of(facade: str) -> dict[Any, str]:
    """selector value -> op id, for the ops a facade function serves."""
    return {(s.selector[1] if s.selector else None): s.id for s in ops.OPS.values() if s.facade == facade}


def _per_device(op: str) -> Callable[..., Any]:
    """On a node whose devices differ in arch: each call resolved for its tensors' device (one dict lookup more)."""
    platform, calls = platforms.current(), {}

    def call(*args: Any) -> Any:
        device = devices.tensor_device(platform, args)
        fn = calls.get(device)
        if fn is None:
            fn = calls[device] = chain(op, device).impl()
        return fn(*args)

    return call


def _resolver(facade: str, selector: str | None) -> Callable[..., Callable[..., Any]]:
    table = _tables.setdefault(facade, {})

    def resolve_call(value: Any, args: tuple[Any, ...] = ()) -> Callable[..., Any]:
        """The call for this selector value, resolved on the device of the first call's tensors."""
        by_value = _ops_of(facade)
        op = by_value.get(value) if value.__hash__ is not None and type(value) is not bool else None
        if op is None:
            valid = " or ".join(map(str, by_value))
            ops_named = ", ".join(f"{o.split('.')[0]}.*" for o in by_value.values())
            raise ResolutionError(f"{selector} must be {valid} (selects the {ops_named} ops), got {value!r}")
        platform = platforms.current()
        with _lock:
            fn = table.get(value)
            if fn is None:
                uniform = platform.uniform_devices()
                fn = chain(op, devices.tensor_device(platform, args)).impl() if uniform else _per_device(op)
                table[value] = fn
            return fn

    return resolve_call


def _misspelt(facade: str, names: list[str], unknown: dict[str, Any]) -> None:
    """Python's own TypeError, with the closest parameter: the catalogs and pytest markers suggest one too."""
    name = next(iter(unknown))
    raise TypeError(f"{facade}() got an unexpected keyword argument {name!r}{did_you_mean(name, names)}")


def build_function(spec: ops.OpSpec) -> Callable[..., Any]:
    """The facade function of ``spec`` (and of the ops sharing its signature function)."""
    sig = inspect.signature(spec.signature)
    names = list(sig.parameters)
    selector = spec.selector[0] if spec.selector else None
    call_args = ", ".join(n for n in names if n != selector)
    key = selector or "None"
    code = (
        f"def {spec.facade}({', '.join(names)}, **_unknown):\n"
        f"    if _unknown:\n        _misspelt(_unknown)\n"
        f"    if _compiling():\n        return _traced.get({key}, _invalid)({call_args})\n"
        f"    try:\n        fn = _table[{key}]\n"
        f"    except (KeyError, TypeError):\n        fn = _resolve({key}, ({call_args},))\n"
        f"    return fn({call_args})\n"
    )
    resolver = _resolver(spec.facade, selector)
    traced = {value: compiled.compiled(op, function).traced for value, op in _ops_of(spec.facade).items()}
    g = {"_table": _tables.setdefault(spec.facade, {}), "_resolve": resolver, "_traced": traced,
         "_misspelt": lambda unknown: _misspelt(spec.facade, names, unknown),
         "_compiling": torch.compiler.is_compiling,  # under torch.compile: the op's custom op (attention.compiled)
         "_invalid": lambda *a: resolver(a[names.index(selector)] if selector else None)}  # fmt: skip
    fn = codegen.define(f"<accelbridge facade {spec.facade}>", code, g)[spec.facade]
    fn.__defaults__ = spec.signature.__defaults__
    fn.__doc__ = spec.signature.__doc__
    fn.__signature__ = sig.replace(parameters=[p.replace(annotation=p.empty) for p in sig.parameters.values()])
    fn.__module__ = __name__
    return fn


_FUNCTIONS: dict[str, Callable[..., Any]] = {}


def function(op: str) -> Callable[..., Any]:
    """The facade function serving ``op`` (built on first request for ops declared later, e.g. a vendor's)."""
    if op not in ops.OPS:
        raise ResolutionError(f"unknown op {op!r}{did_you_mean(op, ops.ids())}; valid: {', '.join(ops.ids())}")
    spec = ops.get(op)
    with _lock:
        fn = _FUNCTIONS.get(spec.facade)
        if fn is None:
            fn = _FUNCTIONS[spec.facade] = build_function(spec)
        return fn


for _op in ops.ids():
    function(_op)
flash_attn_varlen_func = _FUNCTIONS["flash_attn_varlen_func"]
flash_attn_with_kvcache = _FUNCTIONS["flash_attn_with_kvcache"]
get_scheduler_metadata = _FUNCTIONS["get_scheduler_metadata"]
get_mla_metadata = _FUNCTIONS["get_mla_metadata"]
flash_mla_with_kvcache = _FUNCTIONS["flash_mla_with_kvcache"]
flash_mla_sparse_fwd = _FUNCTIONS["flash_mla_sparse_fwd"]
