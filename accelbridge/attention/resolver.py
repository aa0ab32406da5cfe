"""Resolution: which provider serves an op here, and why each other one does not.

A ``Chain`` holds an op's candidates in order (catalog order, then env pins and preferences).
Candidates are examined lazily: platform requirements, then loading, then binding the
provider's signature. The first viable one serves; a call it cannot honour is handed down the
chain; when none can, ``UnsupportedFeatureError`` lists every reason.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from packaging.version import Version

from accelbridge import env, kernels_catalog, ops
from accelbridge.attention import adapters, checks, choices, providers
from accelbridge.attention.errors import ResolutionError, UnsupportedFeatureError
from accelbridge.kernels_catalog import Catalog
from accelbridge.platforms import devices


@dataclass(frozen=True)
class EnvPreference:
    """An engine's variable that moves a provider to the front of an op family's candidates."""

    variable: str
    value: str
    family: str
    provider: str
    platform: str  # where the catalog must define the provider (elsewhere the preference is a note)


# sglang: SGLANG_USE_SGL_FA3_KERNEL=0 means "use the hub FA3 build instead of sgl-kernel's"
PREFERENCES = (EnvPreference("SGLANG_USE_SGL_FA3_KERNEL", "0", "fa3", "hub-sgl-fa3", "cuda"),)


@dataclass
class Candidate:
    provider_id: str
    binding: adapters.Binding | None = None
    reasons: list[str] = field(default_factory=list)
    source: str = ""
    compiled: dict[str, Callable[..., Any]] = field(default_factory=dict)  # check level -> call

    @property
    def viable(self) -> bool:
        return self.binding is not None and self.binding.ok


def parse_provider_pins(text: str, catalog: Catalog) -> dict[str, str]:
    """``fa3=sgl-kernel,flashmla.kvcache=reference`` -> {op_or_family: provider}; bad input raises."""
    pins: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, pid = (s.strip() for s in item.partition("="))
        if not sep or not key or not pid:
            raise ResolutionError(f"ACCELBRIDGE_PROVIDERS: bad entry {item!r}; expected OP_OR_FAMILY=PROVIDER")
        if key not in ops.OPS and key not in ops.FAMILIES:
            valid = ", ".join((*ops.FAMILIES, *ops.ids()))
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
    family = ops.get(op).family
    pins = parse_provider_pins(env.get("ACCELBRIDGE_PROVIDERS"), catalog)
    pinned = pins.get(op) or pins.get(family)
    if pinned:
        notes.append(f"pinned to {pinned} by ACCELBRIDGE_PROVIDERS")
        return [pinned], notes
    for pref in PREFERENCES:
        if pref.family != family or env.get(pref.variable) != pref.value:
            continue
        setting = f"{pref.variable}={pref.value}"
        if pref.provider not in catalog.providers:
            if catalog.platform == pref.platform:
                valid = ", ".join(catalog.providers)
                raise ResolutionError(f"{setting} asks for provider {pref.provider!r}, which the {catalog.platform} "
                                      f"catalog does not define; valid: {valid}")  # fmt: skip
            notes.append(f"{setting} ignored: no {pref.provider} on {catalog.platform}")
        elif pref.provider in ids:
            ids.remove(pref.provider)
            ids.insert(0, pref.provider)
            notes.append(f"{pref.provider} preferred by {setting}")
    return ids, notes


class Chain:
    """The candidates of one op on one device of a platform, examined lazily and cached."""

    def __init__(self, op: str, platform: Any, device: int | None = None):
        self.op = op
        self.spec = ops.get(op)
        self.platform = platform
        self.device = platform.device_index(device)  # None: this process's (LOCAL_RANK, the selected device)
        self.catalog = kernels_catalog.load(platform)
        self.ids, self.notes = candidate_ids(op, self.catalog)
        self._candidates: dict[int, Candidate] = {}
        self._lock = threading.RLock()
        self._moves: set[tuple[int, int, str | None]] = set()  # (refused by, moved to, argument) logged

    def candidate(self, i: int) -> Candidate:
        with self._lock:
            if i not in self._candidates:
                self._candidates[i] = self._examine(self.ids[i])
            return self._candidates[i]

    def index(self, provider_id: str) -> int | None:
        return self.ids.index(provider_id) if provider_id in self.ids else None

    def _examine(self, pid: str) -> Candidate:
        provider = self.catalog.providers[pid]
        entry = provider.ops.get(self.op)
        cand = Candidate(pid)
        if entry is None:
            cand.reasons.append(f"does not serve {self.op}")
            return cand
        cand.source = f"{provider.source.describe()} -> {entry.function}"
        cand.reasons += entry.requires.platform_reasons(self.platform, Version(torch.__version__), self.device)
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
        cand.binding = adapters.bind(pid, self.spec, entry, fn, name)
        release = getattr(module, "__version__", None)
        if release is not None:  # which release, and which signature: what the adaptation was read from
            signature = f"{entry.function}({', '.join(cand.binding.params)})"
            cand.binding.notes.insert(0, f"found {getattr(module, '__name__', pid)} {release}: {signature}")
        cand.reasons += cand.binding.reasons
        if not cand.binding.ok:  # installed, but its signature cannot serve the op
            providers.warn_unavailable(pid, f"{self.op}: {'; '.join(cand.binding.reasons)}")
        return cand

    def all(self) -> list[Candidate]:
        return [self.candidate(i) for i in range(len(self.ids))]

    def first_viable(self) -> int | None:
        return next((i for i in range(len(self.ids)) if self.candidate(i).viable), None)

    def call(self, i: int) -> Callable[..., Any]:
        """Candidate ``i``'s compiled call at the current check level (it must be viable)."""
        cand, level = self.candidate(i), checks.level()
        fn = cand.compiled.get(level)
        if fn is None:
            fn = cand.compiled[level] = adapters.compile_call(
                cand.binding,  # type: ignore[arg-type]
                level,
                lambda arg, args, i=i: self.reroute(i + 1, arg, args),
            )
        return fn

    def impl(self) -> Callable[..., Any]:
        """The steady-state function for calls of this op: the first viable provider's call."""
        first = self.first_viable()
        if first is not None:
            self._chosen(first, {})
            return self.call(first)
        return lambda *args: self.reroute(len(self.ids), None, args)

    def _chosen(self, i: int, values: dict[str, Any]) -> None:
        passed_over = {}
        for j in range(i):
            cand = self.candidate(j)
            passed_over[cand.provider_id] = cand.reasons or cand.binding.call_reasons(values)  # type: ignore[union-attr]
        choices.chosen(self.platform, self.op, self.ids[i], passed_over, self.notes)

    def reroute(self, start: int, arg: str | None, args: tuple[Any, ...]) -> Any:
        """A provider refused this call: try the next ones; none left raises with every reason."""
        values = dict(zip(self.spec.names, args))
        for i in range(start, len(self.ids)):
            cand = self.candidate(i)
            if cand.viable and not cand.binding.call_reasons(values):  # type: ignore[union-attr]
                if self.ids[i] == choices.REFERENCE:
                    self._chosen(i, values)  # a slow path for this call: heard of, once per op
                elif start > 0 and (start - 1, i, arg) not in self._moves:
                    self._moves.add((start - 1, i, arg))  # each distinct move logged once, with its reason
                    refused = self.candidate(start - 1).binding.call_reasons(values)  # type: ignore[union-attr]
                    choices.moved(self.platform, self.op, self.ids[start - 1], self.ids[i], refused)
                return self.call(i)(*args)
        if self.spec.without_provider == "none":
            return None  # no provider plans scheduling here: a no-op, callers stay unchanged
        raise UnsupportedFeatureError(self.op, arg, self.reasons(values), self.notes)

    def reasons(self, values: dict[str, Any]) -> dict[str, list[str]]:
        return {c.provider_id: c.reasons or c.binding.call_reasons(values) for c in self.all()}  # type: ignore[union-attr]


@dataclass
class Resolution:
    """What `resolve()` and `explain()` report for one op."""

    op: str
    platform: str
    arch: str
    selected: str | None
    candidates: list[dict[str, Any]]
    notes: list[str]
    device: str | None = None  # the device resolved against, e.g. cuda:1 (a rank's own)

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "platform": self.platform, "arch": self.arch, "selected": self.selected,
                "candidates": self.candidates, "notes": self.notes, "device": self.device}  # fmt: skip


FEATURE_ALIASES = ("dtype", "head_dim")


def feature_values(op: str, features: dict[str, Any]) -> dict[str, Any]:
    """resolve() features -> canonical values: dtype/head_dim shape a fake q; others are arguments."""
    spec = ops.get(op)
    unknown = set(features) - set(spec.params) - set(FEATURE_ALIASES)
    if unknown:
        raise ResolutionError(f"resolve({op!r}): unknown feature(s) {sorted(unknown)}; use dtype, head_dim "
                              f"or argument names of {spec.facade}")  # fmt: skip
    values = {k: v for k, v in features.items() if k not in FEATURE_ALIASES}
    for name, value in list(values.items()):
        if value is True and spec.params[name].default is not False:
            values[name] = object()  # "this call passes a non-inert value"
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
            reasons += cand.binding.call_reasons(values)  # type: ignore[union-attr]
        viable = not reasons
        row = {"provider": cand.provider_id, "viable": viable, "reasons": reasons, "source": cand.source}
        if cand.viable:
            row["adapts"] = cand.binding.notes  # type: ignore[union-attr]
        rows.append(row)
        if viable and selected is None:
            selected = cand.provider_id
    p = chain.platform
    device = devices.label(p, chain.device)
    return Resolution(chain.op, p.name, p.arch(chain.device).name, selected, rows, chain.notes, device)
