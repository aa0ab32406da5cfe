"""TMA tensor descriptors made per call without rebuilding and re-checking them.

Triton's and Gluon's descriptor classes check alignment, strides and the box on construction, for facts that are
the same every decode step (session 15's GPU profile of dense MLA decode at B=1 put the two descriptors at 80 of the
call's 626 us under cProfile, which inflates their many small calls; alone, on the dev VM, a Gluon descriptor and
its view take 4.4 us to build, a copy of the template 0.4). The first descriptor of a geometry is built,
and so checked, by its class; each call copies it and points it at the call's tensor. The caller checks what
varies per call (the tensor's 16-byte alignment); the rest is the geometry, which keys the template.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

_TEMPLATES: dict[tuple[Any, ...], Any] = {}  # (class, dtype, shape, strides, box, layout...) -> base-less descriptor
_MOST_TEMPLATES = 1024  # geometries a process keeps (a model has one per cache shape)


def descriptor(cls: type, base: torch.Tensor, shape: tuple[int, ...], strides: tuple[int, ...], box: list[int],
               *layout: Any) -> Any:  # fmt: skip
    """``cls`` (Triton's or Gluon's TensorDescriptor) over ``base``'s memory viewed as ``shape``/``strides`` from its
    first element, ``box`` the tile; ``layout``: Gluon's shared-memory layout. The template holds no tensor."""
    key = (cls, base.dtype, shape, strides, tuple(box), *layout)
    template = _TEMPLATES.get(key)
    if template is None:
        if len(_TEMPLATES) >= _MOST_TEMPLATES:
            _TEMPLATES.clear()
        view = base.as_strided(shape, strides)
        template = cls(view, view.shape, view.stride(), box, *layout)  # the class's own checks, once
        template.base = None
        _TEMPLATES[key] = template
    made = _clone(template)
    made.base = base  # the launcher reads base.data_ptr(): the view's first element is base's
    return made


def _clone(template: Any) -> Any:
    """A copy without ``__init__`` (so without ``__post_init__``'s checks: the template's stand): 0.4 us on the dev
    VM, where ``copy.copy`` takes 2.5 and building a Triton descriptor 1.9, a Gluon one 3.1 (plus the view, 1.3)."""
    if not hasattr(template, "__dict__"):  # a slotted class (none in triton 3.6-3.9)
        return copy.copy(template)
    made = object.__new__(type(template))
    made.__dict__.update(template.__dict__)
    return made
