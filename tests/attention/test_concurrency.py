"""Concurrency: tensor-parallel ranks loading one local kernel at once; threads resolving at once."""

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

from accelbridge import attention, platforms

from .conftest import varlen_problem
from .hubkernels import build_local_kernel

RANK = textwrap.dedent("""
    import hashlib, os, sys, time
    from pathlib import Path
    go = Path(sys.argv[1])
    import torch
    from accelbridge import attention
    while not go.exists():  # every rank starts resolving at the same moment
        time.sleep(0.005)
    g = torch.Generator().manual_seed(1234)
    cu = torch.tensor([0, 7, 30], dtype=torch.int32)
    q, k, v = (torch.randn(30, h, 64, generator=g).to(torch.bfloat16) for h in (8, 2, 2))
    out = attention.flash_attn_varlen_func(q, k, v, cu, cu, 23, 23, causal=True, return_softmax_lse=True)[0]
    print(attention.resolve("fa3.varlen").selected, hashlib.sha256(out.float().numpy().tobytes()).hexdigest())
""")


@pytest.mark.deep  # eight processes importing torch
def test_eight_ranks_load_the_same_local_kernel_at_once(tmp_path):
    kernel_dir = build_local_kernel(tmp_path)
    (tmp_path / "tp.yaml").write_text(textwrap.dedent(f"""
        schema: 1
        platform: cpu
        providers:
          local-fa3:
            source: {{path: {kernel_dir}}}
            ops:
              fa3.varlen:
                function: flash_attn_varlen_func
                adapt: {{rename: {{return_softmax_lse: return_attn_probs}}}}
        order: {{fa3.varlen: [local-fa3, reference]}}
        """))  # fmt: skip
    env = {
        **os.environ,
        "ACCELBRIDGE_SIMULATE": "cpu",  # the ranks run on the CPU platform on any machine
        "ACCELBRIDGE_CATALOG_PATH": str(tmp_path / "tp.yaml"),
        "PYTHONWARNINGS": "error::Warning",
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")]),
    }
    go = tmp_path / "go"
    ranks = [subprocess.Popen([sys.executable, "-c", RANK, str(go)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(8)]  # fmt: skip
    time.sleep(1.0)
    go.touch()
    results = []
    for p in ranks:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
        results.append(out.split())
    assert {r[0] for r in results} == {"local-fa3"}, results
    assert len({r[1] for r in results}) == 1, "every rank computed the same bytes"


def race(n, fn):
    """Run fn in n threads released together; returns results, raises the first error."""
    barrier, results, errors = threading.Barrier(n), [], []

    def worker():
        try:
            barrier.wait()
            results.append(fn())
        except Exception as e:  # collected: a thread's failure must fail the test
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    if errors:
        raise errors[0]
    assert len(results) == n, "a thread hung"
    return results


@pytest.mark.filterwarnings("ignore::accelbridge.attention.ProviderLoadWarning")
def test_threads_resolving_at_once_agree(fixture_providers, rng):
    q, k, v, cu_q, cu_k = varlen_problem(rng, [5, 17], [5, 17])

    def call():
        out = attention.flash_attn_varlen_func(q, k, v, cu_q, cu_k, 17, 17, causal=True)
        return attention.resolve("fa3.varlen").selected, out

    with platforms.simulated("cuda:sm90"):
        expected = attention.flash_attn_varlen_func(q, k, v, cu_q, cu_k, 17, 17, causal=True)
        for _ in range(3):
            attention.reset()
            results = race(8, call)
            assert {sel for sel, _ in results} == {"sgl-kernel"}
            assert all(torch.equal(out, expected) for _, out in results)
