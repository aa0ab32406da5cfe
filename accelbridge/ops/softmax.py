"""The softmax conventions the float reference and the torch provider share (torch only: no kernel package).

Kernels run the softmax in base 2 (``exp2`` is the hardware's instruction): scores times ``LOG2E``,
a base-2 log-sum-exp times ``LN2`` back to base e. A row that sees no key has the log-sum-exp -inf;
subtracting it would give NaN, so such rows (and a +inf sink's, or a NaN's) shift by 0 instead.
"""

from __future__ import annotations

import math

import torch

LOG2E = math.log2(math.e)  # base e -> base 2 (1.4426950408889634)
LN2 = math.log(2.0)  # base 2 -> base e (0.6931471805599453)


def softmax_shift(lse: torch.Tensor) -> torch.Tensor:
    """What to subtract from a row's scores before ``exp``: its lse where finite, else 0 (a row with no key,
    -inf, gets exp(-inf - 0) = 0 everywhere, not NaN)."""
    return torch.nan_to_num(lse, nan=0.0, posinf=0.0, neginf=0.0)
