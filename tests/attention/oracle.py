"""A float64 oracle written independently of accelbridge's reference: one query row at a time.

It reads a call's own arguments the way the kernels document them and shares no code with
``accelbridge.ops.reference`` or the torch provider (the FP8 cache layouts are decoded here too),
so the differential fuzz test compares three implementations, not two copies of one.
"""

import math

import torch

LOG2E = 1.0 / math.log(2.0)


def row(q, keys, values, scale, softcap=0.0, sinks=None):
    """One query row: q (Hq, D), keys (N, Hk, D), values (N, Hk, Dv) -> out (Hq, Dv), lse (Hq,), lse with sinks.

    Heads map to kv heads in groups (GQA). A row with no key gives out 0 and lse -inf; a sink joins
    the denominator only (+inf: out 0).
    """
    hq, hk, n = q.shape[0], keys.shape[1], keys.shape[0]
    qg = q.double().view(hk, hq // hk, -1)  # heads grouped by the kv head they read
    out = torch.zeros(hq, values.shape[-1], dtype=torch.float64)
    lse = torch.full((hq,), -math.inf, dtype=torch.float64)
    if n:
        s = torch.einsum("kgd,nkd->kgn", qg, keys.double()).reshape(hq, n) * scale
        if softcap:
            s = softcap * torch.tanh(s / softcap)
        m = s.max(dim=1).values
        w = torch.exp(s - m[:, None])
        lse = m + torch.log(w.sum(1))
        denom = w.sum(1) + (torch.exp(sinks.double() - m) if sinks is not None else 0.0)
        pv = torch.einsum("kgn,nkd->kgd", w.view(hk, hq // hk, n), values.double()).reshape(hq, -1)
        out = pv / denom[:, None]
    if sinks is None:
        return out, lse, lse
    sink = sinks.double()
    out[sink == math.inf] = 0.0
    return out, lse, torch.logaddexp(lse, sink)


def visible(pos, n_keys, causal, window, chunk=0):
    """Key positions a query at ``pos`` (bottom-right aligned) may see: its window, and with ``chunk`` only
    the keys of its own chunk of ``chunk`` positions (FA3's ``attention_chunk``)."""
    left, right = window
    if causal:
        right = 0
    lo = 0 if left < 0 else max(0, pos - left)
    hi = n_keys - 1 if right < 0 else min(n_keys - 1, pos + right)
    if chunk:
        first = pos // chunk * chunk
        lo, hi = max(lo, first), min(hi, first + chunk - 1)
    return slice(lo, max(lo, hi + 1))


def attend_rows(q, k, v, scale, causal=False, window=(-1, -1), softcap=0.0, sinks=None):
    """q (Lq, Hq, D), k/v (Lk, Hk, D) -> (Lq, Hq, Dv) float64; bottom-right aligned masks."""
    return _sequence(q, k, v, scale, causal, window, softcap, sinks)[0]


def _sequence(q, k, v, scale, causal, window, softcap, sinks, chunk=0):
    lq, lk = q.shape[0], k.shape[0]
    out = torch.zeros(lq, q.shape[1], v.shape[-1], dtype=torch.float64)
    lse = torch.full((q.shape[1], lq), -math.inf, dtype=torch.float64)
    for i in range(lq):
        seen = visible(i + lk - lq, lk, causal, window, chunk)
        out[i], _, lse[:, i] = row(q[i], k[seen], v[seen], scale, softcap, sinks)
    return out, lse


def _paged_keys(pool, table_row, length):
    """A sequence's first ``length`` tokens of a paged pool, one position at a time."""
    pos = torch.arange(length)
    return pool[table_row[: -(-length // pool.shape[1])].long()[pos // pool.shape[1]], pos % pool.shape[1]]


def _scale(kw, d):
    return kw.get("softmax_scale") or d**-0.5


def _window(kw):
    w = kw.get("window_size") or (-1, -1)
    return (int(w[0]), int(w[1]))


def _descaled(kw, b, q, k, v):
    """FA3's FP8 descales (batch, h_kv): sequence b's q (by its heads' kv head), k and v, in float64."""
    if kw.get("q_descale") is None:
        return q, k, v
    per_kv = [kw[f"{n}_descale"][b].double() for n in "qkv"]
    qd = per_kv[0].repeat_interleave(q.shape[-2] // per_kv[0].shape[0])
    return q.double() * qd[:, None], k.double() * per_kv[1][:, None], v.double() * per_kv[2][:, None]


def varlen(kw):
    """flash_attn_varlen_func -> out (total_q, Hq, Dv), lse (Hq, total_q) with sinks."""
    q, cu_q = kw["q"], kw["cu_seqlens_q"].tolist()
    out = torch.zeros(q.shape[0], q.shape[1], kw["v"].shape[-1], dtype=torch.float64)
    lse = torch.full((q.shape[1], q.shape[0]), -math.inf, dtype=torch.float64)
    for b in range(len(cu_q) - 1):
        if kw.get("page_table") is not None:
            n = int(kw["seqused_k"][b])
            k, v = _paged_keys(kw["k"], kw["page_table"][b], n), _paged_keys(kw["v"], kw["page_table"][b], n)
        else:
            ks = slice(int(kw["cu_seqlens_k"][b]), int(kw["cu_seqlens_k"][b + 1]))
            k, v = kw["k"][ks], kw["v"][ks]
        qs = slice(cu_q[b], cu_q[b + 1])
        qb, k, v = _descaled(kw, b, q[qs], k, v)
        out[qs], lse[:, qs] = _sequence(qb, k, v, _scale(kw, q.shape[-1]), kw.get("causal"), _window(kw),
                                        kw.get("softcap") or 0.0, kw.get("sinks"),
                                        kw.get("attention_chunk") or 0)  # fmt: skip
    if kw["k"][..., 0, 0].numel() == 0:  # FA3 launches nothing when k holds no token: lse +inf
        lse.fill_(math.inf)
    return out, lse


def _rotated(x, kw, positions):
    """x (L, H, D) rotated at ``positions`` (L,) by the call's rotary table (the first 2 * cos.shape[1] dims):
    pairs (2i, 2i + 1) when interleaved, else (i, i + R/2), as FA3 documents it."""
    cos, sin = kw["rotary_cos"].double()[positions][:, None, :], kw["rotary_sin"].double()[positions][:, None, :]
    half = cos.shape[-1]
    x = x.double().clone()
    if kw.get("rotary_interleaved", True):
        a, b = x[..., 0 : 2 * half : 2], x[..., 1 : 2 * half : 2]
        x[..., 0 : 2 * half : 2], x[..., 1 : 2 * half : 2] = a * cos - b * sin, a * sin + b * cos
    else:
        a, b = x[..., :half], x[..., half : 2 * half]
        x[..., :half], x[..., half : 2 * half] = a * cos - b * sin, a * sin + b * cos
    return x


def _with_rotary(kw, b, n_cached, q, k_new):
    """FA3's rotary with appended keys: the new keys at positions n_cached, n_cached + 1, ...; the queries there
    too when causal or windowed, else all at n_cached."""
    if kw.get("rotary_cos") is None or k_new is None:
        return q, k_new
    start = n_cached if kw.get("rotary_seqlens") is None else int(kw["rotary_seqlens"][b])
    moving = kw.get("causal") or _window(kw) != (-1, -1) or bool(kw.get("attention_chunk"))
    q_pos = start + (torch.arange(q.shape[0]) if moving else torch.zeros(q.shape[0], dtype=torch.long))
    return _rotated(q, kw, q_pos), _rotated(k_new, kw, start + torch.arange(k_new.shape[0]))


def kvcache(kw):
    """flash_attn_with_kvcache -> out like q, lse (B, Hq, Sq) or (Hq, total_q) with sinks.

    Keys of sequence b: its cache row (``cache_batch_idx``) from ``cache_leftpad`` to
    ``cache_seqlens`` (the whole row without it), then the new k/v appended after them.
    """
    q, kc, vc = kw["q"], kw["k_cache"], kw["v_cache"]
    table, packed = kw.get("page_table"), kw.get("cu_seqlens_q") is not None
    batch = len(kw["cu_seqlens_q"]) - 1 if packed else q.shape[0]
    capacity = table.shape[1] * kc.shape[1] if table is not None else kc.shape[1]
    rows = kw.get("cache_batch_idx")
    out = torch.zeros(*q.shape[:-1], vc.shape[-1], dtype=torch.float64)
    lse = torch.full((q.shape[-2], q.shape[0]) if packed else (batch, q.shape[2], q.shape[1]), -math.inf,
                     dtype=torch.float64)  # fmt: skip
    for b in range(batch):
        n = capacity if kw.get("cache_seqlens") is None else int(kw["cache_seqlens"][b])
        start = 0 if kw.get("cache_leftpad") is None else int(kw["cache_leftpad"][b])
        if table is not None:
            k, v = _paged_keys(kc, table[b], n)[start:], _paged_keys(vc, table[b], n)[start:]
        else:
            r = b if rows is None else int(rows[b])
            k, v = kc[r, start:n], vc[r, start:n]
        qb = q[int(kw["cu_seqlens_q"][b]) : int(kw["cu_seqlens_q"][b + 1])] if packed else q[b]
        if kw.get("k") is not None:
            qb, k_new = _with_rotary(kw, b, n, qb, kw["k"][b])
            k, v = torch.cat([k.to(k_new.dtype), k_new]), torch.cat([v, kw["v"][b]])
        qb, k, v = _descaled(kw, b, qb, k, v)
        o, lb = _sequence(qb, k, v, _scale(kw, q.shape[-1]), kw.get("causal"), _window(kw),
                          kw.get("softcap") or 0.0, kw.get("sinks"), kw.get("attention_chunk") or 0)  # fmt: skip
        if packed:
            qs = slice(int(kw["cu_seqlens_q"][b]), int(kw["cu_seqlens_q"][b + 1]))
            out[qs], lse[:, qs] = o, lb
        else:
            out[b], lse[b] = o, lb
    if kc[..., 0, 0].numel() == 0 and (kw.get("k") is None or kw["k"].numel() == 0):  # nothing launched: +inf
        lse.fill_(math.inf)
    return out, lse


# -- FlashMLA ---------------------------------------------------------------------------------------
def _e4m3(byte_rows):
    return byte_rows.contiguous().view(torch.float8_e4m3fn).double()


def _bf16(byte_rows):
    return byte_rows.contiguous().view(torch.bfloat16).double()


def _e2m1(code):
    """One FP4 e2m1 code: sign bit 3, exponent bits 2..1 (bias 1), mantissa bit 0; exponent 0 is subnormal."""
    sign = -1.0 if code & 8 else 1.0
    exponent, mantissa = (code >> 1) & 3, code & 1
    return sign * (mantissa * 0.5 if exponent == 0 else 2.0 ** (exponent - 1) * (1 + mantissa / 2))


def cache_layout(kw, cache):
    """Which of FlashMLA's layouts ``cache`` holds, told as sglang-kernel 0.4.10 tells it (bytes per token; 528
    bytes: kv_format, else V3.2-no-RoPE under tensor metadata, V4.1 otherwise)."""
    width, d_qk = cache.shape[-1], kw["q"].shape[-1]
    if width == 288:
        return "V41_FP4"
    if kw.get("kv_format") is not None:
        return kw["kv_format"]
    if width == 528:
        return "V32_NO_ROPE" if isinstance(kw.get("tile_scheduler_metadata"), torch.Tensor) else "V41"
    return "V32" if d_qk == 576 else "V4"


def fp8_token(cache, token, layout):
    """Decode one token of FlashMLA's sparse cache layouts to bf16 values (as the kernels round them).

    V32 (d_qk 576): 512 e4m3, 4 float32 scales (one per 128), 64 bf16 rope = 656 bytes a token.
    V32_NO_ROPE (d_qk 512): the same without the rope, 528 bytes.
    V4 (d_qk 512): per block, the tokens' 448 e4m3 + 64 bf16 (576 bytes each), then each token's
    7 e8m0 scales (one per 64) and a pad byte; blocks padded to a multiple of 576 bytes.
    V41 (d_qk 512): per block, the tokens' 512 e4m3, then each token's 16 e8m0 scales (one per 32).
    V41_FP4 (d_qk 512): per block, the tokens' 256 bytes of e2m1 pairs (low nibble first), then each
    token's 32 e4m3 scales (one per 16).
    """
    raw = cache.view(torch.uint8)
    page, width = cache.shape[1], cache.shape[-1]
    blk, pos = divmod(int(token), page)
    if layout in ("V32", "V32_NO_ROPE"):
        t = raw[blk, pos, 0]
        scales = t[512:528].contiguous().view(torch.float32).double()
        nope = (_e4m3(t[:512]).view(4, 128) * scales[:, None]).flatten().to(torch.bfloat16).double()
        return torch.cat([nope, _bf16(t[528:656])]) if layout == "V32" else nope
    base = torch.as_strided(raw, (raw.shape[0], page * width), (raw.stride(0), 1))[blk]  # the block's bytes
    if layout == "V4":
        t = base[pos * 576 : pos * 576 + 576]
        e8m0 = base[page * 576 + pos * 8 : page * 576 + pos * 8 + 7].double()
        nope = _e4m3(t[:448]).view(7, 64) * torch.exp2(e8m0 - 127)[:, None]
        return torch.cat([nope.flatten().to(torch.bfloat16).double(), _bf16(t[448:576])])
    if layout == "V41":
        e8m0 = base[page * 512 + pos * 16 : page * 512 + pos * 16 + 16].double()
        values = _e4m3(base[pos * 512 : pos * 512 + 512]).view(16, 32) * torch.exp2(e8m0 - 127)[:, None]
        return values.flatten().to(torch.bfloat16).double()
    assert layout == "V41_FP4", layout
    packed = base[pos * 256 : pos * 256 + 256].long()
    scales = _e4m3(base[page * 256 + pos * 32 : page * 256 + pos * 32 + 32])
    codes = torch.stack([packed % 16, packed // 16], dim=-1).flatten()  # element 2i low nibble, 2i+1 high
    values = torch.tensor([_e2m1(c) for c in range(16)], dtype=torch.float64)[codes].view(32, 16) * scales[:, None]
    return values.flatten().to(torch.bfloat16).double()


def _mla_lse(lse):
    return torch.where(torch.isneginf(lse), torch.full_like(lse, math.inf), lse)


def mla_decode(kw):
    """flash_mla_with_kvcache -> out (B, Sq, Hq, Dv), lse (B, Hq, Sq) natural log without sinks, +inf if lonely."""
    q, dv = kw["q"], kw["head_dim_v"]
    batch, sq, hq, d = q.shape
    scale = _scale(kw, d)
    out = torch.zeros(batch, sq, hq, dv, dtype=torch.float64)
    lse = torch.full((batch, hq, sq), math.inf, dtype=torch.float64)
    if kw.get("indices") is None:
        qd = q.double() * (float(kw["descale_q"]) if kw.get("descale_q") is not None else 1.0)
        dk = float(kw["descale_k"]) if kw.get("descale_k") is not None else 1.0
        for b in range(batch):
            keys = _paged_keys(kw["k_cache"], kw["block_table"][b], int(kw["cache_seqlens"][b])).double() * dk
            o, lb = _sequence(qd[b], keys, keys[..., :dv], scale, kw.get("causal"), (-1, -1), 0.0, None)
            out[b], lse[b] = o, _mla_lse(lb)
        return out, lse
    lists = [(kw["k_cache"], kw["indices"], kw.get("topk_length"))]
    if kw.get("extra_k_cache") is not None:
        lists.append((kw["extra_k_cache"], kw["extra_indices_in_kvcache"], kw.get("extra_topk_length")))
    for b in range(batch):
        for s in range(sq):
            keys = []
            for cache, indices, lengths in lists:
                tokens, layout = cache.shape[0] * cache.shape[1], cache_layout(kw, cache)
                n = indices.shape[-1] if lengths is None else int(lengths[b])
                keys += [fp8_token(cache, t, layout) for t in indices[b, s, :n].tolist() if 0 <= t < tokens]
            k = torch.stack(keys)[:, None] if keys else torch.zeros(0, 1, d, dtype=torch.float64)
            o, lr, _ = row(q[b, s], k, k[..., :dv], scale, sinks=kw.get("attn_sink"))
            out[b, s], lse[b, :, s] = o, _mla_lse(lr)
    return out, lse


def mla_sparse_prefill(kw):
    """flash_mla_sparse_fwd -> out (s_q, Hq, Dv), max_logits and lse (s_q, Hq) in base 2 (lse +inf if lonely)."""
    q, kv, idx, dv = kw["q"], kw["kv"], kw["indices"], kw.get("d_v", 512)
    s_q, hq, _ = q.shape
    out = torch.zeros(s_q, hq, dv, dtype=torch.float64)
    max_logits = torch.full((s_q, hq), -math.inf, dtype=torch.float64)
    lse = torch.full((s_q, hq), math.inf, dtype=torch.float64)
    for s in range(s_q):
        n = idx.shape[-1] if kw.get("topk_length") is None else int(kw["topk_length"][s])
        seen = [t for t in idx[s, 0, :n].tolist() if 0 <= t < kv.shape[0]]
        if not seen:
            continue
        k = kv[seen].double()
        out[s], lr, _ = row(q[s], k, k[..., :dv], kw["sm_scale"], sinks=kw.get("attn_sink"))
        max_logits[s] = (k[:, 0] @ q[s].double().T).max(0).values * kw["sm_scale"] * LOG2E
        lse[s] = lr * LOG2E
    return out, max_logits, lse


def close(actual, expected, what, atol=2e-2, rtol=2e-2):
    a = actual.double()
    err = (a - expected).abs()
    bad = err > atol + rtol * expected.abs()
    assert not bad.any(), f"{what}: {int(bad.sum())} elements off, max abs err {err.max():.3e}"
