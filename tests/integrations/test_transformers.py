"""Real transformers models through the facade: attn_implementation="accelbridge", plain and paged.

Tiny seeded models (tests/integrations/tiny_models.py) generate 32 greedy tokens for a left-padded batch
of prompts of different lengths: the same tokens as transformers' own sdpa (eager where sdpa lacks the
model's feature: softcap, sinks), logits within float32 tolerance, on the simulated CPU platform with
the torch provider and the reference pinned. Continuous batching (generate_batch, transformers' paged
cache) gives the same tokens as the plain backend.
"""

from __future__ import annotations

import functools
import warnings

import pytest
import torch

pytest.importorskip("transformers", minversion="5.0", reason="transformers>=5 is not installed (extra `transformers`)")

from accelbridge import attention  # noqa: E402
from accelbridge.integrations import transformers as backend  # noqa: E402
from tests.integrations.tiny_models import MODELS, build, left_padded, prompts  # noqa: E402

NEW_TOKENS = 32
PROVIDERS = ("torch", "reference")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(torch.seed() % 2**31)


@pytest.fixture(params=PROVIDERS)
def provider(request, monkeypatch):
    """The facade pinned to one provider for fa3 ops, and the facade functions the backend calls (one entry a call)."""
    monkeypatch.setenv("ACCELBRIDGE_PROVIDERS", f"fa3={request.param}")
    attention.reset()
    calls = []

    def counting(name):
        real = getattr(attention, name)

        def counted(*args, **kwargs):
            calls.append(name)
            return real(*args, **kwargs)

        return counted

    for name in ("flash_attn_varlen_func", "flash_attn_with_kvcache"):
        monkeypatch.setattr(attention, name, counting(name))
    yield request.param, calls
    assert attention.resolve("fa3.varlen").selected == request.param


def _generate(model, batch):
    ids, mask = left_padded(batch)
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, do_sample=False,
                         min_new_tokens=NEW_TOKENS, pad_token_id=0)  # fmt: skip
    return out[:, ids.shape[1] :]


def _logits(model, batch):
    ids, mask = left_padded(batch)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits[mask.bool()]


@functools.cache
def _baseline(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens and logits of transformers' own implementation (computed once per model)."""
    model, implementation = build(name)
    model.set_attn_implementation(implementation)
    return _generate(model, prompts()), _logits(model, prompts())


@pytest.mark.parametrize("name", MODELS)
def test_same_tokens_and_logits_as_transformers(name, provider):
    tokens, logits = _baseline(name)
    model, _ = build(name)
    model.set_attn_implementation(backend.NAME)
    got = _generate(model, prompts())
    assert provider[1], "the model never called the facade"
    assert torch.equal(got, tokens), f"{name}: tokens differ from transformers' own attention"
    torch.testing.assert_close(_logits(model, prompts()), logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_continuous_batching_gives_the_plain_tokens(name, provider):
    if name == "deepseek_v3":
        pytest.skip("transformers 5.24's continuous-batching cache cannot hold DeepSeek V3's MLA latent (index_copy_ "
                    "shape error with sdpa too)")  # fmt: skip
    tokens, _ = _baseline(name)  # equal to the plain backend's (test above)
    model, _ = build(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers 5.23+: the paged| prefix is no longer needed
        model.set_attn_implementation(backend.PAGED_NAME)
    assert model.config._attn_implementation == backend.NAME
    out = model.generate_batch(prompts(), max_new_tokens=NEW_TOKENS, do_sample=False, min_new_tokens=NEW_TOKENS,
                               eos_token_id=-1, progress_bar=False)  # fmt: skip
    # decode steps through the block table where every layer's pages have one (transformers' sliding-window
    # pages have none: those models decode through the packed path)
    paged = {"llama", "qwen2"}
    assert provider[1].count("flash_attn_with_kvcache") == (0 if name not in paged else (NEW_TOKENS - 1) * 2)
    assert "flash_attn_varlen_func" in provider[1]
    got = [out[f"req_{i}"] for i in range(len(prompts()))]
    assert all(r.error is None for r in got), [r.error for r in got]
    assert torch.equal(torch.tensor([r.generated_tokens for r in got]), tokens)


def test_packed_rows_are_separate_sequences():
    """Padding-free batches (position ids restarting in one row) as each sequence alone."""
    model, _ = build("llama")
    model.set_attn_implementation(backend.NAME)
    batch = prompts(lengths=(5, 9, 3))
    ids = torch.tensor([sum(batch, [])])
    position_ids = torch.tensor([[i for p in batch for i in range(len(p))]])
    with torch.no_grad():
        packed = model(input_ids=ids, position_ids=position_ids).logits[0]
        alone = torch.cat([model(input_ids=torch.tensor([p])).logits[0] for p in batch])
    torch.testing.assert_close(packed, alone, rtol=1e-4, atol=1e-4)


class _Attention(torch.nn.Module):
    is_causal = True
    layer_idx = 3


def _qkv(rng, tokens, hq=4, hk=2, d=16, dv=16, batch=1):
    """transformers' layout: (batch, heads, tokens, dim)."""
    return (torch.randn(batch, hq, tokens, d, generator=rng), torch.randn(batch, hk, tokens, d, generator=rng),
            torch.randn(batch, hk, tokens, dv, generator=rng))  # fmt: skip


def test_block_table_decode_appends_to_the_paged_cache_and_attends_like_varlen(rng):
    """transformers' decode fast path (block_table, k_cache, v_cache) through flash_attn_with_kvcache."""
    page, pages, hk, d = 4, 12, 2, 16
    cached = [5, 0, 9]  # tokens already in each sequence's cache
    k_cache, v_cache = torch.randn(pages, page, hk, d, generator=rng), torch.randn(pages, page, hk, d, generator=rng)
    before = k_cache.clone(), v_cache.clone()
    order = torch.randperm(pages, generator=rng).tolist()
    block_table = torch.full((3, 4), -1, dtype=torch.int32)
    for row, n in enumerate(cached):
        for j in range(n // page + 1):
            block_table[row, j] = order.pop()
    q, k, v = _qkv(rng, tokens=3)
    cu_k = torch.tensor([0, *torch.tensor([n + 1 for n in cached]).cumsum(0).tolist()], dtype=torch.int32)
    sinks = torch.randn(4, generator=rng)
    features = {"scaling": 0.3, "sliding_window": 4, "softcap": 3.0, "s_aux": sinks}
    out, weights = backend.attention_forward(
        _Attention(), q, k, v, None, block_table=block_table, k_cache=k_cache, v_cache=v_cache,
        cu_seq_lens_q=torch.arange(4, dtype=torch.int32), cu_seq_lens_k=cu_k, max_length_q=1, max_length_k=10,
        **features,
    )  # fmt: skip
    assert weights is None and out.shape == (1, 3, 4, d)
    # each new token written at its sequence's next position, nothing else touched
    written = torch.zeros(pages, page, dtype=torch.bool)
    for row, n in enumerate(cached):
        p, o = int(block_table[row, n // page]), n % page
        written[p, o] = True
        assert torch.equal(k_cache[p, o], k[0, :, row]) and torch.equal(v_cache[p, o], v[0, :, row])
    assert torch.equal(k_cache[~written], before[0][~written]) and torch.equal(v_cache[~written], before[1][~written])

    # the same attention as the packed (varlen) path over the keys read back from the pages
    def read_back(cache):  # (1, hk, tokens, d): every sequence's keys in order, through its pages
        tokens = [cache[int(block_table[r, j // page]), j % page] for r, n in enumerate(cached) for j in range(n + 1)]
        return torch.stack(tokens).transpose(0, 1).unsqueeze(0)

    packed_k, packed_v = read_back(k_cache), read_back(v_cache)
    assert packed_k.shape == (1, hk, int(cu_k[-1]), d)
    expected, _ = backend.attention_forward(
        _Attention(), q, packed_k, packed_v, None, cu_seq_lens_q=torch.arange(4, dtype=torch.int32),
        cu_seq_lens_k=cu_k, max_length_q=1, max_length_k=10, **features,
    )  # fmt: skip
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_a_decode_step_reads_the_cache_in_place_and_attends_like_varlen(rng, monkeypatch):
    """Fewer queries than keys without a mask (a decode step over transformers' cache): one flash_attn_with_kvcache
    call over the cache's own memory, as (batch, tokens, kv heads, dim) views (no packed copy), the result the
    packed varlen path gives; GQA, a window, softcap and sinks mapped as there."""
    q = torch.randn(3, 4, 2, 16, generator=rng)  # two new tokens a sequence
    k, v = (torch.randn(3, 2, 9, 16, generator=rng) for _ in range(2))
    seen = []
    real = attention.flash_attn_with_kvcache

    def kvcache(q_, k_cache, v_cache, **kw):
        seen.append((k_cache.data_ptr(), v_cache.data_ptr(), k_cache.shape, k_cache.is_contiguous()))
        return real(q_, k_cache, v_cache, **kw)

    monkeypatch.setattr(attention, "flash_attn_with_kvcache", kvcache)
    features = {"scaling": 0.3, "sliding_window": 4, "softcap": 3.0, "s_aux": torch.randn(4, generator=rng)}
    out, weights = backend.attention_forward(_Attention(), q, k, v, None, **features)
    assert weights is None and out.shape == (3, 2, 4, 16)
    assert seen == [(k.data_ptr(), v.data_ptr(), (3, 9, 2, 16), False)]  # the cache itself, not a copy
    cu = torch.arange(0, 4 * 9, 9, dtype=torch.int32)  # each sequence's 9 keys, its 2 queries the last two
    expected, _ = backend.attention_forward(
        _Attention(), q, k, v, None, cu_seq_lens_q=torch.arange(0, 8, 2, dtype=torch.int32), cu_seq_lens_k=cu,
        max_length_q=2, max_length_k=9, **features,
    )  # fmt: skip
    torch.testing.assert_close(out, expected.view(3, 2, 4, 16), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_an_unpadded_batch_decodes_over_its_cache_in_place_with_the_plain_tokens(name, provider):
    """Equal-length prompts and no mask: every decode step goes through flash_attn_with_kvcache (the cache read in
    place; sliding-window layers' caches too) and the tokens are transformers' own."""
    model, implementation = build(name)
    ids = torch.tensor(prompts(lengths=(6, 6, 6)))
    model.set_attn_implementation(implementation)
    want = model.generate(input_ids=ids, max_new_tokens=8, do_sample=False, pad_token_id=0)
    model.set_attn_implementation(backend.NAME)
    got = model.generate(input_ids=ids, max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert torch.equal(got, want)
    layers = model.config.num_hidden_layers
    assert provider[1].count("flash_attn_with_kvcache") == 7 * layers  # every step after the prefill


def test_window_is_the_tokens_seen_including_the_query(rng):
    """sliding_window=w (transformers: keys j with i - j < w) is FA's window_size=(w - 1, 0)."""
    q, k, v = _qkv(rng, tokens=9)
    got, _ = backend.attention_forward(_Attention(), q, k, v, None, scaling=0.25, sliding_window=3)
    scores = (q @ k.repeat_interleave(2, dim=1).transpose(2, 3)) * 0.25
    i, j = torch.arange(9)[:, None], torch.arange(9)[None, :]
    scores = scores.masked_fill(~((j <= i) & (i - j < 3)), float("-inf"))
    expected = (scores.softmax(-1) @ v.repeat_interleave(2, dim=1)).transpose(1, 2)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"dropout": 0.1}, "dropout=0.1"),
        ({"output_attentions": True}, "output_attentions=True"),
        ({"position_bias": torch.zeros(1, 4, 6, 6)}, "position_bias="),
        ({"attention_mask": torch.ones(1, 1, 6, 6, dtype=torch.bool)}, "attention_mask=(1, 1, 6, 6)"),
        ({"is_causal": False, "sliding_window": 4}, "sliding_window=4 with is_causal=False"),
        ({"attention_chunk": 8192}, "attention_chunk=8192"),  # a keyword this backend does not know
    ],
)
def test_what_the_facade_cannot_serve_is_refused_naming_the_argument(rng, kwargs, argument):
    q, k, v = _qkv(rng, tokens=6)
    mask = kwargs.pop("attention_mask", None)
    with pytest.raises(backend.TransformersArgumentError, match=r"_Attention \(layer 3\) passed " + argument[:12]):
        backend.attention_forward(_Attention(), q, k, v, mask, **kwargs)


def test_a_call_no_provider_serves_names_the_models_argument(rng, monkeypatch):
    """The facade's refusal (every candidate's reason) comes back naming the argument as the model passed it."""

    def refuses(*args, **kwargs):
        raise attention.UnsupportedFeatureError("fa3.varlen", "sinks", {"vendor": ["no sinks parameter"]})

    monkeypatch.setattr(attention, "flash_attn_varlen_func", refuses)
    q, k, v = _qkv(rng, tokens=6)
    with pytest.raises(backend.TransformersArgumentError, match=r"passed s_aux=\(the facade's sinks\)") as error:
        backend.attention_forward(_Attention(), q, k, v, None, s_aux=torch.zeros(4))
    assert "vendor: no sinks parameter" in str(error.value)
    assert isinstance(error.value.__cause__, attention.UnsupportedFeatureError)


def test_a_model_in_training_with_dropout_is_refused():
    model, _ = build("llama")
    model.config.attention_dropout = 0.1
    for layer in model.model.layers:
        layer.self_attn.attention_dropout = 0.1
    model.set_attn_implementation(backend.NAME)
    ids, mask = left_padded(prompts())
    with pytest.raises(backend.TransformersArgumentError, match="LlamaAttention .* passed dropout=0.1"):
        model.train()(input_ids=ids, attention_mask=mask)


def test_ver_4_sends_the_calls_to_the_fa4_ops(rng, monkeypatch):
    ops = []
    real = attention.flash_attn_varlen_func
    monkeypatch.setattr(attention, "flash_attn_varlen_func", lambda *a, **kw: ops.append(kw["ver"]) or real(*a, **kw))
    q, k, v = _qkv(rng, tokens=7)
    fa3, _ = backend.attention_forward(_Attention(), q, k, v, None, sliding_window=3)
    try:
        backend.register(ver=4)
        assert "fa4.varlen on cpu" in backend.explain()
        fa4, _ = backend.attention_forward(_Attention(), q, k, v, None, sliding_window=3)
    finally:
        backend.register(ver=3)
    assert ops == [3, 4]
    torch.testing.assert_close(fa4, fa3, rtol=1e-5, atol=1e-5)


def test_explain_names_the_provider_serving_the_backend():
    text = backend.explain()
    assert "fa3.varlen on cpu" in text and "fa3.kvcache on cpu" in text and "selected torch" in text
    with pytest.raises(ValueError, match="ver is 2; expected 3 or 4"):
        backend.register(ver=2)
