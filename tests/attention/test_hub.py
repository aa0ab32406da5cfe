"""Hub kernels: lock, download, trust; the lock file is `kernels`' own format, read back by `kernels`."""

import json
import sys
import textwrap

import pytest
from kernels._rust import KernelLock
from kernels.locking import get_locked_kernel_revision

from accelbridge import cli, platforms
from accelbridge.attention import hub, providers
from accelbridge.kernels_catalog import Source

COMMITS = {"kernels-community/sgl-flash-attn3": "1" * 40, "kernels-community/flash-attn3": "2" * 40}


def fake_resolve(dep):
    """Stands in for the hub round trip only: returns what kernels' lock_kernel_tree returns."""
    return {dep: KernelLock(COMMITS[dep.repo_id])}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def trusted_overlay(tmp_path, monkeypatch):
    (tmp_path / "trust.yaml").write_text(textwrap.dedent("""
        schema: 1
        platform: cuda
        providers:
          vendor-fa:
            source: {hub: acme/fast-attention, revision: 0123456789abcdef0123456789abcdef01234567}
            trusted: true
            ops:
              fa3.varlen: {function: flash_attn_varlen_func}
        """))  # fmt: skip
    monkeypatch.setenv("ACCELBRIDGE_CATALOG_PATH", str(tmp_path / "trust.yaml"))
    platforms.reset()


def test_hub_kernels_of_the_catalogs(tmp_path, monkeypatch):
    found = {hk.repo: hk for hk in hub.hub_kernels()}
    assert set(found) == {"kernels-community/sgl-flash-attn3", "kernels-community/flash-attn3"}
    assert found["kernels-community/flash-attn3"].version == 1
    assert found["kernels-community/sgl-flash-attn3"].revision == "v1"
    assert found["kernels-community/flash-attn3"].providers == ["cuda:hub-fa3"]
    assert not any(hk.trusted for hk in found.values())
    trusted_overlay(tmp_path, monkeypatch)
    acme = {hk.repo: hk for hk in hub.hub_kernels()}["acme/fast-attention"]
    assert acme.trusted and acme.trust() == ["acme/fast-attention"]


def test_lock_writes_kernels_format_atomically(cache):
    lines = []
    path = hub.lock(progress=lines.append, resolve=fake_resolve)
    assert path == cache / "kernels.lock"
    for repo, commit in COMMITS.items():
        locks, dep = get_locked_kernel_revision(repo, path)  # read back by `kernels` itself
        assert locks[dep].commit == commit
    assert hub.locked_commit("kernels-community/flash-attn3", 1, None, path) == "2" * 40
    assert lines[0].startswith("[1/2] resolving kernels-community/sgl-flash-attn3 (revision v1) for cuda:hub-sgl-fa3")
    assert lines[-1] == f"wrote {path} (2 kernel(s))"
    assert not list(cache.glob(".*tmp")), "no temporary file left behind"


def test_lock_is_all_or_nothing(cache):
    cache.mkdir()
    (cache / "kernels.lock").write_text("previous lock")

    def half_offline(dep):
        if dep.repo_id.endswith("sgl-flash-attn3"):
            raise OSError("Cannot reach huggingface.co")
        return fake_resolve(dep)

    with pytest.raises(hub.LockError) as e:
        hub.lock(progress=lambda _: None, resolve=half_offline)
    assert "could not lock 1 of 2 hub kernel(s)" in str(e.value) and "left unchanged" in str(e.value)
    assert "kernels-community/sgl-flash-attn3 (revision v1): OSError: Cannot reach huggingface.co" in str(e.value)
    assert "hint: lock and download need huggingface.co" in str(e.value)
    assert (cache / "kernels.lock").read_text() == "previous lock"


def test_lock_cli_offline_fails_cleanly(cache, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli.main(["lock"]) == 2
    captured = capsys.readouterr()
    assert "[1/2] resolving kernels-community/sgl-flash-attn3" in captured.out
    assert "accelbridge: error: could not lock 2 of 2 hub kernel(s)" in captured.err
    assert not (cache / "kernels.lock").exists()


def test_download_uses_the_locked_commit_and_the_trust_flag(cache, tmp_path, monkeypatch):
    trusted_overlay(tmp_path, monkeypatch)
    hub.lock(progress=lambda _: None, resolve=lambda dep: {
        dep: KernelLock(COMMITS.get(dep.repo_id, "3" * 40))})  # fmt: skip
    calls, lines = [], []

    def install(repo, revision, version, trust):
        calls.append((repo, revision, version, trust))
        return tmp_path / repo

    hub.download(progress=lines.append, install=install)
    assert ("kernels-community/flash-attn3", "2" * 40, None, False) in calls
    assert ("acme/fast-attention", "3" * 40, None, ["acme/fast-attention"]) in calls
    assert any("downloading kernels-community/flash-attn3 (locked commit 2222" in line for line in lines)


def test_download_without_lock_uses_catalog_pins(cache, tmp_path):
    calls = []
    hub.download(progress=lambda _: None, install=lambda *a: calls.append(a) or tmp_path)
    assert ("kernels-community/flash-attn3", None, 1, False) in calls
    assert ("kernels-community/sgl-flash-attn3", "v1", None, False) in calls


def test_trust_remote_code_only_for_trusted_entries(monkeypatch, cache):
    """The real kernels.get_kernel, observed: what trust it is asked to grant."""
    import kernels

    seen = []
    real = kernels.get_kernel

    def observe(repo, **kw):
        seen.append((repo, kw["trust_remote_code"]))
        return real(repo, **kw)

    monkeypatch.setattr(kernels, "get_kernel", observe)
    for trusted in (False, True):
        providers.clear()
        with pytest.raises(providers.LoadFailure), pytest.warns(providers.ProviderLoadWarning, match="acme/fast"):
            providers.load_module("p", Source("hub", "acme/fast-attention", revision="a" * 40), trusted, None, True)
    assert seen == [("acme/fast-attention", False), ("acme/fast-attention", ["acme/fast-attention"])]


def test_with_a_lock_only_the_locked_revision_loads(cache, monkeypatch):
    import kernels

    hub.lock(progress=lambda _: None, resolve=fake_resolve)
    asked = []
    monkeypatch.setattr(kernels, "get_kernel", lambda *a, **k: asked.append("unlocked") or None)
    real_locked = kernels.get_locked_kernel
    monkeypatch.setattr(kernels, "get_locked_kernel",
                        lambda repo, **kw: asked.append(("locked", repo)) or real_locked(repo, **kw))  # fmt: skip
    failed = "at locked commit 2{40} could not be loaded.*accelbridge download"
    with pytest.raises(providers.LoadFailure, match=failed), pytest.warns(providers.ProviderLoadWarning, match=failed):
        providers.load_module("hub-fa3", Source("hub", "kernels-community/flash-attn3", version=1), False, None, True)
    assert asked == [("locked", "kernels-community/flash-attn3")]


def test_lock_json_is_what_kernels_writes(cache):
    hub.lock(progress=lambda _: None, resolve=fake_resolve)
    data = json.loads((cache / "kernels.lock").read_text())
    assert {e["dependency"]["repo-id"] for e in data} == set(COMMITS)
    assert all(len(e["lock"]["commit"]) == 40 for e in data)


def test_kernels_outside_the_supported_range_is_a_clear_error(monkeypatch):
    import importlib.metadata

    from accelbridge.attention import kernels_compat

    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.99.0")
    with pytest.raises(kernels_compat.KernelsVersionError, match=r"kernels 0.99.0 is installed.*<0.18"):
        kernels_compat.dependency("org/repo", "v1", None)
    from pathlib import Path

    import tomllib

    extras = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    from packaging.specifiers import SpecifierSet

    for extra in ("hub", "test"):  # the extra users install, and the one the tests run with
        (kernels_dep,) = [d for d in extras[extra] if d.startswith("kernels")]
        assert SpecifierSet(kernels_dep.split("kernels", 1)[1].strip()) == kernels_compat.SUPPORTED


def test_an_unreachable_hub_is_named_as_the_network_and_never_advises_trusting_code():
    from accelbridge.attention import hub as hub_

    e = ValueError("Kernel repository 'org/k' could not verify publisher trust status. Set trust_remote_code=True "
                   "or add the repository ID to the trust_remote_code allowlist")  # fmt: skip
    text = hub_.error_text("org/k", e)
    assert "could not be reached" in text and "network" in text and "trust_remote_code" not in text


def test_kernels_trust_chatter_is_one_info_line_per_repo(caplog):
    import logging

    caplog.set_level(logging.INFO)
    chatty = logging.getLogger("kernels.hf_hub")
    for _ in range(3):
        chatty.warning("Skipping publisher trust check for 'org/chatty' because Hugging Face Hub is in offline mode.")
    ours = [r for r in caplog.records if "org/chatty" in r.getMessage()]
    assert len(ours) == 1 and ours[0].name == "accelbridge" and ours[0].levelno == logging.INFO


def test_without_the_kernels_package_a_hub_provider_names_the_extra(monkeypatch):
    """`kernels` is the optional extra `hub` (43 packages for users who never load a hub kernel)."""
    monkeypatch.setitem(sys.modules, "kernels", None)  # import fails as if not installed
    providers.clear()
    with pytest.raises(providers.LoadFailure, match=r"`kernels` package is not installed.*accelbridge\[hub\]"), \
            pytest.warns(providers.ProviderLoadWarning, match=r"accelbridge\[hub\]"):  # fmt: skip
        providers.load_module("p", Source("hub", "acme/fast-attention", revision="a" * 40), False, None, True)
    providers.clear()
