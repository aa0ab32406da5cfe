"""Conformance checks: does a provider, called through the facade, compute attention right?

The cases and the inputs of each op come from its declaration (``accelbridge.ops``):
``run(case, provider)`` builds fresh random inputs, calls the provider's compiled call (the
facade's own steady-state path, with NaN-poisoned ``out``, at the ``full`` check level) and
compares with the op's float32 reference on the same inputs. A vendor runs these against its
own provider from pytest (``assert_conforms``) or from the CLI (``accelbridge selftest``).
Tolerances: ``TOLERANCES``.
"""

from __future__ import annotations

import contextlib
import math
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from accelbridge import ops, platforms
from accelbridge.attention.errors import ResolutionError
from accelbridge.errors import summary
from accelbridge.ops.cases import TOLERANCES, Case, Inputs, Tolerance
from accelbridge.ops.spec import out_dtype

__all__ = ["TOLERANCES", "Case", "Result", "Tolerance", "assert_conforms", "cases", "checked_ops", "run", "run_all"]


def checked_ops() -> tuple[str, ...]:
    """The ops whose declaration has conformance cases."""
    return tuple(op for op, spec in ops.OPS.items() if spec.cases is not None)


CHECKED_OPS = checked_ops()


@dataclass
class Result:
    case: Case
    provider: str
    status: str  # pass | FAIL | skip | error
    max_abs: float | None = None
    rel: float | None = None
    detail: str = ""
    seed: int | None = None
    checks: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in ("pass", "skip")

    def to_dict(self) -> dict[str, Any]:
        return {
            "op": self.case.op,
            "case": self.case.name,
            "params": self.case.describe(),
            "provider": self.provider,
            "status": self.status,
            "max_abs_err": self.max_abs,
            "rel_err": self.rel,
            "atol": self.case.tolerance.atol,
            "rtol": self.case.tolerance.rtol,
            "seed": self.seed,
            "detail": self.detail,
        }


def cases(op: str | None = None, full: bool = False) -> list[Case]:
    """The conformance cases of ``op`` (every checked op if None); ``full`` adds the cross product."""
    checked = checked_ops()
    result: list[Case] = []
    for o in checked if op is None else (op,):
        if o not in checked:
            raise ResolutionError(f"no conformance cases for op {o!r}; checked ops: {', '.join(checked)}")
        result += ops.get(o).cases(full)  # type: ignore[misc]
    return result


def device() -> torch.device:
    """Where the current platform computes: its torch device, or the CPU when simulated."""
    p = platforms.current()
    return torch.device("cpu" if p.simulated else p.device_type)


# -- running ---------------------------------------------------------------------------------------
def _to_f32(kw: dict[str, Any]) -> dict[str, Any]:
    """Copies for the reference (never views: it appends into its own copy of the cache): fp16/bf16 as float32.

    FP8 tensors stay FP8: the reference dequantises them itself (descales, packed KV-cache layouts).
    """
    low = (torch.float16, torch.bfloat16)
    return {k: (v.to(torch.float32 if v.dtype in low else v.dtype, copy=True) if isinstance(v, torch.Tensor) else v)
            for k, v in kw.items()}  # fmt: skip


def _compare(actual: torch.Tensor, expected: torch.Tensor, tol: Tolerance) -> tuple[float, float, int]:
    a, e = actual.float(), expected.float()
    err = (a - e).abs()
    err = torch.where(torch.isnan(err), torch.full_like(err, math.inf), err)
    bad = int((err > tol.atol + tol.rtol * e.abs()).sum())
    max_abs = float(err.max()) if err.numel() else 0.0
    norm = float(e.norm())
    rel = float((a - e).norm()) / norm if norm else max_abs
    return max_abs, rel, bad


def cos_diff(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """FlashMLA's whole-tensor metric: 1 - 2<a, e> / (|a|^2 + |e|^2), in float64 (0 for two zero tensors)."""
    a, e = actual.double(), expected.double()
    denominator = float((a * a + e * e).sum())
    return 0.0 if denominator == 0 else 1 - 2 * float((a * e).sum()) / denominator


def _plan(spec: ops.OpSpec, provider: str, kw: dict[str, Any]) -> None:
    """Plan the call with the same provider's planning op, as an engine would."""
    from accelbridge.attention import introspect

    rel = spec.plan
    if rel is None or rel.producer_args is None:
        return
    names = rel.result_params or (rel.param,)
    producer = introspect.provider(rel.producer, provider)
    if producer is None or not producer.viable:  # a provider that plans nothing: the call passes no plan
        kw.update(dict.fromkeys(names))
        return
    pspec = ops.get(rel.producer)
    args = rel.producer_args(spec.with_defaults(kw))
    result = producer(*(args.get(n, p.default) for n, p in pspec.params.items()))
    kw.update(zip(names, result) if len(names) > 1 else {names[0]: result})


@contextlib.contextmanager
def full_checks() -> Iterator[None]:
    """Value checks on for the block (conformance wants every bad argument named)."""
    from accelbridge.attention import checks

    saved = checks.level()
    checks.set_level("full")
    try:
        yield
    finally:
        checks.set_level(saved)


def run(case: Case, provider: str, seed: int | None = None) -> Result:
    """Run one case on one provider of the current platform; never raises for a wrong result."""
    from accelbridge.attention import introspect

    seed = new_seed() if seed is None else seed
    result = Result(case, provider, "skip", seed=seed)
    call = introspect.provider(case.op, provider)
    if call is None:
        result.detail = f"{provider} is not a candidate for {case.op} on this platform"
        return result
    if not call.viable:
        result.detail = "; ".join(call.reasons) or "not viable"
        return result
    spec = ops.get(case.op)
    inp = Inputs(case, seed, device())
    kw = spec.inputs(inp.case, inp)  # type: ignore[misc]
    _plan(spec, provider, kw)
    ref_kw = _to_f32({k: v for k, v in kw.items() if spec.params[k].role not in ("out", "plan", "hint")})
    expected = _reference(spec, ref_kw)
    first = kw[spec.role_names("data")[0]]
    if case.with_out and "out" in spec.params:  # NaN-poisoned: every element must be written
        shape = _first(expected).shape
        kw["out"] = torch.full(shape, float("nan"), dtype=out_dtype(first.dtype), device=inp.dev)
    values = dict(spec.with_defaults(kw))
    reasons = call.call_reasons(values)
    if reasons:
        result.detail = "; ".join(reasons)
        return result
    try:
        with full_checks():
            got = call(*(values[n] for n in spec.names))
    except Exception as e:  # a kernel error is a conformance failure of this case, reported
        result.status, result.detail = "error", summary(e)
        return result
    return _judge(result, case, kw, got, expected, ref_kw)


def _first(result: Any) -> torch.Tensor:
    return result[0] if isinstance(result, tuple) else result


def _reference(spec: ops.OpSpec, kw: dict[str, Any]) -> Any:
    import inspect as _inspect

    params = _inspect.signature(spec.reference).parameters  # type: ignore[arg-type]
    kw = {k: v for k, v in kw.items() if k in params}
    if "return_softmax_lse" in params:
        kw["return_softmax_lse"] = True
    return spec.reference(**kw)  # type: ignore[misc]


def _judge(result: Result, case: Case, kw: dict[str, Any], got: Any, expected: Any, ref_kw: dict[str, Any]) -> Result:
    spec = ops.get(case.op)
    names = spec.results
    exp = dict(zip(names, expected)) if isinstance(expected, tuple) else {"out": expected}
    in_dtype = kw[spec.role_names("data")[0]].dtype
    problems: list[str] = []
    wants_tuple = isinstance(expected, tuple) and (case.return_lse or "return_softmax_lse" not in spec.params)
    if wants_tuple:
        if not isinstance(got, tuple) or len(got) < len(names):
            problems.append(f"returned {type(got).__name__}, expected a tuple ({', '.join(names)}, ...)")
            actual = {"out": got if isinstance(got, torch.Tensor) else None}
        else:
            actual = dict(zip(names, got))
    else:
        actual = {"out": got}
        if not isinstance(got, torch.Tensor):
            problems.append(f"returned {type(got).__name__}, expected the out tensor")
            actual["out"] = None
    out, exp_out = actual.get("out"), exp["out"]
    if "out" in kw and out is not None and out is not kw["out"]:
        problems.append("did not return the `out` tensor it was given")
    if out is not None and tuple(out.shape) != tuple(exp_out.shape):
        problems.append(f"out shape {tuple(out.shape)}, expected {tuple(exp_out.shape)}")
        out = None
    if out is not None:
        if out.dtype != out_dtype(in_dtype):
            problems.append(f"out dtype {out.dtype}, expected {out_dtype(in_dtype)}")
        nan = int(torch.isnan(out).sum())
        if nan:
            problems.append(f"{nan} elements of out not written (NaN)")
        tol = case.tolerance
        result.max_abs, result.rel, bad = _compare(out, exp_out, tol)
        if bad:
            problems.append(f"{bad} of {out.numel()} elements outside atol={tol.atol} rtol={tol.rtol}")
        if tol.cos_diff is not None and not nan and abs(diff := cos_diff(out, exp_out)) > tol.cos_diff:
            problems.append(f"cosine difference {diff:.2e} > {tol.cos_diff:.0e} (FlashMLA's metric)")
    for name in names[1:]:  # lse, max_logits: finite values within lse_atol, the same infinities
        if actual.get(name) is not None and name in exp:
            problems += _check_lse(actual[name], exp[name], case, name)
    if case.new_tokens and "k_cache" in ref_kw and "v_cache" in ref_kw:
        for name in ("k_cache", "v_cache"):
            got_cache, tol = kw[name].float(), case.tolerance
            want_cache = ref_kw[name].to(kw[name].dtype).float() if case.rotary else ref_kw[name]
            atol, rtol = (tol.atol, tol.rtol) if case.rotary else (0.0, 0.0)  # unused slots may hold NaN: equal_nan
            same = torch.allclose(got_cache, want_cache, atol=atol, rtol=rtol, equal_nan=True)
            if not same:
                problems.append(f"{name} not appended in place as the reference does")
    result.status = "FAIL" if problems else "pass"
    result.detail = "; ".join(problems)
    return result


def _check_lse(lse: torch.Tensor, expected: torch.Tensor, case: Case, name: str = "lse") -> list[str]:
    if tuple(lse.shape) != tuple(expected.shape):
        return [f"{name} shape {tuple(lse.shape)}, expected {tuple(expected.shape)}"]
    lse = lse.float()
    finite = torch.isfinite(expected)
    if not torch.equal(torch.isfinite(lse), finite):
        return [f"{name} not finite where the reference is, or the reverse"]
    if not torch.equal(lse[~finite], expected[~finite]):
        return [f"{name} is {lse[~finite][:1].tolist()} where the reference has {expected[~finite][:1].tolist()} "
                "(a query with no key)"]  # fmt: skip
    tol = case.tolerance
    err = (lse - expected).abs()[finite]
    bad = err > tol.lse_atol + tol.lse_rtol * expected[finite].abs()
    if bool(bad.any()):
        return [
            f"{name}: {int(bad.sum())} values off by more than {tol.lse_atol} + {tol.lse_rtol:.1e} * |{name}| "
            f"(max abs err {float(err.max()):.2e})"
        ]
    return []


# -- selection and pytest use ----------------------------------------------------------------------
def case_seed(base: int, case: Case, provider: str) -> int:
    """A per-case seed derived from the run's seed: one case reruns alone with the same inputs."""
    return (base + zlib.crc32(f"{case}/{provider}".encode())) & 0x7FFFFFFF


def new_seed() -> int:
    return int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF


def run_all(op: str | None = None, provider: str | None = None, full: bool = False,
            seed: int | None = None) -> Iterator[Result]:  # fmt: skip
    """Every case of every (or the given) op on every (or the given) provider, as they complete.

    A provider that is not viable here yields one ``skip`` row (case ``*``) with its reasons.
    """
    base = new_seed() if seed is None else seed
    from accelbridge.attention import introspect

    for o in checked_ops() if op is None else (op,):
        pids = introspect.candidates(o)
        if provider is not None:
            if provider not in pids:
                continue
            pids = [provider]
        for pid in pids:
            call = introspect.provider(o, pid)
            if not call.viable:
                detail = "; ".join(call.reasons) or "not viable"
                yield Result(Case(o, "*"), pid, "skip", detail=detail)
                continue
            for case in cases(o, full=full):
                yield run(case, pid, seed=case_seed(base, case, pid))


def assert_conforms(case: Case, provider: str, seed: int | None = None) -> Result:
    """For a vendor's pytest: fail with the details, skip (with the reason) where the provider cannot serve."""
    result = run(case, provider, seed=seed)
    if result.status == "skip":
        import pytest

        pytest.skip(f"{case}: {provider}: {result.detail}")
    assert result.status == "pass", (
        f"{case} on {provider} [{case.describe()}] seed={result.seed}: {result.status}: {result.detail}"
        f" (max abs err {result.max_abs}, rel {result.rel})"
    )
    return result
