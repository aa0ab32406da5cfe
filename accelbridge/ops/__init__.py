"""The ops: one declaration each (signature, roles, inert values, checks, reference, plan, cases).

The layer every other reads: ``kernels_catalog`` validates op ids and argument names against
it, ``attention`` generates its functions and adapters from it, ``testing`` its conformance
cases. It imports nothing above ``platforms``.
"""

from __future__ import annotations

from accelbridge.errors import DeclarationError
from accelbridge.ops.spec import Arg, Check, CheckFailed, OpSpec, Param, PlanRelation, fail

OPS: dict[str, OpSpec] = {}
FAMILIES: tuple[str, ...] = ()


def register(spec: OpSpec, validate: bool = True) -> OpSpec:
    """Declare an op (built-in or a vendor's own); its id must be new and its expressions read known names."""
    global FAMILIES
    if spec.id in OPS and OPS[spec.id] is not spec:
        raise DeclarationError(f"op {spec.id!r} is already declared")
    if validate:
        spec.validate()
    OPS[spec.id] = spec
    FAMILIES = tuple(dict.fromkeys(s.family for s in OPS.values()))
    return spec


def unregister(op: str) -> None:
    """Forget an op declared with ``register`` (tests of toy ops)."""
    global FAMILIES
    OPS.pop(op, None)
    FAMILIES = tuple(dict.fromkeys(s.family for s in OPS.values()))


def get(op: str) -> OpSpec:
    return OPS[op]


def planned_by(op: str) -> tuple[str, ...]:
    """The ops whose calls take ``op``'s plan (empty unless ``op`` is a planning op). Without a provider
    a planning op returns None, and those calls plan themselves: not having one is fine."""
    return tuple(o for o, spec in OPS.items() if spec.plan is not None and spec.plan.producer == op)


def ids() -> tuple[str, ...]:
    return tuple(OPS)


def _register_builtin() -> None:
    from accelbridge.ops import flash_attn, flash_mla

    for spec in (*flash_attn.SPECS, *flash_mla.SPECS):
        register(spec, validate=False)  # validated in tests/test_import.py, not parsed at every import


_register_builtin()

__all__ = ["FAMILIES", "OPS", "Arg", "Check", "CheckFailed", "OpSpec", "Param", "PlanRelation", "fail", "get", "ids",
           "register", "unregister"]  # fmt: skip
