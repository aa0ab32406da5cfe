"""The torch provider's paths: each taken where it fits, none reading the device when the hints are given."""

import contextlib
import inspect

import pytest
import torch
import torch.nn.functional as F

from accelbridge.ops import reference
from accelbridge.torch_attention import capabilities, flash_attn_varlen_func, flash_attn_with_kvcache, varlen

BF16 = torch.bfloat16


@contextlib.contextmanager
def no_device_reads():
    """Every way Python reads a tensor's value (a device sync on a GPU) raises."""

    def refuse(self, *args, **kwargs):
        raise AssertionError("a tensor value was read on the host")

    names = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__")
    saved = {n: getattr(torch.Tensor, n) for n in names}
    try:
        for n in names:
            setattr(torch.Tensor, n, refuse)
        yield
    finally:
        for n, fn in saved.items():
            setattr(torch.Tensor, n, fn)


def _paged(b=4, hq=8, hk=2, d=64, page=16, lens=(5, 40, 17, 1)):
    pages = -(-max(lens) // page) + 1
    kc, vc = torch.randn(b * pages, page, hk, d).to(BF16), torch.randn(b * pages, page, hk, d).to(BF16)
    table = torch.randperm(b * pages).to(torch.int32).view(b, pages)
    return torch.randn(b, 1, hq, d).to(BF16), kc, vc, table, torch.tensor(lens, dtype=torch.int32)


def _close(a, b, tol=2e-2):
    assert torch.allclose(a.float(), b.float(), atol=tol, rtol=tol), float((a.float() - b.float()).abs().max())


def test_decode_with_append_reads_nothing_from_the_device():
    q, kc, vc, table, lens = _paged()
    k, v = torch.randn(4, 1, 2, 64).to(BF16), torch.randn(4, 1, 2, 64).to(BF16)
    want_kc, want_vc = kc.clone(), vc.clone()
    want = reference.flash_attn_with_kvcache(q, want_kc, want_vc, k, v, cache_seqlens=lens, page_table=table,
                                             causal=True, softcap=3.0, return_softmax_lse=True)  # fmt: skip
    with no_device_reads():
        out, lse = flash_attn_with_kvcache(q, kc, vc, k, v, cache_seqlens=lens, page_table=table, causal=True,
                                           softcap=3.0, return_softmax_lse=True)  # fmt: skip
    _close(out, want[0])
    _close(lse, want[1], 1e-4)
    assert torch.equal(kc, want_kc) and torch.equal(vc, want_vc)  # the append wrote the same rows


def test_varlen_prefill_with_hints_reads_nothing_from_the_device():
    lens_q, lens_k = [3, 9, 1], [3, 20, 6]
    cu_q = torch.tensor([0, 3, 12, 13], dtype=torch.int32)
    cu_k = torch.tensor([0, 3, 23, 29], dtype=torch.int32)
    q, k, v = torch.randn(13, 4, 64).to(BF16), torch.randn(29, 2, 64).to(BF16), torch.randn(29, 2, 64).to(BF16)
    with no_device_reads():
        out = flash_attn_varlen_func(q, k, v, cu_q, cu_k, max(lens_q), max(lens_k), causal=True, window_size=(4, 0))
        same = flash_attn_varlen_func(q, k, k, cu_q, cu_q, 9, 9, causal=True)
    _close(out, reference.flash_attn_varlen_func(q, k, v, cu_q, cu_k, causal=True, window_size=(4, 0)))
    _close(same, reference.flash_attn_varlen_func(q, k, k, cu_q, cu_q, causal=True))


def test_self_attention_prefill_uses_sdpa_is_causal(monkeypatch):
    """The same cu_seqlens for q and k, causal: SDPA's own causal kernels, no mask tensor."""
    seen = []
    real = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        seen.append((kwargs.get("is_causal", False), kwargs.get("attn_mask")))
        return real(*args, **kwargs)

    monkeypatch.setattr(varlen.F, "scaled_dot_product_attention", spy)
    cu = torch.tensor([0, 5, 12], dtype=torch.int32)
    q, k = torch.randn(12, 4, 64).to(BF16), torch.randn(12, 2, 64).to(BF16)
    out = flash_attn_varlen_func(q, k, k, cu, cu, 7, 7, causal=True)
    assert seen == [(True, None)]
    _close(out, reference.flash_attn_varlen_func(q, k, k, cu, cu, causal=True))


def fake_varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, return_aux=None, scale=None,
                     window_size=(-1, -1), enable_gqa=False, seqused_k=None, block_table=None,
                     num_splits=None):  # fmt: skip
    """torch 2.13's varlen_attn signature, computed by the reference; lse returned (T_q, H_q) as its docs say."""
    fake_varlen_attn.calls.append({"window_size": window_size, "enable_gqa": enable_gqa,
                                   "paged": block_table is not None, "lse": return_aux is not None})  # fmt: skip
    cu_k = None if block_table is not None else cu_seq_k
    out, lse = reference.flash_attn_varlen_func(query, key, value, cu_seq_q, cu_k, seqused_k=seqused_k,
                                                page_table=block_table, softmax_scale=scale, window_size=window_size,
                                                return_softmax_lse=True)  # fmt: skip
    return (out, lse.transpose(0, 1)) if return_aux is not None and return_aux.lse else out


fake_varlen_attn.calls = []


@pytest.fixture
def torch_varlen(monkeypatch):
    from torch.nn.attention import varlen as torch_varlen_module

    fake, real = (list(inspect.signature(f).parameters) for f in (fake_varlen_attn, torch_varlen_module.varlen_attn))
    if fake != real and torch.__version__ < "2.13":  # the fake stands in for torch 2.13's; older ones differ
        pytest.skip(f"torch {torch.__version__}'s varlen_attn takes {real}, not 2.13's {fake}")
    assert fake == real
    features = frozenset({"varlen_attn", "enable_gqa", "window_size", "seqused_k", "block_table", "return_aux"})
    monkeypatch.setattr(capabilities, "of", lambda device: capabilities.Capabilities(str(device), features))
    monkeypatch.setattr(torch_varlen_module, "varlen_attn", fake_varlen_attn)
    fake_varlen_attn.calls.clear()
    return fake_varlen_attn.calls


def test_torchs_varlen_api_serves_what_it_can(torch_varlen):
    cu = torch.tensor([0, 5, 12], dtype=torch.int32)
    cu_k = torch.tensor([0, 9, 30], dtype=torch.int32)
    q, k, v = torch.randn(12, 8, 64).to(BF16), torch.randn(30, 2, 64).to(BF16), torch.randn(30, 2, 64).to(BF16)
    out, lse = flash_attn_varlen_func(q, k, v, cu, cu_k, 7, 21, causal=True, window_size=(6, -1),
                                      return_softmax_lse=True)  # fmt: skip
    want, want_lse = reference.flash_attn_varlen_func(q, k, v, cu, cu_k, causal=True, window_size=(6, -1),
                                                      return_softmax_lse=True)  # fmt: skip
    assert torch_varlen == [{"window_size": (6, 0), "enable_gqa": True, "paged": False, "lse": True}]
    _close(out, want)
    assert lse.shape == want_lse.shape and torch.allclose(lse, want_lse, atol=1e-4)
    flash_attn_varlen_func(q, k, v, cu, cu_k, 7, 21, causal=True, softcap=2.0)  # softcap: not torch's
    flash_attn_varlen_func(q, k, v, cu, cu_k, None, None)  # no max lengths: not without reading the device
    assert len(torch_varlen) == 1


def test_torchs_varlen_api_without_gqa_is_not_used_for_gqa(torch_varlen, monkeypatch):
    monkeypatch.setattr(capabilities, "of", lambda d: capabilities.Capabilities(str(d), frozenset({"varlen_attn"})))
    cu = torch.tensor([0, 5, 12], dtype=torch.int32)
    q, k = torch.randn(12, 8, 64).to(BF16), torch.randn(12, 2, 64).to(BF16)
    flash_attn_varlen_func(q, k, k, cu, cu, 7, 7)
    q1 = torch.randn(12, 2, 64).to(BF16)
    flash_attn_varlen_func(q1, k, k, cu, cu, 7, 7)
    assert torch_varlen == [{"window_size": (-1, -1), "enable_gqa": False, "paged": False, "lse": False}]


def test_capabilities_on_the_cpu_say_what_is_missing_and_why():
    caps = capabilities.of(torch.device("cpu"))
    assert not caps.has_varlen and not caps.triton
    text = "\n".join(caps.describe())
    assert "no varlen_attn: " in text  # no varlen module in this torch, or no CPU kernel
    assert "no Triton kernels: Triton kernels run on CUDA/ROCm devices, not cpu (unless TRITON_INTERPRET=1)" in text


@pytest.mark.parametrize("q_shape", [(4, 0, 8, 64), (0, 1, 8, 64)], ids=["seqlen-q-0", "batch-0"])
def test_the_triton_decode_kernel_is_never_launched_on_an_empty_problem(q_shape):
    """An empty grid dimension made the kernel read past its buffers on the H200: the batched path answers."""
    from accelbridge.torch_attention import decode

    _, kc, vc, _, _ = _paged()
    caps = capabilities.Capabilities("cuda", triton=True)
    assert decode.fits(torch.empty(4, 1, 8, 64, dtype=BF16), kc, vc, caps)
    assert not decode.fits(torch.empty(q_shape, dtype=BF16), kc, vc, caps)
