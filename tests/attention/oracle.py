"""A float64 oracle written independently of accelbridge's reference: one query row at a time."""

import math

import torch


def attend_rows(q, k, v, scale, causal=False, window=(-1, -1), softcap=0.0, sinks=None):
    """q (Lq, Hq, D), k/v (Lk, Hk, D) -> (Lq, Hq, Dv) float64; bottom-right aligned masks."""
    lq, hq, _ = q.shape
    lk, hk, _ = k.shape
    out = torch.zeros(lq, hq, v.shape[-1], dtype=torch.float64)
    q, k, v = q.double(), k.double(), v.double()
    left, right = window
    if causal:
        right = 0
    for i in range(lq):
        pos = i + lk - lq
        lo = 0 if left < 0 else max(0, pos - left)
        hi = lk - 1 if right < 0 else min(lk - 1, pos + right)
        for h in range(hq):
            kh = h // (hq // hk)
            if hi < lo:
                continue
            s = (k[lo : hi + 1, kh] @ q[i, h]) * scale
            if softcap:
                s = softcap * torch.tanh(s / softcap)
            m = s.max()
            if sinks is not None:
                m = max(m, sinks[h].double())
            w = torch.exp(s - m)
            denom = w.sum() + (math.exp(float(sinks[h]) - float(m)) if sinks is not None else 0.0)
            out[i, h] = (w[:, None] * v[lo : hi + 1, kh]).sum(0) / denom
    return out


def close(actual, expected, what, atol=2e-2, rtol=2e-2):
    a = actual.double()
    err = (a - expected).abs()
    bad = err > atol + rtol * expected.abs()
    assert not bad.any(), f"{what}: {int(bad.sum())} elements off, max abs err {err.max():.3e}"
