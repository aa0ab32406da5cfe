"""ROCm: aiter's FA and MLA decode through the facade, checked against the amd-aiter wheel's own source."""

import ast
import inspect
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from accelbridge import attention, platforms, torch_attention
from accelbridge.attention.emulations import csr_pages
from accelbridge.ops import reference

WHEEL = "amd-aiter==0.1.7.post2.dev18"


@pytest.fixture(scope="module")
def aiter_wheel():
    """The real wheel from the package index (cached): read, never imported (importing aiter needs ROCm)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "accelbridge-tests"
    found = sorted(cache.glob("amd_aiter-*.whl"))
    if not found:
        cache.mkdir(parents=True, exist_ok=True)
        r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL, "-d", str(cache)],
                           capture_output=True, text=True, timeout=600)  # fmt: skip
        found = sorted(cache.glob("amd_aiter-*.whl"))
        if not found:
            pytest.skip(f"cannot download {WHEEL} from the package index: {r.stderr.strip()[-200:]}")
    return found[-1]


def _signature_in(wheel: Path, member: str, function: str) -> list[tuple[str, str | None]]:
    tree = ast.parse(zipfile.ZipFile(wheel).read(member).decode())
    (fn,) = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == function]
    args = fn.args.args
    defaults = [None] * (len(args) - len(fn.args.defaults)) + [ast.unparse(d) for d in fn.args.defaults]
    return [(a.arg, d) for a, d in zip(args, defaults)]


def _signature_of(fn) -> list[tuple[str, str | None]]:
    return [(p.name, None if p.default is p.empty else repr(p.default).replace("'", "'"))
            for p in inspect.signature(fn).parameters.values()]  # fmt: skip


@pytest.mark.parametrize("member, function, fixture", [
    ("aiter/mla.py", "mla_decode_fwd", "aiter.mla"),
    ("aiter/ops/mha.py", "flash_attn_varlen_func", "aiter"),
])  # fmt: skip
def test_fixtures_have_the_wheels_signatures(aiter_wheel, fixture_providers, member, function, fixture):
    import importlib

    real = _signature_in(aiter_wheel, member, function)
    ours = _signature_of(getattr(importlib.import_module(fixture), function))
    assert [n for n, _ in ours] == [n for n, _ in real]
    for (name, d_real), (_, d_ours) in zip(real, ours):
        if d_real is not None and not d_real.startswith(("dtypes", "torch")):
            assert ast.literal_eval(d_real) == ast.literal_eval(d_ours), name


def test_csr_page_indices_without_a_host_sync():
    table = torch.tensor([[7, 3, 9], [4, 0, 0], [5, 6, 0]], dtype=torch.int32)
    lens = torch.tensor([130, 1, 64], dtype=torch.int32)
    indptr, indices, last = csr_pages(table, lens, 64)
    assert indptr.tolist() == [0, 3, 4, 5] and indices[:5].tolist() == [7, 3, 9, 4, 5] and last.tolist() == [2, 1, 64]


def test_mla_decode_served_by_aiter_on_rocm(fixture_providers):
    import aiter.mla

    g = torch.Generator().manual_seed(4)
    q = torch.randn(3, 1, 16, 576, generator=g).to(torch.bfloat16)
    cache = torch.randn(8, 64, 1, 576, generator=g).to(torch.bfloat16)
    table = torch.tensor([[2, 5], [1, 0], [7, 3]], dtype=torch.int32)
    lens = torch.tensor([100, 0, 128], dtype=torch.int32)
    with platforms.simulated("rocm:gfx942"):
        assert attention.resolve("flashmla.kvcache", head_dim=576).selected == "aiter"
        meta, splits = attention.get_mla_metadata(lens, 16, 1)
        out, lse = attention.flash_mla_with_kvcache(q, cache, table, lens, 512, meta, splits, causal=True)
        assert aiter.mla.CALLS and aiter.mla.CALLS[-1][:2] == (3, 3)
        want, want_lse = reference.flash_mla_with_kvcache(q, cache, table, lens, 512)
        assert torch.equal(out, want) and torch.equal(lse, want_lse) and torch.isposinf(lse[1]).all()
        calls = len(aiter.mla.CALLS)  # two queries per sequence (MTP), causal: aiter has no mask, the call goes on
        q2 = torch.randn(3, 2, 16, 576, generator=g).to(torch.bfloat16)
        out2, _ = attention.flash_mla_with_kvcache(q2, cache, table, lens, 512, meta, splits, causal=True)
        assert len(aiter.mla.CALLS) == calls
        assert torch.equal(out2, torch_attention.flash_mla_with_kvcache(q2, cache, table, lens, 512, causal=True)[0])
        r = attention.resolve("flashmla.kvcache", indices=True, head_dim=576)
        assert r.selected == "torch"
        (row,) = [c for c in r.candidates if c["provider"] == "aiter"]
        assert "takes a bf16 KV cache, not FlashMLA's FP8 layouts" in " ".join(row["reasons"])


def test_aiter_window_spelling_is_read_from_the_installed_function(fixture_providers, tmp_path, monkeypatch, rng):
    """The amd-aiter release takes (-1, -1); its repository's main (-1, -1, 0): the adapter follows the default."""
    with platforms.simulated("rocm:gfx942"):
        chain = attention.chain("fa3.varlen")
        assert chain.candidate(0).binding.window == "as-is"
    main = tmp_path / "aiter_main"
    main.mkdir()
    (main / "__init__.py").write_text(
        "from accelbridge.ops import reference as ref\n"
        "SEEN = []\n"
        "def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,"
        " softmax_scale=None, logits_soft_cap=0.0, causal=False, window_size=(-1, -1, 0), return_lse=False,"
        " block_table=None, out=None, sink_ptr=None):\n"
        "    SEEN.append(window_size)\n"
        "    return ref.flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, causal=causal,"
        " window_size=window_size[:2], sinks=sink_ptr)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "main.yaml").write_text(
        "schema: 1\nplatform: rocm\nproviders:\n  aiter:\n    source: {module: aiter_main}\n"
    )
    monkeypatch.setenv("ACCELBRIDGE_CATALOG_PATH", str(tmp_path / "main.yaml"))
    platforms.reset()
    with platforms.simulated("rocm:gfx942"):
        import aiter_main

        q = torch.randn(5, 4, 16, generator=rng).to(torch.bfloat16)
        cu = torch.tensor([0, 5], dtype=torch.int32)
        attention.flash_attn_varlen_func(q, q, q, cu, cu, 5, 5, causal=True, window_size=(2, 0))
        assert aiter_main.SEEN == [(2, 0, 0)]
        sinks = torch.randn(4, generator=rng)
        attention.flash_attn_varlen_func(q, q, q, cu, cu, 5, 5, sinks=sinks)
        assert attention.resolve("fa3.varlen", sinks=True).selected == "aiter", "main's sink_ptr serves sinks"
