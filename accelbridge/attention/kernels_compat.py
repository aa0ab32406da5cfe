"""Every use of the `kernels` package's private names, in one place, with the versions it was written for.

``kernels`` has no public API for lock files and dependency resolution; the names below are
read from 0.17.x. A version outside ``SUPPORTED`` raises ``KernelsVersionError`` naming it and
the fix, instead of an AttributeError deep in `accelbridge lock`.
"""

from __future__ import annotations

from typing import Any

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from accelbridge.errors import AccelbridgeError

SUPPORTED = SpecifierSet(">=0.17,<0.18")  # keep in step with pyproject's dependency on kernels


class KernelsVersionError(AccelbridgeError, ImportError):
    """The installed `kernels` is not a version accelbridge's lock and hub code was written for."""


class KernelsMissingError(AccelbridgeError, ImportError):
    """Hub and local kernel directories load through `kernels`, an optional dependency (extra ``hub``)."""


INSTALL_HINT = "pip install 'accelbridge[hub]'"


def package() -> Any:
    """The `kernels` module, or KernelsMissingError saying how to install it."""
    try:
        import kernels
    except ImportError:
        raise KernelsMissingError(f"the `kernels` package is not installed; hub kernels and local kernel "
                                  f"directories load through it: {INSTALL_HINT}") from None  # fmt: skip
    return kernels


def _checked() -> None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("kernels")
    except PackageNotFoundError:
        package()  # raises with the install hint
        raise
    if not SUPPORTED.contains(Version(installed), prereleases=True):
        raise KernelsVersionError(f"kernels {installed} is installed; accelbridge's hub lock support needs kernels"
                                  f"{SUPPORTED} (pip install 'kernels{SUPPORTED}')")  # fmt: skip


def dependency(repo: str, revision: str | None, version: int | None) -> Any:
    """kernels' KernelDependency for a repository at a revision or version."""
    _checked()
    from kernels._rust import KernelDependency
    from kernels._versions import revision_or_version

    return KernelDependency(repo, revision_or_version(revision=revision, version=version))


def locks_from_json(text: str) -> Any:
    _checked()
    from kernels._rust import KernelLocks

    return KernelLocks.from_json(text)


def locks_to_json(locks: dict[Any, Any]) -> str:
    _checked()
    from kernels._rust import KernelLocks

    return KernelLocks(locks).to_json()


def lock_tree(dep: Any) -> dict[Any, Any]:
    """Resolve a dependency (and its kernel dependencies) to commits on the hub."""
    _checked()
    from kernels.hf_hub import _get_hf_api
    from kernels.locking import lock_kernel_tree

    return lock_kernel_tree(dep, api=_get_hf_api())
