"""Find, read, validate and merge the catalog files of a platform.

Merge rules, applied file by file (catalogs/builtin.yaml: the built-in providers, every platform; the
platform's built-in file; ACCELBRIDGE_CATALOG_PATH; extras):
a new provider id is added; for an existing id, every field the later file gives replaces
the earlier one, except ``ops``, which merges per op id (an op entry given replaces that
op's entry whole); ``null`` removes a provider or an op; an ``order`` list replaces that
op's list. A file for another platform is skipped.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from accelbridge import env
from accelbridge.kernels_catalog.errors import CatalogError, Issue
from accelbridge.kernels_catalog.model import Adapt, Catalog, OpEntry, Provider, Requirements, Source
from accelbridge.kernels_catalog.schema import ANY_PLATFORM, Validator
from accelbridge.kernels_catalog.yamlmarks import Document, parse

BUILTIN_DIR = Path(__file__).parent / "catalogs"
_cache: dict[Any, Catalog] = {}
_lock = threading.Lock()


def builtin_file(platform: str) -> Path | None:
    path = BUILTIN_DIR / f"{platform}.yaml"
    return path if path.exists() else None


def overlay_files() -> list[Path]:
    """Files named by ACCELBRIDGE_CATALOG_PATH (directories give their *.yaml in name order)."""
    files: list[Path] = []
    for entry in filter(None, env.get("ACCELBRIDGE_CATALOG_PATH").split(os.pathsep)):
        path = Path(entry)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
        else:
            files.append(path)
    return files


def read(path: Path | str) -> Document:
    """Parse one file; unreadable or malformed files raise a located CatalogError."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CatalogError([Issue(str(path), 1, 1, f"cannot read catalog file: {e.strerror or e}")]) from None
    doc, issues = parse(raw, str(path))
    if issues or doc is None:
        raise CatalogError(issues)
    if not isinstance(doc.data, dict):
        kind = type(doc.data).__name__
        raise CatalogError([doc.at((), f"the top level must be a mapping (schema, platform, providers), got {kind}")])
    return doc


def _platform_families() -> dict[str, str]:
    from accelbridge import platforms

    return {name: platforms.get_platform_class(name).arch_family for name in platforms.known_platforms()}


BUILTIN_PROVIDERS = ("torch", "reference")  # last in this order where no `order` says otherwise
_builtin_doc: list[Document] = []  # catalogs/builtin.yaml, read and validated once


def _builtin_providers() -> Document:
    """catalogs/builtin.yaml: the built-in providers, merged first into every platform's catalog."""
    if not _builtin_doc:
        doc = read(BUILTIN_DIR / "builtin.yaml")
        issues = Validator(doc, _platform_families(), {}).validate()
        if issues:
            raise CatalogError(issues)
        _builtin_doc.append(doc)
    return _builtin_doc[0]


def _declared_references(merged: dict[str, Any]) -> None:
    """A ``{builtin: reference}`` provider serves every declared op with a reference function, under its name.

    Added after the file that declares it, before any later file: an overlay may still override or
    remove one of these entries like any other.
    """
    from accelbridge import ops

    for provider in merged["providers"].values():
        if provider.get("source") == {"builtin": "reference"}:
            for op, spec in ops.OPS.items():
                if spec.reference is not None:
                    provider["ops"].setdefault(op, {"function": spec.reference.__name__, "_origin": "accelbridge.ops"})


def _new_merged() -> dict[str, Any]:
    merged: dict[str, Any] = {"providers": {}, "order": {}, "removed": {}}
    _merge(merged, _builtin_providers())
    _declared_references(merged)
    return merged


def _ops_by_provider(merged: dict[str, Any]) -> dict[str, set[str]]:
    return {pid: set(p.get("ops", {})) for pid, p in merged["providers"].items()}


def display_name(file: str | Path) -> str:
    """Built-in files show as builtin:NAME, so reports never carry this machine's paths."""
    path = Path(file)
    return f"builtin:{path.name}" if path.resolve().parent == BUILTIN_DIR.resolve() else str(file)


def _origin(doc: Document, path: tuple[Any, ...]) -> str:
    issue = doc.at(path, "", key=True)
    return f"{display_name(issue.file)}:{issue.line}"


def _merge(merged: dict[str, Any], doc: Document) -> None:
    data = doc.data
    base = Path(doc.file).resolve().parent
    for pid, provider in (data.get("providers") or {}).items():
        if provider is None:
            merged["providers"].pop(pid, None)
            merged["removed"][pid] = _origin(doc, ("providers", pid))
            continue
        target = merged["providers"].setdefault(pid, {"ops": {}, "_origin": _origin(doc, ("providers", pid))})
        for key, value in provider.items():
            if key == "ops":
                for op, entry in value.items():
                    if entry is None:
                        target["ops"].pop(op, None)
                    else:
                        target["ops"][op] = dict(entry, _origin=_origin(doc, ("providers", pid, "ops", op)))
            elif key == "source" and "path" in value:
                target[key] = dict(value, path=str((base / value["path"]).resolve()))
            else:
                target[key] = value
    for op, ids in (data.get("order") or {}).items():
        merged["order"][op] = (list(ids), doc, ("order", op))


def _check_merged(merged: dict[str, Any]) -> list[Issue]:
    """An order that names a provider a later file removed, or one that no longer serves the op."""
    issues = []
    for op, (ids, doc, path) in merged["order"].items():
        for i, pid in enumerate(ids):
            provider = merged["providers"].get(pid)
            if provider is None:
                removed = merged["removed"].get(pid, "a later file")
                issues.append(doc.at(path + (i,), f"order of {op}: provider {pid!r} was removed by {removed}"))
            elif op not in provider.get("ops", {}):
                issues.append(doc.at(path + (i,), f"order of {op}: provider {pid!r} no longer serves {op}"))
    return issues


def _build(platform: str, merged: dict[str, Any], files: list[str]) -> Catalog:
    providers = {}
    for pid, p in merged["providers"].items():
        src = p["source"]
        kind = next(k for k in ("module", "hub", "path", "builtin") if k in src)
        source = Source(kind, src[kind], src.get("version"), src.get("revision"), src.get("package"))
        base_req = Requirements.from_data(p.get("requires"))
        ops = {
            op: OpEntry(
                op,
                e["function"],
                base_req & Requirements.from_data(e.get("requires")),
                Adapt.from_data(e.get("adapt")),
                e["_origin"],
                frozenset(p.get("validates", ())),
            )
            for op, e in p["ops"].items()
        }
        providers[pid] = Provider(
            pid, source, p.get("description", ""), p.get("install"), bool(p.get("trusted", False)), ops, p["_origin"]
        )
    order = {op: tuple(ids) for op, (ids, _, _) in merged["order"].items()}
    return Catalog(platform, providers, order, tuple(files))


def _platform_parts(platform: Any) -> tuple[str, tuple[str, ...]]:
    if isinstance(platform, str):
        from accelbridge import platforms

        cls = platforms.get_platform_class(platform)
        return platform, tuple(getattr(cls, "catalog_files", ()))
    return platform.name, tuple(getattr(platform, "catalog_files", ()))


def load(platform: Any, extra: Iterable[Path | str] = ()) -> Catalog:
    """The merged, validated catalog of ``platform`` (a Platform or a platform name)."""
    name, plugin_files = _platform_parts(platform)
    builtin = builtin_file(name)
    paths = [p for p in [builtin, *map(Path, plugin_files)] if p] + overlay_files() + [Path(p) for p in extra]
    key = (name, tuple((str(p), _mtime(p)) for p in paths))
    with _lock:
        if key in _cache:
            return _cache[key]
    families = _platform_families()
    merged = _new_merged()
    issues: list[Issue] = []
    files = []
    for path in paths:
        try:
            doc = read(path)
        except CatalogError as e:
            issues += e.issues
            continue
        if doc.data.get("platform") not in (name, ANY_PLATFORM):
            continue
        file_issues = Validator(doc, families, _ops_by_provider(merged)).validate()
        issues += file_issues
        if not file_issues:
            _merge(merged, doc)
            files.append(display_name(path))
    issues += _check_merged(merged)
    if issues:
        raise CatalogError(issues)
    for pid in BUILTIN_PROVIDERS:  # the built-ins come last where no `order` says otherwise: torch, then the reference
        if pid in merged["providers"]:
            merged["providers"][pid] = merged["providers"].pop(pid)
    catalog = _build(name, merged, files)
    with _lock:
        _cache[key] = catalog
    return catalog


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return -1.0


def validate_file(path: Path | str) -> list[Issue]:
    """Every error of one file, checked against the built-in catalog of its platform."""
    try:
        doc = read(path)
    except CatalogError as e:
        return e.issues
    families = _platform_families()
    merged = _new_merged()
    name = doc.data.get("platform")
    builtin = builtin_file(name) if isinstance(name, str) else None
    if builtin and builtin.resolve() != Path(path).resolve():
        _merge(merged, read(builtin))
    known = _ops_by_provider(merged)
    return Validator(doc, families, known).validate()


def order_warnings(path: Path | str) -> list[Issue]:
    """``order`` lists of one (valid) file that leave out a built-in still serving the op.

    A list is the whole order, so a built-in it does not name is never tried for that op: a
    vendor list without ``torch`` loses the torch provider, one without ``reference`` any
    fallback. Often meant, often not; the file says which by naming it or by removing the op
    from the built-in (``providers: {torch: {ops: {OP: null}}}``).
    """
    doc = read(path)
    served = _ops_by_provider(_new_merged())
    for pid, provider in (doc.data.get("providers") or {}).items():
        if pid in served:
            ops = (provider or {}).get("ops") or {}
            served[pid] = set() if provider is None else served[pid] - {op for op, e in ops.items() if e is None}
    warnings = []
    for op, ids in (doc.data.get("order") or {}).items():
        missing = [pid for pid in BUILTIN_PROVIDERS if op in served[pid] and pid not in (ids or ())]
        if missing:
            names, are = " and ".join(missing), "are" if len(missing) > 1 else "is"
            warnings.append(doc.at(("order", op), f"order of {op} does not name {names}, so {names} {are} never "
                                   f"tried for {op} (a list is the whole order): add {names} at the end of the list, "
                                   f"or say it with providers: {{{missing[0]}: {{ops: {{{op}: null}}}}}}"))  # fmt: skip
        after = list(ids or ())[list(ids or ()).index("reference") + 1 :] if "reference" in (ids or ()) else []
        if after:  # the reference serves every call it is asked: nothing after it is ever tried
            names = " and ".join(after)
            warnings.append(doc.at(("order", op), f"order of {op} lists {names} after reference, which serves every "
                                   f"call, so {names} {'are' if len(after) > 1 else 'is'} never tried: put reference "
                                   "last"))  # fmt: skip
    return warnings


def import_issues(path: Path | str) -> list[Issue]:
    """Providers whose module cannot be found here (looked up, never imported), with the closest installed name."""
    import difflib
    import importlib.util
    import pkgutil

    try:
        doc = read(path)
    except CatalogError as e:
        return e.issues
    installed: list[str] | None = None
    issues = []
    for pid, provider in (doc.data.get("providers") or {}).items():
        module = ((provider or {}).get("source") or {}).get("module") if isinstance(provider, dict) else None
        if not isinstance(module, str):
            continue
        top = module.split(".")[0]
        if importlib.util.find_spec(top) is not None:
            continue
        if installed is None:
            installed = sorted({m.name for m in pkgutil.iter_modules()})
        close = difflib.get_close_matches(top, installed, n=1, cutoff=0.8)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        issues.append(doc.at(("providers", pid, "source", "module"), f"provider {pid!r}: module {top!r} is not "
                             f"installed here{hint}"))  # fmt: skip
    return issues


def clear_cache() -> None:
    with _lock:
        _cache.clear()
