"""Planning objects (scheduler metadata) that remember what they were planned for.

Metadata computed with a different ``num_splits`` (or causal/window/pack_gqa/batch size)
than the kernel call caused illegal memory accesses under CUDA graphs. What the facade's
planning op returns is recorded (by weak reference: nothing is kept alive, the tensor stays a
plain tensor) with the values of the op declaration's plan keys; a consuming call passing it
with other values is refused before any kernel runs, from what was recorded, never by reading
device memory. Objects the facade did not build pass unchecked.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch

from accelbridge import ops
from accelbridge.errors import InvalidArgumentError
from accelbridge.ops.spec import PlanRelation

# id(plan) -> (weak reference, provider id, key); keyed by identity because tensors overload ==
_records: dict[int, tuple[weakref.ref, str, tuple[Any, ...]]] = {}


def relations_produced_by(op: str) -> list[PlanRelation]:
    return [s.plan for s in ops.OPS.values() if s.plan is not None and s.plan.producer == op and s.plan.keys]


def recorder(provider_id: str, relation: PlanRelation) -> Callable[[Any, tuple[Any, ...]], None]:
    """What the producer's adapter calls with its result and its key values."""

    def record(plan: Any, key: tuple[Any, ...]) -> None:
        ident = id(plan)
        try:
            ref = weakref.ref(plan, lambda _, ident=ident: _records.pop(ident, None))
        except TypeError:  # not weak-referenceable: unchecked later, like a raw tensor
            return
        _records[ident] = (ref, provider_id, key)

    return record


def checker(provider_id: str, facade: str, relation: PlanRelation) -> Callable[[Any, tuple[Any, ...]], Any]:
    """What a consumer's adapter calls with the plan it was given and the call's key values."""
    labels = [label for label, _, _ in relation.keys]

    def check(plan: Any, key: tuple[Any, ...]) -> Any:
        entry = _records.get(id(plan))
        if entry is None or entry[0]() is not plan:
            return plan
        _, built_by, built_for = entry
        if key != built_for:
            diff = [
                f"{label}={k!r} (metadata built with {b!r})" for label, k, b in zip(labels, key, built_for) if k != b
            ]
            raise InvalidArgumentError(
                f"{facade}: {relation.param} does not match this call: {', '.join(diff)}; compute it with "
                f"{ops.get(relation.producer).facade}(...) using the same {', '.join(labels)}"
            )
        return plan if built_by == provider_id else None  # planned for another provider: useless here

    return check


# id(plan object) -> (weak reference, the values it was frozen to on first use)
_frozen: dict[int, tuple[weakref.ref, tuple[Any, ...]]] = {}


def freezer(facade: str, relation: PlanRelation) -> Callable[[Any, tuple[Any, ...]], Any]:
    """What a consumer's adapter calls with a plan object: the first call freezes it, later ones must match."""
    labels = [label for label, _ in relation.freeze]

    def freeze(plan: Any, key: tuple[Any, ...]) -> Any:
        if isinstance(plan, (torch.Tensor, tuple, list)):  # planned explicitly for its arguments: not frozen here
            return plan
        ident = id(plan)
        entry = _frozen.get(ident)
        if entry is None or entry[0]() is not plan:
            try:
                ref = weakref.ref(plan, lambda _, ident=ident: _frozen.pop(ident, None))
            except TypeError:
                return plan
            _frozen[ident] = (ref, key)
            return plan
        if key != entry[1]:
            diff = [f"{label}={k!r} (planned for {b!r})" for label, k, b in zip(labels, key, entry[1]) if k != b]
            raise InvalidArgumentError(
                f"{facade}: {relation.param} was planned on its first use for other shapes: {', '.join(diff)}; "
                f"call {ops.get(relation.producer).facade}() again for each batch shape (the plan is frozen on "
                "first use and would read wrong tiles)"
            )
        return plan

    return freeze
