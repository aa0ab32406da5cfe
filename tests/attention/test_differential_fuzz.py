"""Seeded differential fuzz: the torch provider, the reference and an independent float64 oracle agree.

Each seed draws one problem of an op from the whole space the kernels accept, with their own
test conventions mixed in (sentinel and -1 table entries, NaN in unused cache slots, empty
sequences and rows without keys, +inf/-inf sinks, out-of-range sparse indices, topk_length,
an extra cache with its own page size). The torch provider answers through the facade, the
reference on the same arguments, and ``oracle`` (float64, one row at a time, sharing no code
with either) decides. A failure names the seed and the case, so ``-k "<op> and <seed>"`` reruns it.
"""

import inspect
import math
import random
from collections.abc import Callable
from dataclasses import replace

import pytest
import torch

from accelbridge import attention, ops
from accelbridge.ops.cases import SENTINEL, Case, Inputs
from accelbridge.ops.flash_mla_cases import PREFILL_INVALID
from accelbridge.ops.spec import out_dtype

from . import oracle, upstream_grids

CASES_PER_OP = 300
BASE_SEED = 20261201


pytestmark = pytest.mark.usefixtures("one_thread")


def _lens(r: random.Random, n: int, top: int) -> tuple[int, ...]:
    return tuple(r.choice([0, 1, 2, r.randint(0, top), r.randint(0, top)]) for _ in range(n))


def _masks(r: random.Random) -> dict:
    hk = r.choice([1, 2, 4])
    sinks = r.random() < 0.3
    return {"hk": hk, "hq": hk * r.choice([1, 2, 4]), "dtype": r.choice(["bf16", "fp16"]),
            "d": r.choice([32, 64, 128]), "causal": r.random() < 0.5,
            "window": r.choice([(-1, -1), (-1, -1), (r.randint(0, 20), 0), (r.randint(0, 20), r.randint(0, 9)),
                                (-1, r.randint(0, 9))]),
            "softcap": r.choice([0.0, 0.0, 1.5]), "sinks": sinks, "sink_inf": sinks and r.random() < 0.5,
            "return_lse": True, "with_out": r.random() < 0.5}  # fmt: skip


def _retired(r: random.Random, paged: bool) -> dict:
    """What no sequence reads, as the kernels' tests fill it."""
    return {"sentinel": r.choice([None, -1, SENTINEL]) if paged else None, "nan_unused": r.random() < 0.5}


def varlen_case(r: random.Random) -> Case:
    n = r.randint(1, 4)
    lens_q = _lens(r, n, 24)
    lens_k = tuple(max(0, q + r.randint(-3, 30)) if r.random() < 0.8 else 0 for q in lens_q)
    page = r.choice([0, 0, 16, 64])
    extra = _retired(r, True) if page else {}
    return Case("fa3.varlen", "fuzz", lens_q=lens_q, lens_k=lens_k, page_size=page, **_masks(r), **extra)


def kvcache_case(r: random.Random) -> Case:
    b = r.randint(1, 4)
    packed = r.random() < 0.25
    sq = r.choice([1, 1, 2, 4, 0] if not packed else [1])
    lens_q = tuple(r.randint(0, 4) for _ in range(b)) if packed else (sq,) * b
    page = r.choice([0, 16, 64])
    new = r.choice([0, 0, 1, 2]) if (packed or sq) else 0
    case = Case("fa3.kvcache", "fuzz", lens_q=lens_q, lens_k=_lens(r, b, 90), page_size=page, new_tokens=new,
                packed_q=packed, **_masks(r), **(_retired(r, True) if page else {}))  # fmt: skip
    if not page and not new and r.random() < 0.3:
        case = replace(case, leftpad=True)
    elif not page and r.random() < 0.3:
        case = replace(case, batch_idx=True)
    elif page and not new and r.random() < 0.2:  # a page table without cache_seqlens: whole rows
        case = replace(case, lens_k=(page * r.randint(1, 3),) * b, no_seqlens=True)
    return case


def mla_dense_case(r: random.Random) -> Case:
    b, sq = r.randint(1, 4), r.choice([1, 1, 2, 3])
    dtype = r.choice(["bf16", "bf16", "fp16", "fp8_e4m3"])
    hk = r.choice([1, 1, 2, 3])  # FlashMLA's dense tests take h_kv 1, 2, 3, 8
    return Case("flashmla.kvcache", "fuzz", lens_q=(sq,) * b, lens_k=_lens(r, b, 200), hq=hk * r.choice([1, 3, 8]),
                hk=hk, d=576, dv=512, page_size=64, causal=sq > 1 and r.random() < 0.7, with_out=False,
                dtype=dtype, tol="" if dtype == "fp8_e4m3" else "flashmla", **_retired(r, True))  # fmt: skip


def mla_sparse_case(r: random.Random) -> Case:
    b, sq, layout = r.randint(1, 3), r.choice([1, 2]), r.choice(["V32", "V4", "V41", "V32_NO_ROPE"])
    sinks = r.random() < 0.5
    extra_layout = "V41_FP4" if layout == "V41" and r.random() < 0.5 else ""  # FlashMLA's V4.1 extra cache
    return Case("flashmla.kvcache", "fuzz", lens_q=(sq,) * b, lens_k=_lens(r, b, 150), hq=r.choice([1, 4, 16]),
                hk=1, d=576 if layout == "V32" else 512, dv=512, kv_format=layout, extra_kv_format=extra_layout,
                page_size=r.choice([64, 61, 53]), causal=False, with_out=False, tol="flashmla",
                topk=r.choice([64, 128]), topk_length=r.random() < 0.5, sinks=sinks,
                sink_inf=sinks and r.random() < 0.5, invalid=r.choice([(), (-1,), (-1, SENTINEL, -7)]),
                extra_topk=r.choice([0, 0, 64]), extra_page_size=r.choice([0, 2, 64]),
                nan_unused=r.random() < 0.5)  # fmt: skip


def mla_prefill_case(r: random.Random) -> Case:
    sinks = r.random() < 0.5
    return Case("flashmla.sparse_prefill", "fuzz", lens_q=(r.randint(1, 20),), lens_k=(r.randint(0, 140),),
                hq=r.choice([1, 4, 16]), hk=1, d=r.choice([576, 512]), dv=512, topk=r.choice([64, 128]),
                with_out=False, return_lse=True, tol="flashmla", topk_length=r.random() < 0.5, sinks=sinks,
                sink_inf=sinks and r.random() < 0.5,
                invalid=r.choice([(), PREFILL_INVALID]))  # fmt: skip


DRAWS = {
    "fa3.varlen": (varlen_case, attention.flash_attn_varlen_func, oracle.varlen),
    "fa3.kvcache": (kvcache_case, attention.flash_attn_with_kvcache, oracle.kvcache),
    "flashmla.dense": (mla_dense_case, attention.flash_mla_with_kvcache, oracle.mla_decode),
    "flashmla.sparse": (mla_sparse_case, attention.flash_mla_with_kvcache, oracle.mla_decode),
    "flashmla.sparse_prefill": (mla_prefill_case, attention.flash_mla_sparse_fwd, oracle.mla_sparse_prefill),
}


def _own_caches(case: Case, kw: dict) -> dict:
    """Each caller gets its own caches to append into; everything else is shared read-only."""
    kw = dict(kw)
    if case.new_tokens:
        kw["k_cache"], kw["v_cache"] = kw["k_cache"].clone(), kw["v_cache"].clone()
    return kw


def _results(got) -> list[torch.Tensor]:
    return list(got) if isinstance(got, tuple) else [got]


def _agree(actual: torch.Tensor, expected: torch.Tensor, what: str, atol: float, rtol: float) -> None:
    """Equal where both are infinite (same sign), within atol + rtol*|expected| elsewhere; no NaN."""
    a, e = actual.double().cpu(), expected.double().cpu()
    assert a.shape == e.shape, f"{what}: shape {tuple(a.shape)}, expected {tuple(e.shape)}"
    assert not a.isnan().any(), f"{what}: {int(a.isnan().sum())} NaN"
    inf = e.isinf()
    assert torch.equal(a[inf], e[inf]), f"{what}: {int((a[inf] != e[inf]).sum())} infinities differ"
    err = (a - e).abs()[~inf]
    bad = err > atol + rtol * e[~inf].abs()
    assert not bad.any(), f"{what}: {int(bad.sum())} of {bad.numel()} off, max abs err {err.max():.3e}"


def _check(case: Case, name: str, got: list[torch.Tensor], want: tuple) -> None:
    tol = case.tolerance
    _agree(got[0], want[0], f"{name} out", tol.atol, tol.rtol)
    lse_atol = max(tol.lse_atol, 1e-5)  # float32 against float64
    if case.op == "flashmla.sparse_prefill":  # (out, max_logits, lse), base 2
        _agree(got[1], want[1], f"{name} max_logits", lse_atol, tol.lse_rtol + 1e-6)
        _agree(got[2], want[2], f"{name} lse", lse_atol, tol.lse_rtol + 1e-6)
    elif len(got) > 1:
        _agree(got[1], want[1], f"{name} lse", lse_atol, tol.lse_rtol + 1e-6)


PROVIDERS = "fa3=torch,flashmla=torch"  # ACCELBRIDGE_PROVIDERS while a seed is checked


def check(
    draw: str,
    seed: int,
    device: str = "cpu",
    make: Callable[[random.Random], Case] | None = None,
    reference: bool = True,
) -> Case:
    """Seed ``seed`` of ``draw``: the reference (unless ``reference`` is False) and the torch provider (through
    the facade; the caller pins it with ``ACCELBRIDGE_PROVIDERS=PROVIDERS``) on ``device`` against the oracle
    (float64, on the same device). ``make`` draws the case (default: this file's draw). Raises AssertionError
    naming the seed; returns the case."""
    default_make, facade, expect = DRAWS[draw]
    seed = BASE_SEED + seed
    case = (make or default_make)(random.Random(f"{draw}:{seed}"))
    spec = ops.get(case.op)
    dev = torch.device(device)
    kw = spec.inputs(case, Inputs(case, seed, dev))
    if case.op == "flashmla.kvcache":
        kw["tile_scheduler_metadata"] = attention.get_mla_metadata()[0]
    with dev:  # the oracle's own tensors beside the inputs
        want = expect(kw)
    where = f"seed {seed}, {case.describe()}"
    if "return_softmax_lse" in spec.params:
        kw["return_softmax_lse"] = True
    takes = inspect.signature(spec.reference).parameters
    ref_kw = {k: v for k, v in _own_caches(case, kw).items() if k in takes}
    if reference:
        _check(case, f"reference ({where})", _results(spec.reference(**ref_kw)), want)
    call = _own_caches(case, kw)
    if case.with_out and "out" in spec.params:
        call["out"] = torch.full(want[0].shape, math.nan, dtype=out_dtype(kw["q"].dtype), device=dev)
    got = _results(facade(**call))
    if "out" in call:
        assert got[0] is call["out"], f"torch ({where}): out was not returned"
    _check(case, f"torch ({where})", got, want)
    if case.new_tokens and reference:  # both appended the same new keys into their caches
        for name in ("k_cache", "v_cache"):
            assert torch.equal(call[name].float().nan_to_num(), ref_kw[name].float().nan_to_num()), (
                f"torch ({where}): {name}"
            )
    return case


QUICK = 30  # seeds per draw in the default run; the rest under `pytest -m deep`


@pytest.mark.parametrize(
    "seed", [pytest.param(s, marks=pytest.mark.deep if s >= QUICK else ()) for s in range(CASES_PER_OP)]
)
@pytest.mark.parametrize("draw", list(DRAWS))
def test_torch_reference_and_oracle_agree(draw, seed, monkeypatch):
    monkeypatch.setenv("ACCELBRIDGE_PROVIDERS", PROVIDERS)
    check(draw, seed)


UPSTREAM_CASES_PER_OP, UPSTREAM_WORK = 8, 2e5  # the upstream grids' shapes, few sequences: CPU seconds


@pytest.mark.parametrize("seed", range(UPSTREAM_CASES_PER_OP))
@pytest.mark.parametrize("draw", list(upstream_grids.DRAWS))
def test_upstream_grids_torch_reference_and_oracle_agree(draw, seed, monkeypatch):
    """Draws from the kernels' own test grids (h_kv 2/3/8, head dims to 256, pages to 256, ...), small."""
    monkeypatch.setenv("ACCELBRIDGE_PROVIDERS", PROVIDERS)
    check(draw, seed, make=lambda r: upstream_grids.DRAWS[draw](r, UPSTREAM_WORK))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("draw", ["fa3.varlen", "fa3.kvcache"])
def test_attention_chunks_shorter_than_the_keys_agree(draw, seed, monkeypatch):
    """``attention_chunk`` below the key length, with windows and rotary as drawn: the oracle keeps each query's
    keys to its chunk (the GPU fuzz's draws found the oracle ignoring it; small shapes never reached it)."""
    monkeypatch.setenv("ACCELBRIDGE_PROVIDERS", PROVIDERS)

    def make(r: random.Random) -> Case:
        case = upstream_grids.DRAWS[draw](r, UPSTREAM_WORK)
        if case.sinks or case.dtype == "fp8_e4m3":
            case = replace(case, sinks=False, dtype="bf16")
        return replace(case, chunk=r.choice([8, 16, 32]))

    check(draw, seed, make=make)
