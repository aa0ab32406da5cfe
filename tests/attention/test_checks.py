"""Bad input to the facade: a ValueError naming the argument and the expected form, before any kernel."""

import pytest
import torch

from accelbridge import attention, ops, platforms
from accelbridge.attention import InvalidArgumentError

from . import spy_provider

SPY = """schema: 1
platform: cpu
providers:
  spy:
    source: {module: tests.attention.spy_provider}
    ops:
      fa3.varlen: {function: flash_attn_varlen_func}
      fa3.kvcache: {function: flash_attn_with_kvcache}
      flashmla.kvcache: {function: flash_mla_with_kvcache}
order: {fa3.varlen: [spy], fa3.kvcache: [spy], flashmla.kvcache: [spy]}
"""


@pytest.fixture(autouse=True)
def spy(tmp_path, monkeypatch):
    (tmp_path / "spy.yaml").write_text(SPY)
    monkeypatch.setenv("ACCELBRIDGE_CATALOG_PATH", str(tmp_path / "spy.yaml"))
    platforms.reset()
    spy_provider.CALLS.clear()
    attention.set_checks("full")  # value checks are opt-in; these tests cover them
    yield spy_provider.CALLS
    attention.set_checks(None)


def varlen(rng, lens=(3, 5), hq=4, hk=2, d=16, dtype=torch.bfloat16):
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)
    total = int(cu[-1])
    q = torch.randn(total, hq, d, generator=rng).to(dtype)
    k = torch.randn(total, hk, d, generator=rng).to(dtype)
    v = torch.randn(total, hk, d, generator=rng).to(dtype)
    return {"q": q, "k": k, "v": v, "cu_seqlens_q": cu, "cu_seqlens_k": cu.clone(), "max_seqlen_q": max(lens),
            "max_seqlen_k": max(lens)}  # fmt: skip


def paged_varlen(rng, page=4, blocks=6):
    kw = varlen(rng)
    kw["k"] = torch.randn(blocks, page, 2, 16, generator=rng).to(torch.bfloat16)
    kw["v"] = torch.randn(blocks, page, 2, 16, generator=rng).to(torch.bfloat16)
    kw.update(cu_seqlens_k=None, seqused_k=torch.tensor([3, 5], dtype=torch.int32),
              page_table=torch.tensor([[0, 1], [2, 3]], dtype=torch.int32))  # fmt: skip
    return kw


def kvcache(rng, b=2, s=8, hq=4, hk=2, d=16, paged=False):
    q = torch.randn(b, 1, hq, d, generator=rng).to(torch.bfloat16)
    shape = (6, 4, hk, d) if paged else (b, s, hk, d)
    kc, vc = (torch.randn(*shape, generator=rng).to(torch.bfloat16) for _ in range(2))
    kw = {"q": q, "k_cache": kc, "v_cache": vc, "cache_seqlens": torch.tensor([3, 5], dtype=torch.int32)}
    if paged:
        kw["page_table"] = torch.tensor([[0, 1], [2, 3]], dtype=torch.int32)
    return kw


def _with(kw, **changes):
    return {**kw, **changes}


VARLEN_CASES = [
    ("k dtype", lambda kw: _with(kw, k=kw["k"].half()), "k has dtype torch.float16 but q has torch.bfloat16"),
    ("q integer", lambda kw: _with(kw, q=kw["q"].long(), k=kw["k"].long(), v=kw["v"].long()),
     "q has dtype torch.int64; expected a floating dtype"),
    ("heads", lambda kw: _with(kw, k=kw["k"][:, :1].expand(-1, 3, -1).contiguous(),
                                 v=kw["v"][:, :1].expand(-1, 3, -1).contiguous()),
     "q has 4 heads and k 3; expected q heads to be a multiple of kv heads"),
    ("cu int64", lambda kw: _with(kw, cu_seqlens_q=kw["cu_seqlens_q"].long()),
     "cu_seqlens_q is torch.int64 with shape (3,); expected an int32 tensor (batch + 1,)"),
    ("cu count", lambda kw: _with(kw, cu_seqlens_k=kw["cu_seqlens_k"][:2]),
     "cu_seqlens_k has 2 entries; expected 3, like cu_seqlens_q"),
    ("cu monotonic", lambda kw: _with(kw, cu_seqlens_k=torch.tensor([0, 5, 3], dtype=torch.int32)),
     "cu_seqlens_k is [0, 5, 3]; expected 0 first and non-decreasing"),
    ("cu total", lambda kw: _with(kw, cu_seqlens_q=torch.tensor([0, 3, 9], dtype=torch.int32)),
     "cu_seqlens_q ends at 9 but the packed tensor has 8 rows"),
    ("max_seqlen", lambda kw: _with(kw, max_seqlen_q=3), "max_seqlen_q is 3 but a sequence in cu_seqlens_q has 5"),
    ("out shape", lambda kw: _with(kw, out=torch.empty(8, 4, 8, dtype=torch.bfloat16)),
     "out is torch.bfloat16 (8, 4, 8) on cpu; expected torch.bfloat16 (8, 4, 16) on cpu"),
    ("out dtype", lambda kw: _with(kw, out=torch.empty(8, 4, 16)), "out is torch.float32 (8, 4, 16)"),
    ("out device", lambda kw: _with(kw, out=torch.empty(8, 4, 16, dtype=torch.bfloat16, device="meta")),
     "out is on meta but q is on cpu; expected every tensor on q's device"),
    ("not a tensor", lambda kw: _with(kw, k=kw["k"].tolist()), "k is list; expected a tensor"),
]  # fmt: skip


@pytest.mark.parametrize("name, mutate, message", VARLEN_CASES, ids=[c[0] for c in VARLEN_CASES])
def test_bad_varlen_arguments(rng, spy, name, mutate, message):
    with pytest.raises(InvalidArgumentError) as e:
        attention.flash_attn_varlen_func(**mutate(varlen(rng)))
    assert isinstance(e.value, ValueError)
    assert message in str(e.value) and str(e.value).startswith("flash_attn_varlen_func: ")
    assert spy == [], "no kernel ran"


PAGED_CASES = [
    ("page out of range", lambda kw: _with(kw, page_table=torch.tensor([[0, 1], [2, 99]], dtype=torch.int32)),
     "page_table[1, 1] is 99; expected block ids in [0, 6) for every page in use"),
    ("negative page", lambda kw: _with(kw, page_table=torch.tensor([[-1, 1], [2, 3]], dtype=torch.int32)),
     "page_table[0, 0] is -1"),
    ("too few pages", lambda kw: _with(kw, page_table=torch.tensor([[0], [2]], dtype=torch.int32)),
     "page_table has 1 columns but sequence 1 needs 2 pages of 4"),
    ("cu_seqlens_k with pages", lambda kw: _with(kw, cu_seqlens_k=kw["cu_seqlens_q"]),
     "cu_seqlens_k is given with page_table; expected cu_seqlens_k=None and the key lengths in seqused_k"),
    ("no seqused_k", lambda kw: _with(kw, seqused_k=None), "seqused_k is None with page_table"),
    ("3-d pool", lambda kw: _with(kw, k=kw["k"][0], v=kw["v"][0]),
     "k has shape (4, 2, 16); expected a tensor (num_blocks, page_size, num_heads_k, head_dim) with page_table"),
]  # fmt: skip


@pytest.mark.parametrize("name, mutate, message", PAGED_CASES, ids=[c[0] for c in PAGED_CASES])
def test_bad_paged_varlen_arguments(rng, spy, name, mutate, message):
    with pytest.raises(InvalidArgumentError, match="flash_attn_varlen_func: ") as e:
        attention.flash_attn_varlen_func(**mutate(paged_varlen(rng)))
    assert message in str(e.value)
    assert spy == []


def test_unused_page_table_entries_are_not_checked(rng, spy):
    """Engines pad page tables with junk past each sequence's pages: only pages in use must be valid."""
    kw = paged_varlen(rng)
    kw["page_table"] = torch.tensor([[0, -1, 77], [2, 3, -5]], dtype=torch.int32)
    attention.flash_attn_varlen_func(**kw)
    assert spy == ["flash_attn_varlen_func"]


KVCACHE_CASES = [
    ("capacity", lambda kw: _with(kw, cache_seqlens=torch.tensor([3, 9], dtype=torch.int32)),
     "cache_seqlens reaches 9 (with 0 new); expected at most the cache length 8"),
    ("append past capacity", lambda kw: _with(kw, cache_seqlens=torch.tensor([3, 8], dtype=torch.int32),
                                               k=torch.zeros(2, 1, 2, 16, dtype=torch.bfloat16) + 1,
                                               v=torch.zeros(2, 1, 2, 16, dtype=torch.bfloat16) + 1),
     "cache_seqlens reaches 9 (with 1 new)"),
    ("k without v", lambda kw: _with(kw, k=kw["k_cache"][:, :1].clone()), "v is None but the other is given"),
    ("seqlens int64", lambda kw: _with(kw, cache_seqlens=kw["cache_seqlens"].long()),
     "cache_seqlens is torch.int64 with shape (2,); expected an int32 tensor (2,)"),
    ("seqlens count", lambda kw: _with(kw, cache_seqlens=torch.tensor([1, 2, 3], dtype=torch.int32)),
     "cache_seqlens has 3 entries; expected one per sequence: 2"),
    ("negative length", lambda kw: _with(kw, cache_seqlens=torch.tensor([-1, 2], dtype=torch.int32)),
     "cache_seqlens is [-1, 2]; expected lengths >= 0"),
    ("v_cache dtype", lambda kw: _with(kw, v_cache=kw["v_cache"].float()),
     "v_cache has dtype torch.float32 but q has torch.bfloat16"),
    ("heads", lambda kw: _with(kw, q=torch.randn(2, 1, 3, 16).to(torch.bfloat16)),
     "q has 3 heads and k_cache 2"),
    ("head dim", lambda kw: _with(kw, q=torch.randn(2, 1, 4, 8).to(torch.bfloat16)),
     "k_cache/v_cache have shapes (2, 8, 2, 16)/(2, 8, 2, 16) for q (2, 1, 4, 8)"),
    ("out", lambda kw: _with(kw, out=torch.empty(2, 1, 4, 16, dtype=torch.float16)), "out is torch.float16"),
]  # fmt: skip


@pytest.mark.parametrize("name, mutate, message", KVCACHE_CASES, ids=[c[0] for c in KVCACHE_CASES])
def test_bad_kvcache_arguments(rng, spy, name, mutate, message):
    with pytest.raises(InvalidArgumentError, match="flash_attn_with_kvcache: ") as e:
        attention.flash_attn_with_kvcache(**mutate(kvcache(rng)))
    assert message in str(e.value)
    assert spy == []


def test_bad_paged_kvcache_and_mla(rng, spy):
    kw = kvcache(rng, paged=True)
    with pytest.raises(InvalidArgumentError, match=r"page_table\[1, 1\] is 6; expected block ids in \[0, 6\)"):
        attention.flash_attn_with_kvcache(**_with(kw, page_table=torch.tensor([[0, 1], [2, 6]], dtype=torch.int32)))
    with pytest.raises(InvalidArgumentError, match="page_table has 3 rows; expected one per sequence: 2"):
        attention.flash_attn_with_kvcache(**_with(kw, page_table=torch.zeros(3, 2, dtype=torch.int32)))
    q = torch.randn(2, 1, 4, 64, generator=rng).to(torch.bfloat16)
    cache = torch.randn(4, 8, 1, 64, generator=rng).to(torch.bfloat16)
    table = torch.tensor([[0, 1], [2, 3]], dtype=torch.int32)
    lens = torch.tensor([9, 16], dtype=torch.int32)
    with pytest.raises(InvalidArgumentError, match=r"head_dim_v is 80; expected an int in \(0, 64\]"):
        attention.flash_mla_with_kvcache(q, cache, table, lens, 80, None)
    with pytest.raises(InvalidArgumentError, match=r"block_table has 2 columns but sequence 1 needs 3 pages of 8"):
        attention.flash_mla_with_kvcache(q, cache, table, torch.tensor([9, 17], dtype=torch.int32), 32, None)
    assert spy == []
    out, lse = attention.flash_mla_with_kvcache(q, cache, table, lens, 32, None)
    assert out.shape == (2, 1, 4, 32) and spy == ["flash_mla_with_kvcache"]


def test_cheap_level_checks_values_of_cpu_tensors_only(rng, spy, monkeypatch):
    """The default level reads index values where the host read is free (CPU tensors), never a device's."""
    monkeypatch.setenv("ACCELBRIDGE_CHECKS", "cheap")
    attention.set_checks(None)  # re-read the environment
    kw = varlen(rng)
    with pytest.raises(InvalidArgumentError, match="max_seqlen_q is 3 but a sequence in cu_seqlens_q has 5"):
        attention.flash_attn_varlen_func(**_with(kw, max_seqlen_q=3))
    on_meta = {n: t.to("meta") if isinstance(t, torch.Tensor) else t for n, t in kw.items()}  # as on a GPU
    with pytest.raises(NotImplementedError, match="meta"):  # the spy's own reference cannot compute on meta
        attention.flash_attn_varlen_func(**_with(on_meta, max_seqlen_q=3))
    assert spy == ["flash_attn_varlen_func"], "no value read before the provider: it ran"
    with pytest.raises(InvalidArgumentError, match="k has dtype torch.float16"):
        attention.flash_attn_varlen_func(**_with(kw, k=kw["k"].half()))
    attention.set_checks("off")
    assert attention.checks.level() == "off"
    attention.flash_attn_varlen_func(**_with(kw, k=kw["k"].half()))  # no facade check: the kernel decides
    assert spy == ["flash_attn_varlen_func"] * 2


@pytest.mark.parametrize("op", ["paged varlen", "paged kvcache", "mla"])
def test_a_too_short_page_table_is_named_at_the_default_level(rng, spy, op):
    """2 columns where a sequence needs 3 pages silently truncated attention at the default level."""
    attention.set_checks("cheap")
    if op == "mla":
        kw, call, message = _mla(rng), attention.flash_mla_with_kvcache, "block_table has 2 columns"
        kw["cache_seqlens"] = torch.tensor([9, 17], dtype=torch.int32)
    else:
        paged = op == "paged varlen"
        kw = paged_varlen(rng) if paged else kvcache(rng, paged=True)
        kw["seqused_k" if paged else "cache_seqlens"] = torch.tensor([3, 9], dtype=torch.int32)
        if paged:
            kw["max_seqlen_k"] = 9
        call = attention.flash_attn_varlen_func if paged else attention.flash_attn_with_kvcache
        message = "page_table has 2 columns"
    with pytest.raises(InvalidArgumentError, match=message + " but sequence 1 needs 3 pages"):
        call(**kw)
    assert spy == []


def test_check_level_switch(monkeypatch):
    with pytest.raises(InvalidArgumentError, match=r"set_checks\('fast'\): expected one of full, cheap, off"):
        attention.set_checks("fast")
    monkeypatch.setenv("ACCELBRIDGE_CHECKS", "fast")
    with pytest.warns(RuntimeWarning, match="ACCELBRIDGE_CHECKS='fast' is not one of full, cheap, off; using full"):
        attention.set_checks(None)
    assert attention.checks.level() == "full"
    monkeypatch.setenv("ACCELBRIDGE_CHECKS", "CHEAP")
    attention.set_checks(None)
    assert attention.checks.level() == "cheap"


def test_valid_calls_pass_every_level(rng, spy):
    for level in ("full", "cheap", "off"):
        attention.set_checks(level)
        out = torch.full((8, 4, 16), float("nan"), dtype=torch.bfloat16)
        assert attention.flash_attn_varlen_func(**varlen(rng), out=out) is out
        attention.flash_attn_varlen_func(**paged_varlen(rng))
        attention.flash_attn_with_kvcache(**kvcache(rng))
        attention.flash_attn_with_kvcache(**kvcache(rng, paged=True))
    assert len(spy) == 12


@pytest.mark.parametrize("level", ["cheap", "full"])
def test_a_device_mismatch_is_named_at_every_level_but_off(rng, level):
    """k/v (or the caches) on another device than q: an InvalidArgumentError naming both, not a provider crash."""
    attention.set_checks(level)
    kw = varlen(rng)
    with pytest.raises(InvalidArgumentError, match="k/v are on meta/cpu but q is on cpu"):
        attention.flash_attn_varlen_func(**_with(kw, k=kw["k"].to("meta")))
    kc = kvcache(rng)
    with pytest.raises(InvalidArgumentError, match="k_cache/v_cache are on cpu/meta but q is on cpu"):
        attention.flash_attn_with_kvcache(**_with(kc, v_cache=kc["v_cache"].to("meta")))


def _mla(rng):
    q = torch.randn(2, 1, 4, 64, generator=rng).to(torch.bfloat16)
    cache = torch.randn(4, 8, 1, 64, generator=rng).to(torch.bfloat16)
    return {"q": q, "k_cache": cache, "block_table": torch.tensor([[0, 1], [2, 3]], dtype=torch.int32),
            "cache_seqlens": torch.tensor([9, 16], dtype=torch.int32), "head_dim_v": 32,
            "tile_scheduler_metadata": None}  # fmt: skip


META = "meta"  # another device than q's on any machine
METADATA_FAULTS = [  # each once crashed inside a provider or returned silently
    ("varlen", "cu_seqlens_q", lambda kw: _with(kw, cu_seqlens_q=kw["cu_seqlens_q"].to(META)),
     "cu_seqlens_q is on meta but q is on cpu"),
    ("varlen", "cu_seqlens_k", lambda kw: _with(kw, cu_seqlens_k=kw["cu_seqlens_k"].to(META)),
     "cu_seqlens_k is on meta but q is on cpu"),
    ("varlen", "sinks device", lambda kw: _with(kw, sinks=torch.zeros(4, device=META)), "sinks is on meta"),
    ("varlen", "sinks length", lambda kw: _with(kw, sinks=torch.zeros(3)), "expected a floating tensor (4,)"),
    ("varlen", "sinks rank", lambda kw: _with(kw, sinks=torch.zeros(1, 4)), "sinks is torch.float32 (1, 4)"),
    ("varlen", "sinks int8", lambda kw: _with(kw, sinks=torch.zeros(4, dtype=torch.int8)), "sinks is torch.int8"),
    ("paged", "page_table", lambda kw: _with(kw, page_table=kw["page_table"].to(META)), "page_table is on meta"),
    ("kvcache", "sinks", lambda kw: _with(kw, sinks=torch.zeros(5)), "sinks is torch.float32 (5,)"),
    ("kvcache", "cache_leftpad", lambda kw: _with(kw, cache_leftpad=torch.zeros(2, dtype=torch.int32, device=META)),
     "cache_leftpad is on meta"),
    ("mla", "q", lambda kw: _with(kw, q=kw["q"].to(META)), "k_cache is on cpu but q is on meta"),
    ("mla", "block_table", lambda kw: _with(kw, block_table=kw["block_table"].to(META)), "block_table is on meta"),
    ("mla", "cache_seqlens", lambda kw: _with(kw, cache_seqlens=kw["cache_seqlens"].to(META)),
     "cache_seqlens is on meta"),
    # FlashMLA asserts these None in dense mode; the reference ignored a dense sink, the torch provider applied it
    ("mla", "dense attn_sink", lambda kw: _with(kw, attn_sink=torch.zeros(4)),
     "attn_sink is given in dense mode (indices is None)"),
    ("mla", "dense topk_length", lambda kw: _with(kw, topk_length=torch.full((2,), 4, dtype=torch.int32)),
     "topk_length is given in dense mode (indices is None)"),
]  # fmt: skip


@pytest.mark.parametrize("op, name, mutate, message", METADATA_FAULTS, ids=[f"{c[0]}-{c[1]}" for c in METADATA_FAULTS])
def test_every_metadata_fault_is_named_before_any_kernel(rng, spy, op, name, mutate, message):
    build, call = {"varlen": (varlen, attention.flash_attn_varlen_func),
                   "paged": (paged_varlen, attention.flash_attn_varlen_func),
                   "kvcache": (kvcache, attention.flash_attn_with_kvcache),
                   "mla": (_mla, attention.flash_mla_with_kvcache)}[op]  # fmt: skip
    with pytest.raises(InvalidArgumentError) as e:
        call(**mutate(build(rng)))
    assert message in str(e.value) and "expected" in str(e.value)
    assert spy == [], "no kernel ran"


def _decides(spec, values, skip, exact):
    """(declared condition, generated fast path): whether each passes; an exception counts as failing."""
    from accelbridge.ops.spec import EXPRESSION_ENV

    env = dict(spec.with_defaults(values))
    g = {**EXPRESSION_ENV, "_EXACT": exact}
    try:
        declared = bool(eval(spec.metadata_condition(skip), g, env))  # noqa: S307
    except Exception:
        declared = False
    prologue, condition = spec.metadata_fast_path(skip, exact=exact)
    code = "def f():\n" + "".join(f"    {line}\n" for line in prologue) + f"    return bool({condition})\n"
    scope = {**g, **env}
    exec(code, scope)  # noqa: S102
    try:
        fast = scope["f"]()
    except Exception:
        fast = False
    return declared, fast


CALLS = ([("varlen", c[1]) for c in VARLEN_CASES] + [("paged", c[1]) for c in PAGED_CASES]
         + [("kvcache", c[1]) for c in KVCACHE_CASES] + [(c[0], c[2]) for c in METADATA_FAULTS]
         + [(b, lambda kw: kw) for b in ("varlen", "paged", "kvcache", "mla")])  # fmt: skip


@pytest.mark.parametrize("skip", [frozenset(), frozenset({"dtype", "shape"})], ids=["all", "validates"])
@pytest.mark.parametrize("exact", [False, True], ids=["cheap", "full"])
def test_the_generated_fast_path_decides_as_the_declared_checks(rng, skip, exact):
    builders = {"varlen": ("fa3.varlen", varlen), "paged": ("fa3.varlen", paged_varlen),
                "kvcache": ("fa3.kvcache", kvcache), "mla": ("flashmla.kvcache", _mla)}  # fmt: skip
    failing = 0
    for build, mutate in CALLS:
        op, builder = builders[build]
        declared, fast = _decides(ops.get(op), mutate(builder(rng)), skip, exact)
        assert declared == fast, (op, declared, fast)
        failing += not declared
    assert failing >= (16 if not skip else 3)  # the faults are there to be decided


def test_arguments_no_valid_call_leaves_none_are_read_without_a_guard():
    """q, k, v and varlen's cu_seqlens_q are always tensors; paged varlen passes cu_seqlens_k=None."""
    prologue, _ = ops.get("fa3.varlen").metadata_fast_path()
    guarded = {line.split(".__class__")[0][3:] for line in prologue if line.startswith("if ")}
    plain = {line.split(",")[0][len("_shape_") :] for line in prologue if line.startswith("_shape_")}
    assert {"q", "k", "v", "cu_seqlens_q"} <= plain and "cu_seqlens_k" in guarded


@pytest.mark.parametrize("bad", [None, "q", 3])
def test_a_non_tensor_where_a_tensor_is_required_is_named(rng, spy, bad):
    with pytest.raises(InvalidArgumentError, match="flash_attn_varlen_func: q"):
        attention.flash_attn_varlen_func(**_with(varlen(rng), q=bad))
    assert spy == []


def test_a_causal_sparse_call_is_named(rng, spy):
    """FlashMLA's sparse decode asserts causal False (the index lists pick the keys); the torch provider and the
    reference ignored it: a silent difference, now a named error before any kernel."""
    q = torch.randn(2, 1, 4, 576, generator=rng).to(torch.bfloat16)
    cache = torch.zeros(4, 64, 1, 656, dtype=torch.uint8).view(torch.float8_e4m3fn)
    indices = torch.zeros(2, 1, 8, dtype=torch.int32)
    with pytest.raises(InvalidArgumentError, match="causal is True in sparse mode"):
        attention.flash_mla_with_kvcache(q, cache, None, None, 512, None, causal=True, is_fp8_kvcache=True,
                                         indices=indices)  # fmt: skip
    assert spy == [], "no kernel ran"
