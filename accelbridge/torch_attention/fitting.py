"""Launch configs the GPU can hold: each Triton launcher lists its configs best first (tuned on an
H200), and the first whose compiled kernel fits this device runs.

Triton refuses a kernel that needs more shared memory (or threads) than the device has before it
launches it (``OutOfResources``, the error its autotuner prunes configs by), so passing to the next
config is safe: nothing was written. An H200 holds 227 KB a block (its first configs take up to
221 KB), an A100 163 KB, an L40S or RTX 4090 99 KB. Each config passed over is logged once, so
a smaller GPU's slower config is never silent, and a config found too big is not tried again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

log = logging.getLogger("accelbridge")
Config = TypeVar("Config")
Result = TypeVar("Result")
_TOO_BIG: set[tuple[Any, ...]] = set()  # (key, config) this process found the device cannot hold


def _out_of_resources(error: Exception) -> bool:
    from triton.runtime.errors import OutOfResources

    return isinstance(error, OutOfResources)


def first_fitting(key: tuple[Any, ...], configs: Sequence[Config], launch: Callable[[Config], Result]) -> Result:
    """``launch(config)`` with the first of ``configs`` this device holds.

    ``key`` names the kernel, the device and what sizes the kernel's shared memory besides the
    config (head dims, dtype, variant flags): a config found too big for a key is not tried again.
    Errors other than running out of resources, and running out on the last config, propagate.
    """
    last = len(configs) - 1
    for at, config in enumerate(configs):
        if at < last and (key, config) in _TOO_BIG:
            continue
        try:
            return launch(config)
        except Exception as error:
            if at == last or not _out_of_resources(error):
                raise
            _TOO_BIG.add((key, config))
            log.warning("torch provider: %s (%s) does not fit this GPU with launch config %s (%s); trying %s",
                        key[0], ", ".join(map(str, key[1:])), config, error, configs[at + 1])  # fmt: skip
    raise ValueError(f"no launch config for {key[0]}")  # only with an empty list
