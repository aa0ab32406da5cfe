"""Many ranks on one node of GPUs: a TP-sharded decode step equals the single-GPU one; one hub download per node.

Run under torchrun, one process per GPU (each test is a collective: every rank runs the same ones):

    torchrun --nproc-per-node=2 -m pytest tests/gpu/test_ranks.py -q -p no:cacheprovider

Without torchrun's variables (a plain ``pytest tests/gpu``) the module skips.
"""

import datetime
import os
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch

from accelbridge import attention, kernels_catalog, platforms
from accelbridge.attention import providers
from accelbridge.ops import reference as ref

WORLD = int(os.environ.get("WORLD_SIZE", "0"))  # read at import: torchrun's variables, kept for tests/gpu
RANK = int(os.environ.get("RANK", "0"))
LOCAL_RANK = int(os.environ.get("LOCAL_RANK", "0"))

pytestmark = pytest.mark.skipif(
    WORLD < 2 or not torch.cuda.is_available() or torch.cuda.device_count() <= LOCAL_RANK,
    reason="run under torchrun --nproc-per-node=N (N >= 2) on a node of N GPUs",
)


@pytest.fixture(scope="module")
def dist():
    import torch.distributed as dist

    torch.cuda.set_device(LOCAL_RANK)
    dist.init_process_group("nccl", timeout=datetime.timedelta(seconds=180))  # a rank that fails does not hang CI
    yield dist
    dist.destroy_process_group()


@pytest.fixture
def fresh():
    providers.clear()
    kernels_catalog.clear_cache()
    platforms.reset()
    yield
    providers.clear()
    platforms.reset()


def rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def test_each_rank_resolves_on_its_own_device(dist, fresh):
    p = platforms.current()
    assert p.device_index() == LOCAL_RANK == torch.cuda.current_device()
    info = p.describe()
    assert (info["device"], info["rank"], info["world_size"]) == (f"cuda:{LOCAL_RANK}", RANK, WORLD)
    assert attention.resolve("fa3.kvcache").device == f"cuda:{LOCAL_RANK}"
    assert f"device: cuda:{LOCAL_RANK} (rank {RANK} of {WORLD}" in attention.explain("fa3.kvcache")


def decode_problem(b=4, page=64, pages=8, hq=32, hk=8, d=128):
    """The full (unsharded) decode step, the same on every rank: seeded on the CPU, then moved to this rank's GPU."""
    g = torch.Generator().manual_seed(2026)
    kc = torch.randn(b * pages, page, hk, d, generator=g).to(torch.bfloat16)
    vc = torch.randn(b * pages, page, hk, d, generator=g).to(torch.bfloat16)
    table = torch.randperm(b * pages, generator=g).reshape(b, pages).to(torch.int32)
    seqlens = torch.tensor([1, 77, 300, 510], dtype=torch.int32)  # room for the appended token
    q = torch.randn(b, 1, hq, d, generator=g).to(torch.bfloat16)
    k_new = torch.randn(b, 1, hk, d, generator=g).to(torch.bfloat16)
    v_new = torch.randn(b, 1, hk, d, generator=g).to(torch.bfloat16)
    return [t.cuda() for t in (q, kc, vc, k_new, v_new, table, seqlens)]


def decode(q, kc, vc, k_new, v_new, table, seqlens):
    """One decode step through the facade: append the new token's k/v to the paged cache, attend."""
    out = torch.full_like(q, float("nan"))  # poisoned: every element must be written
    attention.flash_attn_with_kvcache(q, kc, vc, k=k_new, v=v_new, cache_seqlens=seqlens, page_table=table,
                                      causal=True, out=out)  # fmt: skip
    assert not out.isnan().any()
    return out


@pytest.mark.parametrize("provider", ["sgl-kernel", "torch"])
def test_tp_sharded_decode_equals_the_single_gpu_step(dist, fresh, monkeypatch, provider):
    """Heads split across the ranks (as tensor parallelism splits them); the gathered result is the single-GPU one."""
    if provider == "sgl-kernel":
        pytest.importorskip("sgl_kernel.flash_attn")  # the same answer on every rank of one machine
    monkeypatch.setenv("ACCELBRIDGE_PROVIDERS", f"fa3={provider}")
    platforms.reset()
    q, kc, vc, k_new, v_new, table, seqlens = decode_problem()
    hq, hk = q.shape[2], kc.shape[2]
    assert hk % WORLD == 0, f"{hk} KV heads do not split over {WORLD} ranks"
    qs, ks = slice(RANK * hq // WORLD, (RANK + 1) * hq // WORLD), slice(RANK * hk // WORLD, (RANK + 1) * hk // WORLD)

    whole_kc, whole_vc = kc.clone(), vc.clone()
    single = decode(q, whole_kc, whole_vc, k_new, v_new, table, seqlens)  # the single-GPU step, on this rank's GPU
    shard_kc, shard_vc = kc[:, :, ks].contiguous(), vc[:, :, ks].contiguous()
    shard = decode(q[:, :, qs].contiguous(), shard_kc, shard_vc, k_new[:, :, ks].contiguous(),
                   v_new[:, :, ks].contiguous(), table, seqlens)  # fmt: skip
    assert attention.resolve("fa3.kvcache").selected == provider
    assert torch.equal(shard_kc, whole_kc[:, :, ks]) and torch.equal(shard_vc, whole_vc[:, :, ks])  # the append

    parts = [torch.empty_like(shard) for _ in range(WORLD)]
    dist.all_gather(parts, shard)
    gathered = torch.cat(parts, dim=2)
    # heads are independent: equal up to the kernel's split heuristics (which see the head count), in bf16
    assert rel_err(gathered, single) < 5e-3, rel_err(gathered, single)
    assert (gathered.float() - single.float()).abs().max().item() <= 2**-6 * single.float().abs().max().item()
    full = ref.flash_attn_with_kvcache(q, kc.clone(), vc.clone(), k=k_new, v=v_new, cache_seqlens=seqlens,
                                       page_table=table, causal=True)  # fmt: skip
    assert rel_err(gathered, full) < 1e-2
    choices = attention.check_ranks()  # every rank ran the same provider and version
    assert {c["fa3.kvcache"]["provider"] for c in choices.values()} == {provider}


def test_a_hub_kernel_is_downloaded_once_per_node(dist, fresh, monkeypatch):
    """Every rank loads one hub kernel at the same moment; a recording fake download shows exactly one fetched it."""
    pytest.importorskip("kernels")
    import kernels

    from tests.attention.rank_worker import fake_get_kernel

    shared = [tempfile.mkdtemp(prefix="accelbridge-ranks-") if RANK == 0 else None]
    dist.broadcast_object_list(shared, src=0)  # one directory for the node, as ACCELBRIDGE_CACHE_DIR is
    root = Path(shared[0])
    overlay = root / f"hub-{RANK}.yaml"
    overlay.write_text(textwrap.dedent("""
        schema: 1
        platform: cuda
        providers:
          hub-test:
            source: {hub: acme/flash-attn3, version: 1}
            ops:
              fa3.varlen:
                function: flash_attn_varlen_func
                adapt: {rename: {return_softmax_lse: return_attn_probs}}
        order: {fa3.varlen: [hub-test]}
        """))  # fmt: skip
    shared_env = {"ACCELBRIDGE_CACHE_DIR": root / "cache", "ACCELBRIDGE_CATALOG_PATH": overlay,
                  "FAKE_HUB": root / "hub", "FETCH_LOG": root / "fetches", "FETCH_SECONDS": "2"}  # fmt: skip
    for name, value in shared_env.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.setattr(kernels, "get_kernel", fake_get_kernel)  # the download only; loading is the real `kernels`
    platforms.reset()
    g = torch.Generator().manual_seed(7)
    cu = torch.tensor([0, 9, 40], dtype=torch.int32).cuda()
    q, k, v = (torch.randn(40, h, 128, generator=g).to(torch.bfloat16).cuda() for h in (16, 4, 4))
    dist.barrier()  # every rank resolves at once
    out = attention.flash_attn_varlen_func(q, k, v, cu, cu, 31, 31, causal=True)
    dist.barrier()
    assert attention.resolve("fa3.varlen").selected == "hub-test"
    fetched = (root / "fetches").read_text().split()
    assert len(fetched) == 1, f"{len(fetched)} ranks downloaded: {fetched}"
    torch.testing.assert_close(out, ref.flash_attn_varlen_func(q, k, v, cu, cu, causal=True))  # the kernel is it
    attention.check_ranks(op_ids=["fa3.varlen"])
