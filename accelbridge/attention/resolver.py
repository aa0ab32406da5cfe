"""Resolution: which provider serves an op here, and why each other one does not.

A ``Chain`` holds an op's candidates in order (catalog order, then env pins and
preferences). Candidates are examined lazily: platform requirements, then loading, then
the adapter built from the signature. The first viable one serves; a call it cannot honour
is handed down the chain; when none can, ``UnsupportedFeatureError`` lists every reason.
"""

from __future__ import annotations

import inspect
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from packaging.version import Version

from accelbridge.attention import adapters, providers
from accelbridge.attention.errors import ResolutionError, UnsupportedFeatureError
from accelbridge.kernels_catalog import OP_FAMILIES, OP_IDS, OPS, Catalog

SGL_FA3_HUB = "hub-sgl-fa3"


@dataclass
class Candidate:
    provider_id: str
    adapter: adapters.Adapter | None = None
    reasons: list[str] = field(default_factory=list)
    source: str = ""

    @property
    def viable(self) -> bool:
        return self.adapter is not None and self.adapter.fn is not None


def parse_provider_pins(text: str, catalog: Catalog) -> dict[str, str]:
    """``fa3=sgl-kernel,flashmla.kvcache=reference`` -> {op_or_family: provider}; bad input raises."""
    pins: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, pid = (s.strip() for s in item.partition("="))
        if not sep or not key or not pid:
            raise ResolutionError(f"ACCELBRIDGE_PROVIDERS: bad entry {item!r}; expected OP_OR_FAMILY=PROVIDER")
        if key not in OP_IDS and key not in OP_FAMILIES:
            valid = ", ".join((*OP_FAMILIES, *OP_IDS))
            raise ResolutionError(f"ACCELBRIDGE_PROVIDERS: unknown op or family {key!r}; valid: {valid}")
        if pid not in catalog.providers:
            valid = ", ".join(catalog.providers)
            raise ResolutionError(
                f"ACCELBRIDGE_PROVIDERS: unknown provider {pid!r} for {key} on platform {catalog.platform}; "
                f"valid: {valid}"
            )
        pins[key] = pid
    return pins


def candidate_ids(op: str, catalog: Catalog) -> tuple[list[str], list[str]]:
    """The provider ids to try for ``op``, and notes on how the env changed the catalog order."""
    ids, notes = list(catalog.candidates(op)), []
    family = OPS[op].family
    pins = parse_provider_pins(os.environ.get("ACCELBRIDGE_PROVIDERS", ""), catalog)
    pinned = pins.get(op) or pins.get(family)
    if pinned:
        notes.append(f"pinned to {pinned} by ACCELBRIDGE_PROVIDERS")
        return [pinned], notes
    if family == "fa3" and os.environ.get("SGLANG_USE_SGL_FA3_KERNEL", "").strip() == "0":
        if SGL_FA3_HUB not in catalog.providers:
            if catalog.platform == "cuda":
                valid = ", ".join(catalog.providers)
                raise ResolutionError(
                    f"SGLANG_USE_SGL_FA3_KERNEL=0 asks for provider {SGL_FA3_HUB!r}, which the cuda catalog "
                    f"does not define; valid: {valid}"
                )
            notes.append(f"SGLANG_USE_SGL_FA3_KERNEL=0 ignored: no {SGL_FA3_HUB} on {catalog.platform}")
        elif SGL_FA3_HUB in ids:
            ids.remove(SGL_FA3_HUB)
            ids.insert(0, SGL_FA3_HUB)
            notes.append(f"{SGL_FA3_HUB} preferred by SGLANG_USE_SGL_FA3_KERNEL=0")
    return ids, notes


class Chain:
    """The candidates of one op on one platform, examined lazily and cached."""

    def __init__(
        self,
        op: str,
        platform: Any,
        canonical: inspect.Signature,
        meta_checker: Callable[[str], Callable[..., Any]] | None = None,
    ):
        self.op = op
        self.platform = platform
        self.canonical = canonical
        self.meta_checker = meta_checker  # provider id -> scheduler-metadata check (kvcache ops)
        self.catalog = platform.catalog()
        self.ids, self.notes = candidate_ids(op, self.catalog)
        self._candidates: dict[int, Candidate] = {}
        self._lock = threading.RLock()

    def candidate(self, i: int) -> Candidate:
        with self._lock:
            if i not in self._candidates:
                self._candidates[i] = self._examine(self.ids[i], i)
            return self._candidates[i]

    def _examine(self, pid: str, index: int) -> Candidate:
        provider = self.catalog.providers[pid]
        entry = provider.ops.get(self.op)
        cand = Candidate(pid)
        if entry is None:
            cand.reasons.append(f"does not serve {self.op}")
            return cand
        cand.source = f"{provider.source.describe()} -> {entry.function}"
        cand.reasons += entry.requires.platform_reasons(self.platform, Version(torch.__version__))
        if cand.reasons:
            return cand
        try:  # a failed load has warned already
            module = providers.load_module(
                pid, provider.source, provider.trusted, provider.install, self.platform.simulated
            )
        except providers.LoadFailure as e:
            cand.reasons.append(str(e))
            return cand
        try:
            fn = providers.resolve_function(module, entry.function)
        except providers.LoadFailure as e:  # loaded, but the function is missing
            cand.reasons.append(str(e))
            providers.warn_unavailable(pid, f"{self.op}: {e}")
            return cand
        name = f"{getattr(module, '__name__', pid)}.{entry.function}"
        check = self.meta_checker(pid) if self.meta_checker else None
        cand.adapter = adapters.build(pid, entry, fn, OPS[self.op].facade, self.canonical, name, check)
        cand.adapter.reroute = lambda arg, args: self.reroute(index + 1, pid, arg, args)
        cand.reasons += cand.adapter.reasons
        if cand.adapter.fn is None:  # installed, but its signature cannot serve the op
            providers.warn_unavailable(pid, f"{self.op}: {'; '.join(cand.adapter.reasons)}")
        return cand

    def all(self) -> list[Candidate]:
        return [self.candidate(i) for i in range(len(self.ids))]

    def first_viable(self) -> Candidate | None:
        for i in range(len(self.ids)):
            if self.candidate(i).viable:
                return self.candidate(i)
        return None

    def impl(self) -> Callable[..., Any]:
        """The steady-state function for calls of this op: the first viable adapter."""
        first = self.first_viable()
        if first is not None:
            return first.adapter.fn  # type: ignore[union-attr]
        return lambda *args: self.reroute(len(self.ids), None, None, args)

    def reroute(self, start: int, refused_by: str | None, arg: str | None, args: tuple[Any, ...]) -> Any:
        """A provider refused this call: try the next ones; none left raises with every reason."""
        values = dict(zip(self.canonical.parameters, args))
        for i in range(start, len(self.ids)):
            cand = self.candidate(i)
            if cand.viable and not cand.adapter.call_reasons(values):  # type: ignore[union-attr]
                return cand.adapter.fn(*args)  # type: ignore[union-attr]
        reasons = {}
        for cand in self.all():
            reasons[cand.provider_id] = cand.reasons or cand.adapter.call_reasons(values)  # type: ignore[union-attr]
        if self.op == "fa3.scheduler_metadata":
            return None  # no provider plans scheduling here: a no-op, callers stay unchanged
        raise UnsupportedFeatureError(self.op, arg, reasons, self.notes)


@dataclass
class Resolution:
    """What `resolve()` and `explain()` report for one op."""

    op: str
    platform: str
    arch: str
    selected: str | None
    candidates: list[dict[str, Any]]
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "platform": self.platform,
            "arch": self.arch,
            "selected": self.selected,
            "candidates": self.candidates,
            "notes": self.notes,
        }


_FEATURE_ALIASES = {"dtype", "head_dim"}


def feature_values(op: str, features: dict[str, Any]) -> dict[str, Any]:
    """resolve() features -> canonical values: dtype/head_dim shape a fake q; others are arguments."""
    unknown = set(features) - set(OPS[op].args) - _FEATURE_ALIASES
    if unknown:
        raise ResolutionError(f"resolve({op!r}): unknown feature(s) {sorted(unknown)}; use dtype, head_dim "
                              f"or argument names of {OPS[op].facade}")  # fmt: skip
    values = {k: v for k, v in features.items() if k not in _FEATURE_ALIASES}
    for name, value in list(values.items()):
        if value is True and name not in ("causal", "return_softmax_lse", "is_fp8_kvcache"):
            values[name] = object()  # "this call passes a non-default value"
    if "dtype" in features or "head_dim" in features:
        dtype = features.get("dtype", torch.bfloat16)
        if isinstance(dtype, str):
            from accelbridge.platforms.dtypes import DTYPE_ATTRS

            dtype = getattr(torch, DTYPE_ATTRS.get(dtype, dtype))
        values["q"] = torch.empty((0, 1, int(features.get("head_dim", 128))), dtype=dtype, device="meta")
    return values


def describe(chain: Chain, values: dict[str, Any] | None = None, load_all: bool = True) -> Resolution:
    values = values or {}
    rows, selected = [], None
    for i in range(len(chain.ids)):
        cand = chain.candidate(i) if (load_all or selected is None) else None
        if cand is None:
            rows.append({"provider": chain.ids[i], "viable": None, "reasons": ["not examined"]})
            continue
        reasons = list(cand.reasons)
        if cand.viable:
            reasons += cand.adapter.call_reasons(values)  # type: ignore[union-attr]
        viable = not reasons
        row = {"provider": cand.provider_id, "viable": viable, "reasons": reasons, "source": cand.source}
        if cand.adapter is not None and cand.adapter.fn is not None:
            row["adapts"] = cand.adapter.notes
        rows.append(row)
        if viable and selected is None:
            selected = cand.provider_id
    p = chain.platform
    return Resolution(chain.op, p.name, p.arch().name, selected, rows, chain.notes)
