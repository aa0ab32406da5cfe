"""Many ranks, one answer: each rank resolves on its own device, one rank per node fetches, the ranks agree.

The multi-process tests start real processes (tests/attention/rank_worker.py): a gloo process group
for check_ranks, and ranks racing to download one hub kernel through a fake download that records
who fetched.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import pytest
import torch

from accelbridge import attention, platforms
from accelbridge.attention import facade, hub, nodelock
from accelbridge.ops import reference as ref

from .conftest import varlen_problem

ROOT = Path(__file__).parents[2]
WORKER = Path(__file__).with_name("rank_worker.py")
MIXED = "cuda:archs=sm90,sm100"  # device 1 is of another arch than device 0


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCELBRIDGE_") and k not in ("RANK", "LOCAL_RANK",
           "WORLD_SIZE", "SGLANG_USE_SGL_FA3_KERNEL", "LOCAL_KERNELS")}  # fmt: skip
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**env, **extra}


# -- per-rank device ------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::accelbridge.attention.ProviderLoadWarning")  # hub kernels not downloaded
def test_each_rank_resolves_against_its_own_device(fixture_providers, monkeypatch, rng):
    """sgl-kernel serves sm90 only: on a node of an sm90 and an sm100, rank 0 gets it and rank 1 does not."""
    q, k, v, cu_q, cu_k = varlen_problem(rng, [5, 17], [5, 17])
    expected = ref.flash_attn_varlen_func(q, k, v, cu_q, cu_k, causal=True)
    seen = {}
    for local_rank in ("0", "1"):
        monkeypatch.setenv("LOCAL_RANK", local_rank)
        attention.reset()
        with platforms.simulated(MIXED):
            out = attention.flash_attn_varlen_func(q, k, v, cu_q, cu_k, 17, 17, causal=True)
            r = attention.resolve("fa3.varlen")
            seen[local_rank] = (r.selected, r.device, r.arch)
            assert f"device: cuda:{local_rank} (local rank {local_rank})" in attention.explain("fa3.varlen")
        torch.testing.assert_close(out.float(), expected.float(), atol=2e-2, rtol=2e-2)
    assert seen == {"0": ("sgl-kernel", "cuda:0", "sm90"), "1": ("torch", "cuda:1", "sm100")}
    with platforms.simulated(MIXED):
        refused = attention.chain("fa3.varlen", 1).candidate(0).reasons
    assert refused == ["needs arch >=sm80, <sm100, this is sm100"]


def test_the_first_calls_tensors_choose_the_device(fixture_providers):
    """A process driving cuda:1 without LOCAL_RANK: its first call's tensors say which device resolves."""
    on_1 = types.SimpleNamespace(device=torch.device("cuda", 1))
    with platforms.simulated("cuda:sm90:devices=2"):
        facade._resolver("flash_attn_varlen_func", "ver")(3, (on_1,))
        assert [key for key in facade._chains if key[0] == "fa3.varlen"] == [("fa3.varlen", 1)]


# -- one fetch per node ---------------------------------------------------------------------------
def _hub_setup(tmp_path):
    (tmp_path / "hub.yaml").write_text(textwrap.dedent("""
        schema: 1
        platform: cpu
        providers:
          hub-fa3:
            source: {hub: acme/flash-attn3, version: 1}
            ops:
              fa3.varlen:
                function: flash_attn_varlen_func
                adapt: {rename: {return_softmax_lse: return_attn_probs}}
        order: {fa3.varlen: [hub-fa3, reference]}
        """))  # fmt: skip
    log = tmp_path / "fetches"
    log.touch()
    return _env(ACCELBRIDGE_PLATFORM="cpu", ACCELBRIDGE_CATALOG_PATH=str(tmp_path / "hub.yaml"),
                ACCELBRIDGE_CACHE_DIR=str(tmp_path / "cache"), FAKE_HUB=str(tmp_path / "hub"), FETCH_LOG=str(log),
                HF_HUB_OFFLINE="1", PYTHONWARNINGS="error::Warning"), log  # fmt: skip


def _rank(env, go, stderr_file, **extra):
    with stderr_file.open("w") as err:  # a file, read while the rank runs
        return subprocess.Popen([sys.executable, str(WORKER), "hub", str(go)], env={**env, **extra},
                                stdout=subprocess.PIPE, stderr=err, text=True)  # fmt: skip


def _until(condition, seconds=60.0):
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def test_one_rank_fetches_the_others_wait_and_a_killed_holder_hangs_nobody(tmp_path):
    """The first rank's download is killed halfway; of the two ranks waiting on it, exactly one fetches
    once the OS has released the dead holder's lock, and both load the same files and compute alike."""
    env, log = _hub_setup(tmp_path)
    holder = _rank(env, tmp_path / "go-holder", tmp_path / "holder.err", FETCH_SECONDS="600")
    waiters = [_rank(env, tmp_path / "go", tmp_path / f"rank{n}.err", FETCH_SECONDS="0.5") for n in range(2)]
    (tmp_path / "go-holder").touch()
    _until(lambda: log.read_text().split() == [str(holder.pid)])  # the holder is downloading, under the lock
    (tmp_path / "go").touch()
    lock_file = tmp_path / "cache" / "locks" / "hub--acme--flash-attn3.lock"
    waiting = f"waiting for hub kernel acme/flash-attn3: another process is fetching it (lock {lock_file}, held by " \
              f"pid {holder.pid}"  # fmt: skip
    _until(lambda: all(waiting in (tmp_path / f"rank{n}.err").read_text() for n in range(2)))
    os.kill(holder.pid, signal.SIGKILL)  # mid-download: no cleanup runs, the OS drops its lock
    holder.wait(timeout=30)
    results = []
    for n, p in enumerate(waiters):
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, (tmp_path / f"rank{n}.err").read_text()
        results.append(out.split())
    fetched = log.read_text().split()
    assert len(fetched) == 2 and fetched[0] == str(holder.pid), fetched  # the killed one, then exactly one more
    assert fetched[1] in {str(p.pid) for p in waiters}
    assert {r[0] for r in results} == {"hub-fa3"} and len({r[1] for r in results}) == 1, results
    assert not hub.lock_file().exists()  # no kernels.lock: the plain get_kernel path, under the node-wide lock


def test_a_hung_holder_is_an_error_naming_the_lock_and_its_pid(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELBRIDGE_CACHE_DIR", str(tmp_path))
    path = tmp_path / "locks" / "hub--acme--x.lock"
    hold = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from accelbridge.attention import nodelock
        with nodelock.held(Path({str(path)!r}), "hub kernel acme/x"):
            print("held", flush=True)
            time.sleep(600)
    """)
    holder = subprocess.Popen([sys.executable, "-c", hold], env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(nodelock.LockTimeoutError) as e:
            with nodelock.held(path, "hub kernel acme/x", seconds=0.3):
                pass
        text = str(e.value)
        assert f"lock {path} is held by pid {holder.pid} on " in text and "hub kernel acme/x" in text
        assert "ACCELBRIDGE_LOCK_TIMEOUT=SECONDS" in text
    finally:
        holder.kill()
        holder.wait()
    with nodelock.held(path, "hub kernel acme/x", seconds=5):  # its death released it
        assert path.with_suffix(".holder").read_text().startswith(f"pid {os.getpid()} on ")
    assert not path.with_suffix(".holder").exists()


def test_a_bad_lock_timeout_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv("ACCELBRIDGE_LOCK_TIMEOUT", "soon")
    with pytest.raises(Exception, match=r"ACCELBRIDGE_LOCK_TIMEOUT='soon': expected a positive number of seconds"):
        with nodelock.held(tmp_path / "x.lock", "x"):
            pass


# -- agreement ------------------------------------------------------------------------------------
def test_ranks_agree_and_a_rank_pinned_otherwise_is_named(tmp_path):
    """Three gloo ranks on a simulated node of three GPUs; rank 2 pins fa3.varlen to the reference."""
    overlay = tmp_path / "torch-first.yaml"  # hermetic: the torch provider serves, whatever this machine has
    overlay.write_text("schema: 1\nplatform: cuda\norder:\n  fa3.varlen: [torch, reference]\n"
                       "  fa3.kvcache: [torch, reference]\n")  # fmt: skip
    env = _env(ACCELBRIDGE_SIMULATE="cuda:sm90:devices=3", ACCELBRIDGE_CATALOG_PATH=str(overlay), WORLD_SIZE="3")
    store = tmp_path / "store"
    ranks = []
    for rank in range(3):
        pin = {"ACCELBRIDGE_PROVIDERS": "fa3.varlen=reference"} if rank == 2 else {}
        ranks.append(subprocess.Popen([sys.executable, str(WORKER), "gloo", str(store)], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True,
                                      env={**env, **pin, "RANK": str(rank), "LOCAL_RANK": str(rank)}))  # fmt: skip
    lines = []
    for p in ranks:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        lines.append([json.loads(line) for line in out.splitlines()])
    for rank, (kvcache, varlen) in enumerate(lines):
        choice = kvcache["choices"]["fa3.kvcache"]
        assert (choice["provider"], choice["device"], choice["arch"]) == ("torch", f"cuda:{rank}", "sm90")
        assert choice["version"] == f"accelbridge 0.1.0, torch {torch.__version__}"
        assert "agree" not in varlen, "every rank must raise, rank 2's difference included"
        assert varlen["error"].startswith("ranks disagree on 1 resolution(s)")
        assert ("fa3.varlen: rank 2 (cuda:2 sm90, local rank 2) chose reference (accelbridge 0.1.0) but rank 0 "
                f"(cuda:0 sm90, local rank 0) chose torch (accelbridge 0.1.0, torch {torch.__version__})") \
            in varlen["error"]  # fmt: skip


def test_one_process_without_a_group_agrees_with_itself(rng):
    q, k, v, cu_q, cu_k = varlen_problem(rng, [3], [3])
    attention.flash_attn_varlen_func(q, k, v, cu_q, cu_k, 3, 3)
    version = f"accelbridge 0.1.0, torch {torch.__version__}"
    assert attention.check_ranks() == {0: {"fa3.varlen": {"provider": "torch", "version": version, "device": "cpu",
                                                          "arch": "cpu"}}}  # fmt: skip


def test_a_lock_directory_that_cannot_be_written_is_an_error_naming_it(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(nodelock.NodeLockError, match=r"cannot take the lock .*not-a-directory/x\.lock for x: .*"
                                                     r"set ACCELBRIDGE_CACHE_DIR to a writable directory"):  # fmt: skip
        with nodelock.held(blocker / "x.lock", "x"):
            pass
