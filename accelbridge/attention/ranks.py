"""Many ranks, one answer: every rank of a process group resolved every op to the same provider and version.

A rank that saw another environment (a pin, a missing package, another kernel version) would
compute with another kernel and the engine's ranks would silently disagree. ``check_ranks()``
is opt-in (call it once after the first forward pass): it gathers each rank's choices over
``torch.distributed`` (``all_gather_object``, a collective: every rank of the group must call it)
and raises ``RanksDisagreeError`` naming each rank, op and both choices that differ from rank 0's.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
from typing import Any

from accelbridge import __version__, ops, platforms
from accelbridge.attention import facade
from accelbridge.attention.errors import ResolutionError
from accelbridge.kernels_catalog import Provider
from accelbridge.platforms import devices


class RanksDisagreeError(ResolutionError):
    """Ranks of one process group resolved an op to different providers or versions."""


def provider_version(provider: Provider) -> str:
    """What makes two ranks' copies of a provider the same code: package version, hub commit, or accelbridge's."""
    src = provider.source
    if src.kind == "builtin":
        if src.target == "reference":
            return f"accelbridge {__version__}"
        import torch

        return f"accelbridge {__version__}, torch {torch.__version__}"
    if src.kind == "module":
        return _module_version(src.target, src.package)
    if src.kind == "hub":
        pin = f"version {src.version}" if src.version is not None else f"revision {src.revision}"
        return f"{pin} @ {_loaded_commit(src.target) or 'commit unknown'}"
    return f"path {src.target}"


def _module_version(module: str, package: str | None) -> str:
    top = module.split(".")[0]
    names = [package] if package else importlib.metadata.packages_distributions().get(top, [])
    for name in names:
        try:
            return f"{name} {importlib.metadata.version(name)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    loaded = sys.modules.get(top)
    return f"{top} {getattr(loaded, '__version__', 'version unknown')}"


def _loaded_commit(repo: str) -> str | None:
    """The commit of the hub snapshot a loaded module of ``repo`` came from (its path in the HF cache says it)."""
    pattern = re.compile(re.escape("models--" + repo.replace("/", "--")) + r"[/\\]snapshots[/\\]([0-9a-f]{40})")
    for module in list(sys.modules.values()):
        match = pattern.search(getattr(module, "__file__", "") or "")
        if match:
            return match.group(1)
    return None


def choices(op_ids: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """This process's choice per op: {op: {"provider", "version", "device", "arch"}}; resolves ops not yet resolved.

    ``op_ids`` default: the ops this process has resolved so far.
    """
    platform = platforms.current()
    found = {}
    for op in facade.resolved_ops() if op_ids is None else op_ids:
        chain = facade.chain(op)
        first = chain.first_viable()
        pid = chain.ids[first] if first is not None else None
        found[op] = {
            "provider": pid,
            "version": provider_version(chain.catalog.providers[pid]) if pid else None,
            "device": devices.label(platform, chain.device),
            "arch": platform.arch(chain.device).name,
        }
    return found


def check_ranks(group: Any = None, op_ids: list[str] | None = None) -> dict[int, dict[str, dict[str, Any]]]:
    """Every rank of ``group`` (default: the whole world) resolved each op to the same provider and version.

    A collective: every rank of the group calls it. ``op_ids`` default: every op some rank has
    resolved so far (a rank that has not resolved one resolves it now). Returns {rank: choices};
    raises ``RanksDisagreeError`` naming each rank, op and both choices that differ from rank 0's.
    Without an initialised process group there is one rank, which agrees with itself.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return {0: choices(op_ids)}
    size = dist.get_world_size(group)
    if op_ids is None:
        seen: list[Any] = [None] * size
        dist.all_gather_object(seen, facade.resolved_ops(), group=group)
        op_ids = [op for op in ops.ids() if any(op in s for s in seen)]
    mine = {"rank": dist.get_rank(), **devices.launch(), "choices": choices(op_ids)}
    gathered: list[Any] = [None] * size
    dist.all_gather_object(gathered, mine, group=group)
    by_rank = {g["rank"]: g for g in gathered}
    problems = _differences(by_rank)
    if problems:
        raise RanksDisagreeError(f"ranks disagree on {len(problems)} resolution(s); each rank must run the same "
                                 "kernels (check the ranks' ACCELBRIDGE_* variables, installed packages and "
                                 "kernels.lock):\n  " + "\n  ".join(problems))  # fmt: skip
    return {rank: g["choices"] for rank, g in by_rank.items()}


def _differences(by_rank: dict[int, dict[str, Any]]) -> list[str]:
    first = min(by_rank)
    base = by_rank[first]
    problems = []
    for rank, g in sorted(by_rank.items()):
        for op, mine in g["choices"].items():
            theirs = base["choices"][op]
            if (mine["provider"], mine["version"]) != (theirs["provider"], theirs["version"]):
                problems.append(f"{op}: rank {rank} {_describe(g, mine)} but rank {first} {_describe(base, theirs)}")
    return problems


def _describe(g: dict[str, Any], choice: dict[str, Any]) -> str:
    where = f"{choice['device']} {choice['arch']}" + (f", local rank {g['local_rank']}" if "local_rank" in g else "")
    served = f"{choice['provider']} ({choice['version']})" if choice["provider"] else "no provider"
    return f"({where}) chose {served}"
