"""Every one-fault call, enumerated from the op declarations: one tensor argument of one op wrong in dtype,
device, rank, shape or value, at the default check level on the CPU platform, is an InvalidArgumentError that
names the argument, raised before any kernel runs (never a provider's crash, never a result).

The valid calls are the ops' own conformance cases (``OpSpec.cases`` / ``OpSpec.inputs``): for each tensor
argument, the first case that passes it. "Another device" is the meta device, whose tensors report the same
device index as CPU ones (-1), as a CPU-only machine has no second device type.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

from accelbridge import attention, ops
from accelbridge.attention import InvalidArgumentError
from accelbridge.ops.cases import Inputs
from accelbridge.ops.spec import EXPRESSION_ENV

SEED = 35
ROLES = ("data", "index", "out")  # tensors a call computes from, indexes with or writes; plans have their own rule


@functools.cache
def _valid_calls(op: str) -> dict[str, dict[str, Any]]:
    """Per tensor argument, a valid call (a conformance case's inputs) that passes it as a tensor."""
    spec, calls = ops.get(op), {}
    for case in spec.cases(True):  # type: ignore[misc]
        if case.dtype != "bf16":
            continue  # one dtype: the FP8 layouts are their own declarations' business
        kw = spec.inputs(case, Inputs(case, SEED, torch.device("cpu")))  # type: ignore[misc]
        kw.update({n: None for n, p in spec.params.items() if p.required and n not in kw})  # a plan not made
        if "out" in spec.params and case.with_out:
            kw["out"] = None  # filled below, from the first data tensor's shape
        for name, value in kw.items():
            if spec.params[name].role in ROLES and isinstance(value, torch.Tensor) and name not in calls:
                calls[name] = kw
    return calls


def _grown(x: torch.Tensor) -> torch.Tensor:
    """Every dim one larger (a copy of its first slice appended): a shape no valid call pairs with the others."""
    for d in range(x.dim()):
        x = torch.cat([x, x.narrow(d, 0, 1)], d) if x.shape[d] else x.new_zeros((*x.shape[:d], 1, *x.shape[d + 1 :]))
    return x


def _wrong_dtype(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.int64) if x.dtype is torch.int32 else x.to(torch.float64)


FAULTS: dict[str, Callable[[torch.Tensor], torch.Tensor | None]] = {
    "dtype": _wrong_dtype,
    "device": lambda x: x.to("meta"),
    "rank": lambda x: x.unsqueeze(0),
    "shape": _grown,
    "value": lambda x: torch.full_like(x, -1) if x.dtype is torch.int32 else None,  # index values only
}
NO_VALUE_FAULT = ("indices", "extra_indices_in_kvcache")  # sparse MLA: -1 (any value out of range) means "no key"


def _calls() -> Iterator[Any]:
    for spec in ops.OPS.values():
        if spec.cases is None or spec.without_provider != "raise":
            continue  # planning ops: no provider on CPU, and their plans are checked where they are used
        for name in _valid_calls(spec.id):
            for fault in FAULTS:
                yield pytest.param(spec.id, name, fault, id=f"{spec.id}-{name}-{fault}")


def _with_out(spec: ops.OpSpec, kw: dict[str, Any]) -> dict[str, Any]:
    kw = dict(kw)
    if kw.get("out", 0) is None:  # a NaN out buffer, shaped as the declaration's first result
        shape, dtype = (eval(e, EXPRESSION_ENV, dict(spec.with_defaults(kw))) for e in spec.result_shapes[0])  # noqa: S307
        kw["out"] = torch.full(shape, float("nan"), dtype=dtype)
    return kw


@pytest.mark.parametrize("op, name, fault", list(_calls()))
def test_a_one_fault_call_is_named_at_the_default_level(op, name, fault):
    spec = ops.get(op)
    attention.set_checks("cheap")
    kw = _with_out(spec, _valid_calls(spec.id)[name])
    bad = FAULTS[fault](kw[name])
    if bad is None or (fault == "value" and name in NO_VALUE_FAULT):
        pytest.skip(f"no {fault} fault for a {kw[name].dtype} tensor")
    kw[name] = bad
    function = attention.function(op)
    args = {n: v for n, v in kw.items()} | ({spec.selector[0]: spec.selector[1]} if spec.selector else {})
    with pytest.raises(InvalidArgumentError) as e:
        function(**args)
    assert re.search(rf"\b{name}\b", str(e.value)), f"{fault} fault of {name}: {e.value}"


OPTION_FAULTS = [  # non-tensor arguments a caller gets wrong, from issue 35
    ("fa3.varlen", "window_size", 4),
    ("fa3.kvcache", "window_size", (4,)),
    ("flashmla.kvcache", "head_dim_v", 256),  # on the case's 576-wide cache: V is its first 512 dims
    ("flashmla.kvcache", "head_dim_v", 577),
]


@pytest.mark.parametrize("op, name, value", OPTION_FAULTS, ids=[f"{o}-{n}-{v}" for o, n, v in OPTION_FAULTS])
def test_a_wrong_option_is_named_at_the_default_level(op, name, value):
    spec = ops.get(op)
    attention.set_checks("cheap")
    kw = _with_out(spec, _valid_calls(spec.id)["q"]) | {name: value}
    args = kw | ({spec.selector[0]: spec.selector[1]} if spec.selector else {})
    with pytest.raises(InvalidArgumentError, match=re.escape(f"{name} is {value!r}")):
        attention.function(op)(**args)


@pytest.mark.parametrize("op", [o for o, s in ops.OPS.items() if "causal" in s.params])
def test_a_misspelt_keyword_suggests_the_parameter(op):
    spec = ops.get(op)
    required = {n: None for n, p in inspect.signature(spec.signature).parameters.items() if p.default is p.empty}
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'casual' \(did you mean 'causal'\?\)"):
        attention.function(op)(**required, casual=True)  # named before anything is read
