"""Every environment variable accelbridge reads, declared once; docs/env.md is checked against this table.

Callers read through ``get(NAME)`` (the stripped value, or the declared default), so a variable
is never read under two spellings or with two defaults.
"""

from __future__ import annotations

import difflib
import os
import warnings
from dataclasses import dataclass

from accelbridge.errors import caller_stacklevel


@dataclass(frozen=True)
class Variable:
    name: str
    default: str
    effect: str
    own: bool = True  # accelbridge's own (else honoured from the engine or `kernels`)


VARIABLES: dict[str, Variable] = {
    v.name: v
    for v in (
        Variable("ACCELBRIDGE_PLATFORM", "", "force a platform by name; unknown or absent hardware is an error"),
        Variable("ACCELBRIDGE_SIMULATE", "", "simulate a platform from a spec such as cuda:sm90:toolkit=12.8"),
        Variable("ACCELBRIDGE_CATALOG_PATH", "", "catalog overlay files or directories, os.pathsep-separated"),
        Variable("ACCELBRIDGE_PROVIDERS", "", "pin providers per op family or op id: fa3=sgl-kernel,..."),
        Variable("ACCELBRIDGE_CHECKS", "cheap", "argument checks before the kernel: full | cheap | off"),
        Variable("ACCELBRIDGE_CACHE_DIR", "", "holds kernels.lock (default ~/.cache/accelbridge)"),
        Variable("ACCELBRIDGE_LOCK_TIMEOUT", "600", "seconds a rank waits for another's hub download before failing"),
        Variable("ACCELBRIDGE_STRICT", "", "1: an accelerator's op served by the reference raises instead of warning"),
        Variable("SGLANG_USE_SGL_FA3_KERNEL", "", "0: prefer the hub FA3 build (a catalog preference)", own=False),
        Variable("LOCAL_KERNELS", "", "kernels' own: ORG/REPO=/path loads a hub provider from a directory", own=False),
        Variable("RANK", "", "launcher's (torchrun's) global rank of this process: shown by info", own=False),
        Variable("LOCAL_RANK", "", "launcher's rank on this node: the device when none is selected", own=False),
        Variable("WORLD_SIZE", "", "launcher's number of processes: shown by info", own=False),
        Variable("HF_HUB_OFFLINE", "", "1: kernels uses only the local Hugging Face cache", own=False),
    )
}


_looked = False  # whether the environment was searched for misspelt names (once per process)


def get(name: str) -> str:
    """The variable's stripped value, or its declared default when unset or empty."""
    if not _looked:
        warn_unknown()
    var = VARIABLES[name]
    return os.environ.get(name, "").strip() or var.default


def warn_unknown() -> list[str]:
    """Warn once per process about each ``ACCELBRIDGE_*`` variable accelbridge does not read (a misspelling is
    otherwise silently ignored), with the closest declared name. Returns the unknown names."""
    global _looked
    _looked = True
    own = [n for n, v in VARIABLES.items() if v.own]
    unknown = sorted(n for n in os.environ if n.startswith("ACCELBRIDGE_") and n not in VARIABLES)
    for name in unknown:
        close = difflib.get_close_matches(name, own, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else f"; accelbridge reads {', '.join(own)}"
        warnings.warn(f"accelbridge: environment variable {name} is not one accelbridge reads, ignored{hint}",
                      RuntimeWarning, stacklevel=caller_stacklevel())  # fmt: skip
    return unknown
