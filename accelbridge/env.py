"""Every environment variable accelbridge reads, declared once; docs/env.md is checked against this table.

Callers read through ``get(NAME)`` (the stripped value, or the declared default), so a variable
is never read under two spellings or with two defaults.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


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


def get(name: str) -> str:
    """The variable's stripped value, or its declared default when unset or empty."""
    var = VARIABLES[name]
    return os.environ.get(name, "").strip() or var.default
