"""Conformance checks: does a provider, called through the facade, compute attention right?

Each ``Case`` describes one problem (op, dtype, heads, head dim, sequence lengths, masks,
paging). ``run(case, provider)`` builds fresh random inputs, calls the provider's adapter (the
facade's own steady-state path, with NaN-poisoned ``out``) and compares with the float32
reference on the same inputs. A vendor runs these against its own provider from pytest
(``assert_conforms``) or from the CLI (``accelbridge selftest``). Tolerances: ``TOLERANCES``.
"""

from __future__ import annotations

import itertools
import math
import os
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from accelbridge import platforms
from accelbridge.attention import reference
from accelbridge.errors import summary
from accelbridge.platforms.dtypes import DTYPE_ATTRS

CHECKED_OPS = ("fa3.varlen", "fa3.kvcache", "fa4.varlen", "fa4.kvcache", "flashmla.kvcache")


@dataclass(frozen=True)
class Tolerance:
    """|actual - expected| <= atol + rtol * |expected| for every element of the output."""

    atol: float
    rtol: float
    lse_atol: float = 1e-2


# Kernels round P to the input dtype before the PV product and round the output once: a few
# ulps of the output dtype (bf16 ulp at 1.0 is 2**-7), never more, for inputs ~ N(0, 1).
TOLERANCES: dict[str, Tolerance] = {
    "bf16": Tolerance(atol=2e-2, rtol=2e-2),
    "fp16": Tolerance(atol=4e-3, rtol=4e-3),
    "fp32": Tolerance(atol=1e-4, rtol=1e-4, lse_atol=1e-4),
}


@dataclass(frozen=True)
class Case:
    """One conformance problem. Lengths are per sequence; ``lens_k`` are the cached lengths for kvcache."""

    op: str
    name: str
    lens_q: tuple[int, ...] = (0, 1, 33, 128)
    lens_k: tuple[int, ...] | None = None  # None: same as lens_q
    dtype: str = "bf16"
    hq: int = 8
    hk: int = 2
    d: int = 128
    dv: int | None = None
    causal: bool = True
    window: tuple[int, int] = (-1, -1)
    softcap: float = 0.0
    sinks: bool = False
    page_size: int = 0  # 0: contiguous k/v (or cache); else a shuffled page table
    new_tokens: int = 0  # kvcache: k/v appended into the cache in place before attending
    with_out: bool = True
    return_lse: bool = False

    def __str__(self) -> str:
        return f"{self.op}:{self.name}"

    @property
    def tolerance(self) -> Tolerance:
        return TOLERANCES[self.dtype]

    def describe(self) -> str:
        """The parameters that differ from a plain case, for tables and failure messages."""
        skip = {"op", "name"}
        base = Case(self.op, self.name)
        parts = [f"{k}={v}" for k, v in asdict(self).items() if k not in skip and getattr(base, k) != v]
        return ", ".join(parts)


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


# -- the case lists -----------------------------------------------------------------------------
def _varlen_cases(op: str) -> list[Case]:
    c = Case(op, "gqa4-causal")
    return [
        c,
        replace(c, name="noncausal", causal=False),
        replace(c, name="fp16", dtype="fp16"),
        replace(c, name="d64", d=64),
        replace(c, name="mha", hq=4, hk=4),
        replace(c, name="mqa", hq=8, hk=1),
        replace(c, name="gqa8", hq=16, hk=2),
        replace(c, name="window-left", window=(32, 0)),
        replace(c, name="window-both", causal=False, window=(16, 8)),
        replace(c, name="softcap", softcap=1.5),
        replace(c, name="sinks", sinks=True),
        replace(c, name="short", lens_q=(1, 1, 2, 3)),
        replace(c, name="empty-seqs", lens_q=(0, 7, 0, 20)),
        replace(c, name="chunked-prefill", lens_q=(5, 16, 1), lens_k=(40, 100, 64)),
        replace(c, name="lse", return_lse=True),
        replace(c, name="no-out", with_out=False),
        replace(c, name="paged", lens_q=(3, 40, 1), lens_k=(17, 100, 64), page_size=16),
    ]


def _kvcache_cases(op: str) -> list[Case]:
    c = Case(op, "paged-decode", lens_q=(1, 1, 1, 1), lens_k=(1, 37, 200, 64), page_size=16)
    return [
        c,
        replace(c, name="page64", page_size=64),
        replace(c, name="contiguous", page_size=0),
        replace(c, name="fp16", dtype="fp16"),
        replace(c, name="d64", d=64),
        replace(c, name="mha", hq=4, hk=4),
        replace(c, name="mqa", hq=8, hk=1),
        replace(c, name="multi-query", lens_q=(4, 4, 4, 4)),
        replace(c, name="window", window=(32, 0)),
        replace(c, name="softcap", softcap=1.5),
        replace(c, name="sinks", sinks=True),
        replace(c, name="append", new_tokens=1),
        replace(c, name="lse", return_lse=True),
        replace(c, name="no-out", with_out=False),
    ]


def _mla_cases() -> list[Case]:
    c = Case("flashmla.kvcache", "decode", lens_q=(1, 1, 1), lens_k=(1, 100, 300), hq=16, hk=1, d=576, dv=512,
             page_size=64, causal=False, with_out=False)  # fmt: skip
    return [
        c,
        replace(c, name="heads128", hq=128),
        replace(c, name="mtp-causal", lens_q=(2, 2, 2), causal=True),
        replace(c, name="long", lens_q=(1, 1), lens_k=(1000, 4097)),
    ]


def _full_cases(op: str) -> list[Case]:
    """The cross product: dtype x GQA ratio x head dim x mask, on mixed lengths."""
    out = []
    masks = {"none": {"causal": False}, "causal": {}, "window": {"window": (32, 0)},
             "softcap": {"softcap": 1.5}, "sinks": {"sinks": True}}  # fmt: skip
    kv = op.endswith("kvcache")
    base = _kvcache_cases(op)[0] if kv else Case(op, "")
    for dtype in ("bf16", "fp16"):
        for hq, hk in ((4, 4), (8, 2), (8, 1)):
            for d in (64, 128, 256):
                for mask, kw in masks.items():
                    name = f"{dtype}-h{hq}k{hk}-d{d}-{mask}"
                    out.append(replace(base, name=name, dtype=dtype, hq=hq, hk=hk, d=d, **kw))
    return out


def cases(op: str | None = None, full: bool = False) -> list[Case]:
    """The conformance cases of ``op`` (every checked op if None); ``full`` adds the cross product."""
    ops = CHECKED_OPS if op is None else (op,)
    result: list[Case] = []
    for o in ops:
        if o not in CHECKED_OPS:
            raise ValueError(f"no conformance cases for op {o!r}; checked ops: {', '.join(CHECKED_OPS)}")
        if o == "flashmla.kvcache":
            result += _mla_cases()
            continue
        result += _kvcache_cases(o) if o.endswith("kvcache") else _varlen_cases(o)
        if full:
            result += _full_cases(o)
    return result


# -- inputs ---------------------------------------------------------------------------------------
def device() -> torch.device:
    """Where the current platform computes: its torch device, or the CPU when simulated."""
    p = platforms.current()
    return torch.device("cpu" if p.simulated else p.device_type)


def _cu(lens: tuple[int, ...], dev: torch.device) -> torch.Tensor:
    return torch.tensor([0, *itertools.accumulate(lens)], dtype=torch.int32, device=dev)


class _Inputs:
    """Random inputs of one case, on the device, plus the float32 reference's view of them."""

    def __init__(self, case: Case, seed: int, dev: torch.device):
        self.case, self.dev = case, dev
        self.gen = torch.Generator().manual_seed(seed)
        self.dtype = getattr(torch, DTYPE_ATTRS[case.dtype])

    def randn(self, *shape: int, dtype: torch.dtype | None = None) -> torch.Tensor:
        return torch.randn(*shape, generator=self.gen).to(dtype or self.dtype).to(self.dev)

    def paged(self, lens: tuple[int, ...], heads: int, dim: int, spare: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """A shuffled page pool holding ``lens`` rows per sequence, and its page table."""
        ps = self.case.page_size
        per_seq = max(1, max(math.ceil((n + spare) / ps) for n in lens))
        blocks = per_seq * len(lens) + 1
        pool = self.randn(blocks, ps, heads, dim)
        table = torch.randperm(blocks, generator=self.gen)[: per_seq * len(lens)].reshape(len(lens), per_seq)
        return pool, table.to(torch.int32).to(self.dev)


def _sinks(inp: _Inputs) -> torch.Tensor | None:
    """Per-head sink logits in bf16, as engines keep them (sgl-kernel 0.4.5 takes no other dtype)."""
    return inp.randn(inp.case.hq, dtype=torch.bfloat16) if inp.case.sinks else None


def _varlen_args(inp: _Inputs) -> tuple[dict[str, Any], dict[str, Any]]:
    c, dev = inp.case, inp.dev
    lens_k = c.lens_k or c.lens_q
    dv = c.dv or c.d
    q = inp.randn(sum(c.lens_q), c.hq, c.d)
    kw: dict[str, Any] = {"cu_seqlens_q": _cu(c.lens_q, dev), "cu_seqlens_k": _cu(lens_k, dev),
                          "max_seqlen_q": max(c.lens_q), "max_seqlen_k": max(lens_k)}  # fmt: skip
    if c.page_size:  # FA's paged convention: no cu_seqlens_k, the key lengths in seqused_k
        k, kw["page_table"] = inp.paged(lens_k, c.hk, c.d)
        v = inp.randn(*k.shape[:3], dv)
        kw["cu_seqlens_k"], kw["seqused_k"] = None, torch.tensor(lens_k, dtype=torch.int32, device=dev)
    else:
        k, v = inp.randn(sum(lens_k), c.hk, c.d), inp.randn(sum(lens_k), c.hk, dv)
    kw.update(q=q, k=k, v=v, causal=c.causal, window_size=c.window, softcap=c.softcap, sinks=_sinks(inp))
    return kw, {"q": q, "k": k, "v": v}


def _kvcache_args(inp: _Inputs) -> tuple[dict[str, Any], dict[str, Any]]:
    c, dev = inp.case, inp.dev
    b, sq = len(c.lens_q), c.lens_q[0]
    lens_k = c.lens_k or c.lens_q
    dv = c.dv or c.d
    q = inp.randn(b, sq, c.hq, c.d)
    kw: dict[str, Any] = {"cache_seqlens": torch.tensor(lens_k, dtype=torch.int32, device=dev)}
    if c.page_size:
        k_cache, kw["page_table"] = inp.paged(lens_k, c.hk, c.d, spare=c.new_tokens)
        v_cache = inp.randn(*k_cache.shape[:3], dv)
    else:
        rows = max(lens_k) + c.new_tokens
        k_cache, v_cache = inp.randn(b, rows, c.hk, c.d), inp.randn(b, rows, c.hk, dv)
    if c.new_tokens:
        kw["k"], kw["v"] = inp.randn(b, c.new_tokens, c.hk, c.d), inp.randn(b, c.new_tokens, c.hk, dv)
    kw.update(q=q, k_cache=k_cache, v_cache=v_cache, causal=c.causal, window_size=c.window, softcap=c.softcap,
              sinks=_sinks(inp))  # fmt: skip
    return kw, {"q": q, "k_cache": k_cache, "v_cache": v_cache}


def _mla_args(inp: _Inputs) -> tuple[dict[str, Any], dict[str, Any]]:
    c, dev = inp.case, inp.dev
    q = inp.randn(len(c.lens_q), c.lens_q[0], c.hq, c.d)
    k_cache, table = inp.paged(c.lens_k or c.lens_q, c.hk, c.d)
    kw = {"q": q, "k_cache": k_cache, "block_table": table, "head_dim_v": c.dv,
          "cache_seqlens": torch.tensor(c.lens_k, dtype=torch.int32, device=dev), "causal": c.causal}  # fmt: skip
    return kw, {"q": q, "k_cache": k_cache}


# -- running ---------------------------------------------------------------------------------------
def _to_f32(kw: dict[str, Any]) -> dict[str, Any]:
    """Float32 copies (never views: the reference appends into its own copy of the cache)."""
    return {k: (v.to(torch.float32, copy=True) if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
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


def _mla_call(chains: Any, provider: str, kw: dict[str, Any]) -> Any:
    meta = chains("flashmla.metadata")
    cand = next((meta.candidate(i) for i, p in enumerate(meta.ids) if p == provider), None)
    tile, splits = None, None
    if cand is not None and cand.viable:
        sq = kw["q"].shape[1]
        tile, splits = cand.adapter.fn(kw["cache_seqlens"], sq * kw["q"].shape[2] // kw["k_cache"].shape[2],
                                       kw["k_cache"].shape[2], kw["q"].shape[2], False, None)  # fmt: skip
    return {"tile_scheduler_metadata": tile, "num_splits": splits}


def find_candidate(op: str, provider: str) -> Any:
    """The facade's candidate for ``provider`` on ``op`` here (loaded), or None if not listed."""
    from accelbridge.attention import facade

    ch = facade.chain(op)
    for i, pid in enumerate(ch.ids):
        if pid == provider:
            return ch.candidate(i)
    return None


def run(case: Case, provider: str, seed: int | None = None) -> Result:
    """Run one case on one provider of the current platform; never raises for a wrong result."""
    from accelbridge.attention import facade

    seed = new_seed() if seed is None else seed
    result = Result(case, provider, "skip", seed=seed)
    cand = find_candidate(case.op, provider)
    if cand is None:
        result.detail = f"{provider} is not a candidate for {case.op} on this platform"
        return result
    if not cand.viable:
        result.detail = "; ".join(cand.reasons) or "not viable"
        return result
    inp = _Inputs(case, seed, device())
    builder = {"flashmla.kvcache": _mla_args}.get(case.op) or (_kvcache_args if "kvcache" in case.op else _varlen_args)
    kw, main = builder(inp)
    if case.op == "flashmla.kvcache":
        kw.update(_mla_call(facade.chain, provider, kw))
    else:
        kw["return_softmax_lse"] = case.return_lse
        if case.with_out:
            shape = (*main["q"].shape[:-1], case.dv or case.d)
            kw["out"] = torch.full(shape, float("nan"), dtype=inp.dtype, device=inp.dev)
    ch = facade.chain(case.op)
    bound = ch.canonical.bind_partial(**kw)
    bound.apply_defaults()
    reasons = cand.adapter.call_reasons(dict(bound.arguments))
    if reasons:
        result.detail = "; ".join(reasons)
        return result
    expected_kw = _to_f32({k: v for k, v in kw.items() if k not in ("out", "tile_scheduler_metadata", "num_splits")})
    expected = _reference(case, expected_kw)
    try:
        got = cand.adapter.fn(*bound.arguments.values())
    except Exception as e:  # a kernel error is a conformance failure of this case, reported
        result.status, result.detail = "error", summary(e)
        return result
    return _judge(result, case, kw, got, expected, expected_kw)


def _reference(case: Case, kw: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    if case.op == "flashmla.kvcache":
        return reference.flash_mla_with_kvcache(**kw)
    fn = reference.flash_attn_with_kvcache if "kvcache" in case.op else reference.flash_attn_varlen_func
    kw = {k: v for k, v in kw.items() if k in _REFERENCE_PARAMS[fn.__name__]}
    kw["return_softmax_lse"] = True
    return fn(**kw)


_REFERENCE_PARAMS = {
    fn.__name__: set(fn.__code__.co_varnames[: fn.__code__.co_argcount])
    for fn in (reference.flash_attn_varlen_func, reference.flash_attn_with_kvcache)
}


def _judge(result: Result, case: Case, kw: dict[str, Any], got: Any, expected: Any, ref_kw: dict[str, Any]) -> Result:
    exp_out, exp_lse = expected
    problems: list[str] = []
    wants_tuple = case.return_lse or case.op == "flashmla.kvcache"
    if wants_tuple:
        if not isinstance(got, tuple) or len(got) < 2:
            problems.append(f"returned {type(got).__name__}, expected a tuple (out, lse, ...)")
            out, lse = (got if isinstance(got, torch.Tensor) else None), None
        else:
            out, lse = got[0], got[1]
    else:
        out, lse = got, None
        if not isinstance(got, torch.Tensor):
            problems.append(f"returned {type(got).__name__}, expected the out tensor")
            out = None
    if "out" in kw and out is not None and out is not kw["out"]:
        problems.append("did not return the `out` tensor it was given")
    if out is not None and tuple(out.shape) != tuple(exp_out.shape):
        problems.append(f"out shape {tuple(out.shape)}, expected {tuple(exp_out.shape)}")
        out = None
    if out is not None:
        if out.dtype != kw["q"].dtype:
            problems.append(f"out dtype {out.dtype}, expected {kw['q'].dtype}")
        nan = int(torch.isnan(out).sum())
        if nan:
            problems.append(f"{nan} elements of out not written (NaN)")
        result.max_abs, result.rel, bad = _compare(out, exp_out, case.tolerance)
        if bad:
            problems.append(f"{bad} of {out.numel()} elements outside atol={case.tolerance.atol} "
                            f"rtol={case.tolerance.rtol}")  # fmt: skip
    if lse is not None:
        problems += _check_lse(lse, exp_lse, case)
    if case.new_tokens:
        for name in ("k_cache", "v_cache"):
            if not torch.equal(kw[name].float(), ref_kw[name]):
                problems.append(f"{name} not appended in place as the reference does")
    result.status = "FAIL" if problems else "pass"
    result.detail = "; ".join(problems)
    return result


def _check_lse(lse: torch.Tensor, expected: torch.Tensor, case: Case) -> list[str]:
    if tuple(lse.shape) != tuple(expected.shape):
        return [f"lse shape {tuple(lse.shape)}, expected {tuple(expected.shape)}"]
    finite = torch.isfinite(expected)
    if not torch.equal(torch.isfinite(lse.float()) | ~finite, torch.ones_like(finite)):
        return ["lse not finite where the reference is"]
    err = (lse.float() - expected).abs()[finite]
    if err.numel() and float(err.max()) > case.tolerance.lse_atol:
        return [f"lse max abs err {float(err.max()):.2e} > {case.tolerance.lse_atol}"]
    return []


# -- selection and pytest use ----------------------------------------------------------------------
def providers_for(op: str) -> list[str]:
    """The candidate provider ids of ``op`` on the current platform, in resolution order."""
    from accelbridge.attention import facade

    return list(facade.chain(op).ids)


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
    for o in CHECKED_OPS if op is None else (op,):
        pids = providers_for(o)
        if provider is not None:
            if provider not in pids:
                continue
            pids = [provider]
        for pid in pids:
            cand = find_candidate(o, pid)
            if not cand.viable:
                detail = "; ".join(cand.reasons) or "not viable"
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
