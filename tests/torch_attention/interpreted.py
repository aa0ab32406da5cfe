"""Running the torch provider's Triton kernels under Triton's interpreter, on CPU tensors.

The interpreter must be on before the kernels are built, so each check runs in a fresh process
with ``TRITON_INTERPRET=1``; it has no bf16 ``tl.dot``, which the kernels then take in float32.
"""

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def _version(package: str) -> tuple[int, ...]:
    return tuple(int(x) for x in importlib.metadata.version(package).split(".")[:2] if x.isdigit())


def not_ready() -> str | None:
    """Why the interpreter cannot run here (None: it can)."""
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed"
    if _version("numpy") >= (2, 3) and _version("triton") < (3, 9):
        return "Triton's interpreter before 3.9 needs numpy < 2.3"
    return None


def run(code: str, timeout: float = 900) -> object:
    """Run ``code`` (which prints one JSON value last) interpreted; that value."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
