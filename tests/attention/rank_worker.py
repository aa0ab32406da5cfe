"""One rank of tests/attention/test_ranks.py, run as a separate process (``python rank_worker.py MODE ...``).

``hub GO``: waits for the file GO, then runs a varlen call served by a hub kernel whose download is
a fake that records its pid in $FETCH_LOG, sleeps $FETCH_SECONDS (the test may kill it there), then
writes the kernel into $FAKE_HUB atomically, as huggingface_hub does; prints the provider and a
hash of the result.
``gloo STORE``: joins a gloo process group (torchrun's variables RANK, WORLD_SIZE), resolves fa3.kvcache
then fa3.varlen through the facade, and prints check_ranks' verdict after each as JSON lines.
"""

import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path

import torch


def problem():
    g = torch.Generator().manual_seed(1234)
    cu = torch.tensor([0, 7, 30], dtype=torch.int32)
    q, k, v = (torch.randn(30, h, 64, generator=g).to(torch.bfloat16) for h in (8, 2, 2))
    return q, k, v, cu


def fake_get_kernel(repo, version=None, revision=None, trust_remote_code=False, **_):
    import kernels

    from tests.attention.hubkernels import build_local_kernel

    store = Path(os.environ["FAKE_HUB"]) / repo.replace("/", "--")
    if not store.exists():
        with open(os.environ["FETCH_LOG"], "a") as log:
            log.write(f"{os.getpid()}\n")
        time.sleep(float(os.environ["FETCH_SECONDS"]))
        partial = store.with_name(f".{store.name}.{os.getpid()}.incomplete")
        build_local_kernel(partial)
        os.replace(partial, store)
    return kernels.get_local_kernel(store / "flash-attn3", trust_remote_code=False)


def hub(go: Path) -> None:
    import kernels

    kernels.get_kernel = fake_get_kernel  # the download only; loading is the real `kernels`
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
    from accelbridge import attention

    while not go.exists():  # every rank starts resolving at the same moment
        time.sleep(0.005)
    q, k, v, cu = problem()
    out = attention.flash_attn_varlen_func(q, k, v, cu, cu, 23, 23, causal=True)
    print(attention.resolve("fa3.varlen").selected, hashlib.sha256(out.float().numpy().tobytes()).hexdigest())


def gloo(store: Path) -> None:
    import torch.distributed as dist

    from accelbridge import attention

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=int(os.environ["RANK"]),
                            world_size=int(os.environ["WORLD_SIZE"]))  # fmt: skip
    q, k, v, cu = problem()
    k_cache, v_cache = k.view(2, 15, 2, 64), v.view(2, 15, 2, 64)
    lens = torch.tensor([15, 9], dtype=torch.int32)
    attention.flash_attn_with_kvcache(q[:2].unsqueeze(1), k_cache, v_cache, cache_seqlens=lens, causal=True)
    print(json.dumps({"step": "kvcache", "choices": attention.check_ranks()[dist.get_rank()]}), flush=True)
    attention.flash_attn_varlen_func(q, k, v, cu, cu, 23, 23, causal=True)
    try:
        verdict = {"agree": attention.check_ranks()[dist.get_rank()]}
    except attention.RanksDisagreeError as e:
        verdict = {"error": str(e)}
    print(json.dumps({"step": "varlen", **verdict}), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    {"hub": hub, "gloo": gloo}[sys.argv[1]](Path(sys.argv[2]))
