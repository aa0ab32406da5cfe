"""Conformance cases: one problem each, and the random inputs an op's declaration builds from it."""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass

import torch

from accelbridge.platforms.dtypes import DTYPE_ATTRS


@dataclass(frozen=True)
class Tolerance:
    """|actual - expected| <= atol + rtol * |expected| for every element of the output (and lse, with lse_*).

    ``cos_diff``: FlashMLA's whole-tensor metric as well, 1 - 2<a,e> / (|a|^2 + |e|^2) at most this.
    """

    atol: float
    rtol: float
    lse_atol: float = 1e-2
    lse_rtol: float = 0.0
    cos_diff: float | None = None


# Kernels round P to the input dtype before the PV product and round the output once: a few
# ulps of the output dtype (bf16 ulp at 1.0 is 2**-7), never more, for inputs ~ N(0, 1).
# FP8 inputs are dequantised by the reference, so only the output rounding (bf16) and the
# kernel's internal FP8 rounding of P remain: under one e4m3 ulp at 1.0 (0.125); sgl-kernel's FA3 reached
# 0.082 on one element of 165888 on the H200.
TOLERANCES: dict[str, Tolerance] = {
    "bf16": Tolerance(atol=2e-2, rtol=2e-2),
    "fp16": Tolerance(atol=4e-3, rtol=4e-3),
    "fp32": Tolerance(atol=1e-4, rtol=1e-4, lse_atol=1e-4),
    "fp8_e4m3": Tolerance(atol=1e-1, rtol=1e-1, lse_atol=5e-2),
    # FlashMLA's own (tests/test_flash_mla_*_decoding.py, sgl-kernel's tests/test_flashmla.py): out within
    # 2 bf16 ulps or 1e-3, cosine difference 5e-6; lse within 8 ulps of float32's 16-bit mantissa check or 1e-6
    "flashmla": Tolerance(atol=1e-3, rtol=2.01 / 128, lse_atol=1e-6, lse_rtol=8.01 / 65536, cos_diff=5e-6),
}


SENTINEL = 2147480000  # what FlashMLA's tests write into page-table entries no sequence uses


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
    qv_dim: int = 0  # FA3 qv (absorbed MLA): an extra query part of this head dim against v
    rotary: str = ""  # "interleaved" | "half": rotary embedding applied to q and the new k
    leftpad: bool = False  # kvcache: cache_leftpad (each sequence starts later in its row)
    batch_idx: bool = False  # kvcache: cache_batch_idx (sequence b uses cache row idx[b])
    chunk: int = 0  # attention_chunk: keys only within the query's chunk
    topk: int = 0  # sparse MLA: indexed tokens per query (0: dense)
    topk_length: bool = False  # sparse MLA: a per-sequence (decode) or per-query (prefill) topk_length
    extra_topk: int = 0  # sparse MLA decode: indexed tokens per query in a second (extra) cache
    extra_page_size: int = 0  # sparse MLA decode: the extra cache's block size (0: page_size)
    # what no sequence reads, filled as the kernels' own tests fill it (a provider must never read it):
    sentinel: int | None = None  # page-table entries past a sequence's pages (FlashMLA: 2147480000)
    nan_unused: bool = False  # NaN in every cache slot no sequence attends to
    invalid: tuple[int, ...] = ()  # sparse MLA: markers of "no key" mixed into the indices besides -1
    kv_format: str = ""  # sparse MLA: the cache's layout (reference.LAYOUT_BYTES; "": V3.2 at d 576, V4 at 512)
    extra_kv_format: str = ""  # sparse MLA: the extra cache's layout ("": the cache's)
    sink_inf: bool = False  # sinks: some heads +inf (their output is 0), some -inf (no effect)
    packed_q: bool = False  # kvcache: q packed (total_q, ...) with cu_seqlens_q and max_seqlen_q
    no_seqlens: bool = False  # kvcache: cache_seqlens=None, every sequence fills its (paged) row
    tol: str = ""  # a TOLERANCES key other than the dtype's (e.g. the kernel family's own)

    def __str__(self) -> str:
        return f"{self.op}:{self.name}"

    @property
    def tolerance(self) -> Tolerance:
        return TOLERANCES[self.tol or self.dtype]

    def describe(self) -> str:
        """The parameters that differ from a plain case, for tables and failure messages."""
        base = Case(self.op, self.name)
        return ", ".join(
            f"{k}={v}" for k, v in asdict(self).items() if k not in ("op", "name") and getattr(base, k) != v
        )


def cumulative(lens: tuple[int, ...], dev: torch.device) -> torch.Tensor:
    return torch.tensor([0, *itertools.accumulate(lens)], dtype=torch.int32, device=dev)


class Inputs:
    """Random inputs of one case on one device, from one seeded generator."""

    def __init__(self, case: Case, seed: int, dev: torch.device):
        self.case, self.dev = case, dev
        self.gen = torch.Generator().manual_seed(seed)
        self.dtype = getattr(torch, DTYPE_ATTRS[case.dtype])

    def randn(self, *shape: int, dtype: torch.dtype | None = None, scale: float = 1.0) -> torch.Tensor:
        x = torch.randn(*shape, generator=self.gen) * scale
        return x.to(dtype or self.dtype).to(self.dev)

    def paged(self, lens: tuple[int, ...], heads: int, dim: int, spare: int = 0,
              page_size: int = 0) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """A shuffled page pool holding ``lens`` rows per sequence, and its page table."""
        ps = page_size or self.case.page_size
        per_seq = max(1, max(math.ceil((n + spare) / ps) for n in lens))
        blocks = per_seq * len(lens) + 1
        pool = self.randn(blocks, ps, heads, dim)
        table = torch.randperm(blocks, generator=self.gen)[: per_seq * len(lens)].reshape(len(lens), per_seq)
        return pool, table.to(torch.int32).to(self.dev)

    def retire_unused(self, table: torch.Tensor | None, lens: tuple[int, ...], *pools: torch.Tensor) -> None:
        """The case's conventions for what no sequence reads, in place: sentinel table entries past each
        sequence's pages, NaN in every slot past its length (paged pools, or contiguous (B, S, ...) rows)."""
        c = self.case
        if table is None:
            if c.nan_unused:
                for pool in pools:
                    for b, n in enumerate(lens):
                        pool[b, n:] = float("nan")
            return
        page = pools[0].shape[1]
        used = torch.zeros(pools[0].shape[0] * page, dtype=torch.bool)
        for b, n in enumerate(lens):
            pages = math.ceil(n / page)
            for col in range(pages):
                block = int(table[b, col])
                used[block * page : block * page + min(page, n - col * page)] = True
            if c.sentinel is not None:
                table[b, pages:] = c.sentinel
        if c.nan_unused:
            for pool in pools:  # through float32: FP8 tensors take no masked fill
                wide = pool.float()
                wide.view(-1, *pool.shape[2:])[~used.to(pool.device)] = float("nan")
                pool.copy_(wide.to(pool.dtype))

    def sinks(self, heads: int, dtype: torch.dtype) -> torch.Tensor:
        """Per-head sink logits; with ``sink_inf`` some heads +inf and some -inf, as FlashMLA's tests draw them."""
        sinks = torch.randn(heads, generator=self.gen)
        if self.case.sink_inf:
            pick = torch.randn(heads, generator=self.gen)
            sinks[pick > 0.5], sinks[pick < -0.5] = float("inf"), float("-inf")
            sinks[0], sinks[-1] = float("inf"), float("-inf")  # both kinds, whatever the draw
        return sinks.to(dtype).to(self.dev)
