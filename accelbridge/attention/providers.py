"""Loading providers: a module, a hub kernel, a local kernel directory, or the reference.

A load is attempted once per process per source; a failure is remembered with its reason
and warned about once (``ProviderLoadWarning``), and resolution falls through to the next
candidate.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from accelbridge.attention import hub, kernels_compat
from accelbridge.errors import caller_stacklevel, first_line
from accelbridge.kernels_catalog import Source
from accelbridge.kernels_catalog.schema import BUILTINS


class ProviderLoadWarning(RuntimeWarning):
    """A provider could not be loaded; resolution went on without it."""


class LoadFailure(Exception):
    """Why a provider's source or function could not be obtained (shown by explain)."""


_lock = threading.RLock()
_modules: dict[Any, ModuleType | LoadFailure] = {}
_warned: set[tuple[str, str]] = set()


@contextlib.contextmanager
def _offline(enabled: bool) -> Iterator[None]:
    """Make `kernels` look in the local cache only (what HF_HUB_OFFLINE=1 does), if enabled."""
    if not enabled:
        yield
        return
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


class _TrustChatter(logging.Filter):
    """kernels logs "Skipping publisher trust check for REPO ..." on every offline load: once per repo, at INFO."""

    seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "publisher trust check" not in message:
            return True
        if message not in self.seen:
            self.seen.add(message)
            logging.getLogger("accelbridge").info("kernels: %s", message)
        return False


_KERNELS_LOGGER = logging.getLogger("kernels.hf_hub")
_KERNELS_LOGGER.addFilter(_TrustChatter())


def _load_hub(source: Source, trusted: bool, offline: bool) -> ModuleType:
    """With a lock file, only the locked commit loads (checked against the catalog's pin first)."""
    kernels = _kernels()

    trust = [source.target] if trusted else False
    lock = hub.lock_file()
    # online, ranks of a node would download at once: one fetches under a node-wide lock, the others then load it
    fetching = contextlib.nullcontext() if offline else hub.fetch_lock(source.target)
    with _offline(offline), fetching:
        if lock.exists():
            try:
                commit = hub.locked_commit(source.target, source.version, source.revision, lock)
            except hub.LockError as e:
                raise LoadFailure(str(e)) from None
            try:
                return kernels.get_locked_kernel(source.target, lockfile=lock, trust_remote_code=trust)
            except Exception as e:
                text = first_line(e) or type(e).__name__
                raise LoadFailure(f"hub kernel {source.target} at locked commit {commit} could not be loaded: "
                                  f"{text}; run `accelbridge download`") from None  # fmt: skip
        return kernels.get_kernel(
            source.target, version=source.version, revision=source.revision, trust_remote_code=trust
        )


def _kernels() -> Any:
    try:
        return kernels_compat.package()
    except kernels_compat.KernelsMissingError as e:
        raise LoadFailure(str(e)) from None


def _load_path(source: Source, trusted: bool) -> ModuleType:
    kernels = _kernels()

    path = Path(source.target)
    if not path.is_dir():
        raise LoadFailure(f"local kernel directory {path} does not exist")
    return kernels.get_local_kernel(path, trust_remote_code=[str(path)] if trusted else False)


def reference_module() -> ModuleType:
    """The built-in reference provider: every declared op's reference function, under its own name."""
    from accelbridge import ops

    module = ModuleType("accelbridge.reference", "the op declarations' reference functions")
    for spec in ops.OPS.values():
        if spec.reference is not None:
            setattr(module, spec.reference.__name__, spec.reference)
    return module


def _load(source: Source, trusted: bool, offline: bool) -> ModuleType:
    if source.kind == "builtin":  # catalogs/builtin.yaml's providers: the module each reads its functions from
        return importlib.import_module(BUILTINS[source.target])  # type: ignore[arg-type]
    if source.kind == "module":
        return importlib.import_module(source.target)
    if source.kind == "hub":
        return _load_hub(source, trusted, offline)
    return _load_path(source, trusted)


def describe_failure(source: Source, exc: BaseException, install: str | None) -> str:
    hint = f" (install: {install})" if install else ""
    if isinstance(exc, LoadFailure):
        return str(exc)
    if isinstance(exc, ModuleNotFoundError) and source.kind == "module":
        return f"module {exc.name or source.target!r} not installed{hint}"
    text = first_line(exc)
    what = f"hub kernel {source.target}" if source.kind == "hub" else f"{source.kind} {source.target}"
    if source.kind in ("hub", "path") and "variant" in text.lower():
        detail = " ".join(line.strip() for line in str(exc).splitlines()[1:] if line.strip())
        return f"{what} has no build variant for this system (torch, backend): {text} {detail}".rstrip()
    if source.kind == "hub":
        if "offline" in text.lower() or "not available in the local cache" in text:
            return f"hub kernel {source.target} not in the local cache (offline): {text}; run `accelbridge download`"
        return f"hub kernel {source.target} could not be loaded: {hub.error_text(source.target, exc)}"
    return f"loading {source.describe()} raised {type(exc).__name__}: {exc}{hint}"


def load_module(provider_id: str, source: Source, trusted: bool, install: str | None, offline: bool) -> ModuleType:
    """The provider's module, loaded once per process; raises LoadFailure (warned once)."""
    if source.kind == "builtin" and BUILTINS[source.target] is None:  # built from the declarations each time: an
        return reference_module()  # op registered later is served too
    key = (source, offline)
    with _lock:
        cached = _modules.get(key)
        if cached is None:
            try:
                cached = _load(source, trusted, offline)
            except Exception as e:  # any import-time failure falls through, with its reason
                cached = LoadFailure(describe_failure(source, e, install))
                warn_unavailable(provider_id, str(cached))
            _modules[key] = cached
    if isinstance(cached, LoadFailure):
        raise cached
    return cached


def warn_unavailable(provider_id: str, cause: str) -> None:
    """One ProviderLoadWarning per provider and cause per process, however often it is resolved."""
    with _lock:
        if (provider_id, cause) in _warned:
            return
        _warned.add((provider_id, cause))
    warnings.warn(f"accelbridge: provider {provider_id!r} unavailable: {cause}; trying the next candidate",
                  ProviderLoadWarning, stacklevel=caller_stacklevel())  # fmt: skip


def resolve_function(module: ModuleType, path: str) -> Callable[..., Any]:
    """``flash_attn.flash_attn_varlen_func`` under ``module``, importing submodules as needed."""
    obj: Any = module
    for part in path.split("."):
        try:
            obj = getattr(obj, part)
            continue
        except AttributeError:
            pass
        if isinstance(obj, ModuleType):
            try:
                obj = importlib.import_module(f"{obj.__name__}.{part}")
                continue
            except ModuleNotFoundError:
                pass
            except Exception as e:
                raise LoadFailure(f"importing {obj.__name__}.{part} raised {type(e).__name__}: {e}") from None
        raise LoadFailure(f"{getattr(module, '__name__', module)} has no {path!r}")
    if not callable(obj):
        raise LoadFailure(f"{path!r} in {module.__name__} is not callable")
    return obj


def clear() -> None:
    """Forget loaded modules and failures (tests; after installing a package)."""
    from accelbridge.attention import choices

    with _lock:
        _modules.clear()
        _warned.clear()
    choices.clear()
