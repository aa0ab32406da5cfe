"""Hub kernels of the catalogs: pin them in a lock file, download them, load only what is locked.

The lock file is `kernels`' own format (``$ACCELBRIDGE_CACHE_DIR/kernels.lock``), written by
``accelbridge lock`` through ``kernels``' locking code; when it exists, a hub provider loads
the locked commit and nothing else. Trust: ``trust_remote_code`` is granted to exactly the
repositories a catalog marks ``trusted: true``; others load only from the organisations
``kernels`` itself trusts.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accelbridge import env
from accelbridge.attention import kernels_compat, nodelock
from accelbridge.errors import AccelbridgeError, summary


class LockError(AccelbridgeError):
    """The lock file is unreadable, stale, or could not be written; names the file and the fix."""


NETWORK_HINT = ("lock and download need huggingface.co; on a machine without it, copy kernels.lock and the "
                "Hugging Face cache (HF_HOME) from one that has it")  # fmt: skip


def cache_dir() -> Path:
    return Path(env.get("ACCELBRIDGE_CACHE_DIR") or Path.home() / ".cache" / "accelbridge")


def error_text(repo: str, exc: BaseException) -> str:
    """One line for a hub failure, the network cause first; never the advice to trust remote code.

    `kernels` reports an unreachable hub as "could not verify publisher trust status. Set
    trust_remote_code=True ...": the cause is the network, and trusting code is no fix for it.
    """
    text = summary(exc)
    if "could not verify publisher trust status" in text:
        return (f"the hub could not be reached to check {repo}'s publisher (network unreachable or blocked); "
                "where the hub is reachable run `accelbridge download` (or `accelbridge lock`), "
                "then load offline")  # fmt: skip
    return text


def lock_file() -> Path:
    return cache_dir() / "kernels.lock"


def fetch_lock(repo: str) -> contextlib.AbstractContextManager[Path]:
    """Node-wide lock around fetching and loading ``repo``: one rank downloads, the others wait, then load it.

    ``$ACCELBRIDGE_CACHE_DIR/locks/hub--ORG--REPO.lock`` (one per repository, whatever its version).
    """
    path = cache_dir() / "locks" / ("hub--" + re.sub(r"[^A-Za-z0-9._-]+", "--", repo) + ".lock")
    return nodelock.held(path, f"hub kernel {repo}")


@dataclass
class HubKernel:
    """One hub repository at one version or revision, and the catalog providers that use it."""

    repo: str
    version: int | None
    revision: str | None
    trusted: bool = False
    providers: list[str] = field(default_factory=list)  # "platform:provider"

    @property
    def spec(self) -> str:
        return f"version {self.version}" if self.version is not None else f"revision {self.revision}"

    def dependency(self) -> Any:
        return kernels_compat.dependency(self.repo, self.revision, self.version)

    def trust(self) -> list[str] | bool:
        return [self.repo] if self.trusted else False


def hub_kernels(platform_names: list[str] | None = None) -> list[HubKernel]:
    """Every hub source in the (merged, overlaid) catalogs of these platforms (default: all known)."""
    from accelbridge.kernels_catalog import load
    from accelbridge.platforms import known_platforms

    found: dict[tuple[str, int | None, str | None], HubKernel] = {}
    for name in platform_names or known_platforms():
        catalog = load(name)
        for pid, provider in catalog.providers.items():
            src = provider.source
            if src.kind != "hub":
                continue
            key = (src.target, src.version, src.revision)
            hk = found.setdefault(key, HubKernel(src.target, src.version, src.revision))
            hk.trusted = hk.trusted or provider.trusted
            hk.providers.append(f"{name}:{pid}")
    return list(found.values())


# -- reading the lock --------------------------------------------------------------------------------
def read_locks(path: Path) -> Any:
    try:
        return kernels_compat.locks_from_json(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise LockError(f"{path} is not a valid kernels lock file ({e}); delete it or run `accelbridge lock`") from None


def locked_commit(repo: str, version: int | None, revision: str | None, path: Path) -> str:
    """The commit the lock pins for this catalog source; LockError when corrupt, missing or stale."""
    locks = read_locks(path)
    entries = [(dep, lk) for dep, lk in locks.items() if dep.repo_id == repo]
    if not entries:
        raise LockError(f"{repo} is not in {path}; run `accelbridge lock` to add it")
    wanted = HubKernel(repo, version, revision).dependency()
    for dep, lk in entries:
        if dep == wanted:
            return lk.commit
    pinned = ", ".join(_describe_version(dep.version) for dep, _ in entries)
    want = f"version {version}" if version is not None else f"revision {revision}"
    raise LockError(f"{path} pins {repo} at {pinned} but the catalog asks for {want} (stale lock); "
                    "run `accelbridge lock`")  # fmt: skip


def _describe_version(v: Any) -> str:
    if hasattr(v, "version"):
        return f"version {v.version}"
    return f"revision {getattr(v, 'revision', v)}"


# -- writing the lock ------------------------------------------------------------------------------
def lock(
    path: Path | None = None,
    progress: Callable[[str], None] = print,
    resolve: Callable[[Any], dict[Any, Any]] = kernels_compat.lock_tree,
) -> Path:
    """Resolve every catalog hub kernel (and its kernel dependencies) to a commit; write the lock.

    All or nothing: if any kernel cannot be resolved, nothing is written and the error lists each.
    """
    path = path or lock_file()
    kernels_ = hub_kernels()
    if not kernels_:
        raise LockError("no hub provider in the catalogs: nothing to lock")
    merged: dict[Any, Any] = {}
    failures = []
    for n, hk in enumerate(kernels_, 1):
        progress(f"[{n}/{len(kernels_)}] resolving {hk.repo} ({hk.spec}) for {', '.join(hk.providers)} ...")
        t0 = time.perf_counter()
        try:
            resolved = resolve(hk.dependency())
        except Exception as e:  # network, trust, missing repo: reported per kernel
            failures.append(f"{hk.repo} ({hk.spec}): {error_text(hk.repo, e)}")
            progress(f"      failed: {failures[-1]}")
            continue
        merged.update(resolved)
        commit = next((lk.commit for dep, lk in resolved.items() if dep.repo_id == hk.repo), "?")
        progress(f"      locked at {commit} ({time.perf_counter() - t0:.1f} s)")
    if failures:
        raise LockError(f"could not lock {len(failures)} of {len(kernels_)} hub kernel(s); {path} left unchanged:\n  "
                        + "\n  ".join(failures) + f"\n  hint: {NETWORK_HINT}")  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(kernels_compat.locks_to_json(merged) + "\n")
    os.replace(tmp, path)  # atomic: readers see the old lock or the new one, never half
    progress(f"wrote {path} ({len(merged)} kernel(s))")
    return path


# -- downloading -----------------------------------------------------------------------------------
def _install_with_kernels(repo: str, revision: str | None, version: int | None, trust: Any) -> Path:
    return kernels_compat.package().install_kernel(repo, revision=revision, version=version, trust_remote_code=trust)


def download(
    progress: Callable[[str], None] = print,
    install: Callable[[str, str | None, int | None, Any], Path] = _install_with_kernels,
) -> list[Path]:
    """Fetch the build variant for this system of every catalog hub kernel (the locked commit if locked)."""
    path = lock_file()
    kernels_ = hub_kernels()
    done, failures = [], []
    for n, hk in enumerate(kernels_, 1):
        revision, version, how = hk.revision, hk.version, hk.spec
        if path.exists():
            revision, version = locked_commit(hk.repo, hk.version, hk.revision, path), None
            how = f"locked commit {revision}"
        progress(f"[{n}/{len(kernels_)}] downloading {hk.repo} ({how}) ...")
        t0 = time.perf_counter()
        try:
            with fetch_lock(hk.repo):  # ranks loading it now wait for this download, and the reverse
                where = install(hk.repo, revision, version, hk.trust())
        except Exception as e:
            failures.append(f"{hk.repo} ({how}): {error_text(hk.repo, e)}")
            progress(f"      failed: {failures[-1]}")
            continue
        done.append(Path(where))
        progress(f"      {where} ({time.perf_counter() - t0:.1f} s)")
    if failures:
        raise LockError(f"could not download {len(failures)} of {len(kernels_)} hub kernel(s):\n  "
                        + "\n  ".join(failures) + f"\n  hint: {NETWORK_HINT}")  # fmt: skip
    return done
