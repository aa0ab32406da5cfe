"""The argument combinations sgl-kernel's FA3 tests pass, as facade calls (shared by the CPU and GPU tests).

Each ``Call`` builds keyword arguments for ``flash_attn_with_kvcache`` or ``flash_attn_varlen_func``
exactly as sglang's ``sgl-kernel/tests/test_flash_attention.py`` and flash-attention's
``hopper/test_flash_attn.py`` do: rotary_seqlens and rotary_interleaved always passed (inert without
rotary_cos), num_splits / pack_gqa varied, qv with d=64, FP8 with descales, leftpad, batch index,
local windows, attention chunks, packed (varlen) q and new keys.

``oracle(call, kw)`` is an independent float64 computation of the expected output (dense masks
per sequence, rotary by complex multiplication), written apart from accelbridge's reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class Call:
    name: str
    kind: str = "kvcache"  # kvcache | varlen
    d: int = 128
    dv: int | None = None
    hq: int = 6
    hk: int = 2
    page: int | None = None
    new: int = 0  # new keys appended per sequence
    rotary: str = ""  # "" | interleaved | half
    rotary_seqlens: bool = False
    leftpad: bool = False
    batch_idx: bool = False
    causal: bool = True
    window: tuple[int, int] = (-1, -1)
    chunk: int = 0
    softcap: float = 0.0
    sinks: bool = False
    qv: bool = False
    fp8: bool = False
    seqlen_q: int = 1
    varlen_q: bool = False
    num_splits: int = 0
    pack_gqa: bool | None = None
    extra: dict = field(default_factory=dict)


CALLS = [
    Call("decode-paged", page=16),
    Call("decode-contiguous"),
    Call("decode-mqa", hq=6, hk=1, page=64),
    Call("decode-mha", hq=4, hk=4),
    Call("append", new=2, seqlen_q=2),
    Call("append-paged", new=3, seqlen_q=3, page=16),
    Call("rotary-interleaved", new=2, seqlen_q=2, rotary="interleaved"),
    Call("rotary-half", new=2, seqlen_q=2, rotary="half"),
    Call("rotary-noncausal", new=1, seqlen_q=3, rotary="half", causal=False),
    Call("rotary-seqlens", new=2, seqlen_q=2, rotary="interleaved", rotary_seqlens=True),
    Call("rotary-paged", new=2, seqlen_q=2, rotary="half", page=16),
    Call("leftpad", leftpad=True, seqlen_q=2),
    Call("leftpad-append-rotary", leftpad=True, new=2, seqlen_q=2, rotary="half"),
    Call("batch-idx", batch_idx=True, new=1),
    Call("batch-idx-paged", batch_idx=True, page=16),
    Call("local", window=(8, 0), seqlen_q=4),
    Call("local-both", causal=False, window=(5, 3), seqlen_q=4),
    Call("chunk", chunk=16, seqlen_q=3),
    Call("softcap", softcap=15.0),
    Call("sinks", sinks=True, page=16),
    Call("num-splits-3", num_splits=3, pack_gqa=True, page=16),
    Call("num-splits-1", num_splits=1, pack_gqa=False),
    Call("qv-512", d=64, dv=512, qv=True, hq=8, hk=1, page=64),
    Call("qv-256", d=64, dv=256, qv=True, hq=8, hk=1, seqlen_q=2),
    Call("fp8", fp8=True, page=16),
    Call("fp8-append", fp8=True, new=1),
    Call("varlen-q", varlen_q=True, seqlen_q=4, new=2, page=16),
    Call("varlen-q-rotary", varlen_q=True, seqlen_q=3, new=3, rotary="interleaved"),
    Call("d64", d=64),
    Call("d256", d=256, page=64),
    Call("prefill", kind="varlen"),
    Call("prefill-local", kind="varlen", causal=False, window=(32, 16)),
    Call("prefill-softcap", kind="varlen", softcap=30.0),
    Call("prefill-sinks", kind="varlen", sinks=True),
    Call("prefill-chunk", kind="varlen", chunk=64),
    Call("prefill-qv", kind="varlen", d=64, dv=512, qv=True, hq=8, hk=1),
    Call("prefill-fp8", kind="varlen", fp8=True),
    Call("prefill-mqa-splits", kind="varlen", hq=8, hk=1, num_splits=2, pack_gqa=True),
]
FP8 = torch.float8_e4m3fn
LENS_K = (5, 37, 64, 120)


def build(call: Call, device: str, seed: int = 0) -> dict:
    """The keyword arguments of one call (tensors on ``device``), as the upstream tests pass them."""
    g = torch.Generator().manual_seed(seed)
    dtype = torch.bfloat16

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(dtype).to(device)

    dv = call.dv or call.d
    b = len(LENS_K)
    if call.kind == "varlen":
        lens = (1, 17, 80, 130)
        cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32, device=device)
        q, k, v = randn(sum(lens), call.hq, call.d), randn(sum(lens), call.hk, call.d), randn(sum(lens), call.hk, dv)
        kw = {"q": q, "k": k, "v": v, "cu_seqlens_q": cu, "cu_seqlens_k": cu, "max_seqlen_q": max(lens),
              "max_seqlen_k": max(lens)}  # fmt: skip
        if call.qv:
            kw["qv"] = randn(sum(lens), call.hq, dv)
    else:
        rows = b * 2 if call.batch_idx else b
        cap = 160
        lens_k = torch.tensor(LENS_K, dtype=torch.int32)
        kw = {"cache_seqlens": lens_k.to(device), "rotary_interleaved": call.rotary != "half"}
        if call.page:
            blocks = rows * (cap // call.page)
            kw["k_cache"], kw["v_cache"] = (
                randn(blocks, call.page, call.hk, call.d),
                randn(blocks, call.page, call.hk, dv),
            )
            perm = torch.randperm(blocks, generator=g).to(torch.int32)
            kw["page_table"] = perm.reshape(rows, cap // call.page).to(device)
        else:
            kw["k_cache"], kw["v_cache"] = randn(rows, cap, call.hk, call.d), randn(rows, cap, call.hk, dv)
        if call.batch_idx:
            kw["cache_batch_idx"] = torch.randperm(rows, generator=g)[:b].to(torch.int32).to(device)
        if call.leftpad:
            kw["cache_leftpad"] = torch.tensor([n // 2 for n in LENS_K], dtype=torch.int32, device=device)
        if call.varlen_q:
            lq = [call.seqlen_q - (i % 2) for i in range(b)]
            kw["cu_seqlens_q"] = torch.tensor([0, *torch.tensor(lq).cumsum(0).tolist()], dtype=torch.int32,
                                              device=device)  # fmt: skip
            kw["max_seqlen_q"] = max(lq)
            kw["q"] = randn(sum(lq), call.hq, call.d)
            if call.new:
                ln = [min(call.new, n) for n in lq]
                kw["cu_seqlens_k_new"] = torch.tensor([0, *torch.tensor(ln).cumsum(0).tolist()], dtype=torch.int32,
                                                      device=device)  # fmt: skip
                kw["k"], kw["v"] = randn(sum(ln), call.hk, call.d), randn(sum(ln), call.hk, dv)
        else:
            kw["q"] = randn(b, call.seqlen_q, call.hq, call.d)
            if call.new:
                kw["k"], kw["v"] = randn(b, call.new, call.hk, call.d), randn(b, call.new, call.hk, dv)
        if call.qv:
            kw["qv"] = randn(*kw["q"].shape[:-1], dv)
        offsets = lens_k // 2 if call.rotary_seqlens else lens_k
        kw["rotary_seqlens"] = offsets.to(device)  # passed always, as the upstream tests do
        if call.rotary:
            angle = torch.rand(cap + 8, call.d // 4, generator=g) * 2 * math.pi
            kw["rotary_cos"], kw["rotary_sin"] = (
                torch.cos(angle).to(dtype).to(device),
                torch.sin(angle).to(dtype).to(device),
            )
    kw.update(causal=call.causal, window_size=call.window, softcap=call.softcap, num_splits=call.num_splits,
              pack_gqa=call.pack_gqa, return_softmax_lse=True)  # fmt: skip
    if call.chunk:
        kw["attention_chunk"] = call.chunk
    if call.sinks:
        kw["sinks"] = randn(call.hq)
    if call.fp8:
        for name in ("q", "k", "v", "k_cache", "v_cache"):
            if kw.get(name) is not None:
                kw[name] = kw[name].to(FP8)
        nb = b
        for name in ("q_descale", "k_descale", "v_descale"):
            kw[name] = (torch.rand(nb, call.hk, generator=g) + 0.5).to(device)
    return kw


# -- the independent oracle -------------------------------------------------------------------------
def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, pos: torch.Tensor, interleaved: bool) -> torch.Tensor:
    """Rotary by complex multiplication: pairs (interleaved: adjacent; else halves) turned by angle(pos)."""
    r = cos.shape[-1]
    x = x.double().clone()
    rot = torch.complex(cos.double()[pos], sin.double()[pos])[:, None, :]  # (L, 1, r)
    if interleaved:
        z = torch.view_as_complex(x[..., : 2 * r].reshape(*x.shape[:-1], r, 2).contiguous())
        x[..., : 2 * r] = torch.view_as_real(z * rot).reshape(*x.shape[:-1], 2 * r)
    else:
        z = torch.complex(x[..., :r], x[..., r : 2 * r]) * rot
        x[..., :r], x[..., r : 2 * r] = z.real, z.imag
    return x


def _attend(q, k, v, scale, causal, window, chunk, softcap, sinks, qv):
    """Dense float64 attention of one sequence with explicit bottom-right masks."""
    lq, lk = q.shape[0], k.shape[0]
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    s = torch.einsum("ihd,jhd->hij", q, k)
    if qv is not None:
        s = s + torch.einsum("ihd,jhd->hij", qv, v)
    s = s * scale
    if softcap:
        s = softcap * torch.tanh(s / softcap)
    pos = torch.arange(lq)[:, None] + lk - lq
    col = torch.arange(lk)[None, :]
    keep = torch.ones(lq, lk, dtype=torch.bool)
    left, right = window
    if causal:
        right = 0
    if left >= 0:
        keep &= col >= pos - left
    if right >= 0:
        keep &= col <= pos + right
    if chunk:
        keep &= col // chunk == pos // chunk
    s = s.masked_fill(~keep, -math.inf)
    if sinks is not None:
        s = torch.cat([s, sinks.double()[:, None, None].expand(-1, lq, 1)], -1)
    m = s.amax(-1, keepdim=True).clamp(min=-1e30)
    p = torch.exp(s - m)
    p = p / p.sum(-1, keepdim=True).clamp(min=1e-300)
    return torch.einsum("hij,jhd->ihd", p[..., :lk], v)


def oracle(call: Call, kw: dict) -> torch.Tensor:
    """The expected output (float64, CPU), from the call's inputs before any in-place append."""
    kw = {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}

    def deq(x, name, b, group=1):
        x = x.double()
        d = kw.get(f"{name}_descale")
        return x if d is None else x * d[b].double().repeat_interleave(group)[None, :, None]

    d = kw["q"].shape[-1]
    dv = (kw["v"] if call.kind == "varlen" else kw["v_cache"]).shape[-1]
    scale = (d + (dv if call.qv else 0)) ** -0.5
    group = call.hq // call.hk
    sinks = kw.get("sinks")
    outs = []
    if call.kind == "varlen":
        cu = kw["cu_seqlens_q"].tolist()
        for b in range(len(cu) - 1):
            rows = slice(cu[b], cu[b + 1])
            qv = deq(kw["qv"][rows], "q", b, group) if call.qv else None
            outs.append(_attend(deq(kw["q"][rows], "q", b, group), deq(kw["k"][rows], "k", b),
                                deq(kw["v"][rows], "v", b), scale, call.causal, call.window, call.chunk,
                                call.softcap, sinks, qv))  # fmt: skip
        return torch.cat(outs)
    b_count = kw["cache_seqlens"].shape[0]
    cu_q = kw["cu_seqlens_q"].tolist() if "cu_seqlens_q" in kw else None
    cu_k = kw["cu_seqlens_k_new"].tolist() if "cu_seqlens_k_new" in kw else None
    local = call.causal or call.window != (-1, -1)
    for b in range(b_count):
        row = int(kw["cache_batch_idx"][b]) if "cache_batch_idx" in kw else b
        n = int(kw["cache_seqlens"][b])
        if "page_table" in kw:
            pages = kw["page_table"][row].long()
            kc = kw["k_cache"][pages].reshape(-1, call.hk, d)
            vc = kw["v_cache"][pages].reshape(-1, call.hk, dv)
        else:
            kc, vc = kw["k_cache"][row], kw["v_cache"][row]
        q = kw["q"][cu_q[b] : cu_q[b + 1]] if cu_q else kw["q"][b]
        qv = (kw["qv"][cu_q[b] : cu_q[b + 1]] if cu_q else kw["qv"][b]) if call.qv else None
        kn = vn = None
        if "k" in kw:
            kn, vn = (
                (kw["k"][cu_k[b] : cu_k[b + 1]], kw["v"][cu_k[b] : cu_k[b + 1]]) if cu_k else (kw["k"][b], kw["v"][b])
            )
        q = q.double()
        if call.rotary:
            start = int(kw["rotary_seqlens"][b])
            qpos = torch.arange(q.shape[0]) + start if local else torch.full((q.shape[0],), start)
            q = _rope(q, kw["rotary_cos"], kw["rotary_sin"], qpos, call.rotary == "interleaved")
            if kn is not None:
                kn = _rope(kn, kw["rotary_cos"], kw["rotary_sin"], torch.arange(kn.shape[0]) + start,
                           call.rotary == "interleaved").to(kw["k_cache"].dtype)  # fmt: skip
        keys, vals = kc[:n], vc[:n]
        if kn is not None:
            keys, vals = torch.cat([keys, kn]), torch.cat([vals, vn])
        pad = int(kw["cache_leftpad"][b]) if "cache_leftpad" in kw else 0
        keys, vals = keys[pad:], vals[pad:]
        outs.append(_attend(deq(q, "q", b, group), deq(keys, "k", b), deq(vals, "v", b), scale, call.causal,
                            call.window, call.chunk, call.softcap, sinks,
                            None if qv is None else deq(qv, "q", b, group)))  # fmt: skip
    return torch.cat(outs) if cu_q else torch.stack(outs)
