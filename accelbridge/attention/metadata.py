"""Scheduler metadata that remembers what it was planned for.

Metadata computed with a different ``num_splits`` (or causal/window/pack_gqa) than the
kernel call caused illegal memory accesses under CUDA graphs. Metadata returned by the
facade is recorded (by weak reference, so nothing is kept alive and the tensor stays a plain
tensor); a kvcache call passing it with other parameters is refused before any kernel runs.
Tensors the facade did not build pass unchecked.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

# id(metadata) -> (weak reference, params); keyed by identity because tensors overload ==
_records: dict[int, tuple[weakref.ref, MetadataParams]] = {}


@dataclass(frozen=True)
class MetadataParams:
    provider_id: str
    num_splits: int
    causal: bool
    window_size: tuple[int, int]
    pack_gqa: bool | None


def _window(w: Any) -> tuple[int, int]:
    return (-1, -1) if w is None else tuple(int(x) for x in w)  # type: ignore[return-value]


def record(metadata: Any, provider_id: str, num_splits: int, causal: bool, window_size: Any, pack_gqa: Any) -> None:
    key = id(metadata)
    try:
        ref = weakref.ref(metadata, lambda _, key=key: _records.pop(key, None))
    except TypeError:  # not weak-referenceable: cannot be checked later, like a raw tensor
        return
    _records[key] = (ref, MetadataParams(provider_id, int(num_splits), bool(causal), _window(window_size), pack_gqa))


def lookup(metadata: Any) -> MetadataParams | None:
    entry = _records.get(id(metadata))
    return entry[1] if entry is not None and entry[0]() is metadata else None


def checker(provider_id: str):
    """The check a kvcache adapter of ``provider_id`` runs when scheduler_metadata is passed."""

    def check(metadata: Any, num_splits: Any, causal: Any, window_size: Any, pack_gqa: Any) -> Any:
        rec = lookup(metadata)
        if rec is None:
            return metadata
        call = MetadataParams(rec.provider_id, int(num_splits), bool(causal), _window(window_size), pack_gqa)
        if call != rec:
            diff = [
                f"{k}={getattr(call, k)!r} (metadata built with {getattr(rec, k)!r})"
                for k in ("num_splits", "causal", "window_size", "pack_gqa")
                if getattr(call, k) != getattr(rec, k)
            ]
            raise ValueError(
                "scheduler_metadata does not match this call: " + ", ".join(diff) + "; compute it with "
                "get_scheduler_metadata(...) using the same num_splits, causal, window_size and pack_gqa"
            )
        if rec.provider_id != provider_id:
            return None  # planned for another provider: useless here, and the result does not depend on it
        return metadata

    return check
