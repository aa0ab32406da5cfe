"""The Gluon sm90 dense MLA kernel off the GPU: it compiles for sm90 with this triton and fits an SM's shared
memory (Gluon has no interpreter; tests/gpu runs it), and ``mla_decode`` picks it only where it runs."""

import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from accelbridge.torch_attention import capabilities, mla_decode

from . import interpreted

ROOT = Path(__file__).parents[2]
SM90_SHARED = 232448  # bytes of dynamic shared memory an sm90 block may take (227 KB)


def _gluon() -> str | None:
    if importlib.util.find_spec("triton") is None or importlib.util.find_spec("triton.experimental.gluon") is None:
        return "no triton with Gluon"
    return None


def _signature(kernel, dtype: str, final: bool) -> dict[str, str]:
    """Triton's signature strings for the kernel's arguments: pointers, descriptors, int32 sizes and strides."""
    from triton.experimental.gluon import language as gl

    element = {"bf16": gl.bfloat16, "fp16": gl.float16}[dtype]
    box = {"NOPE": [64, 256], "ROPE": [64, 64]}
    kinds = {"Q": f"*{dtype}", "CACHE": f"*{dtype}", "TABLE": "*i32", "LENS": "*i32", "LSE": "*fp32",
             "OUT": f"*{dtype}" if final else "*fp32", "scale_log2": "fp32"}  # fmt: skip
    for name, shape in box.items():
        kinds[name] = f"tensordesc<{dtype}{shape},{gl.NVMMASharedLayout.get_default_for(shape, element)!r}>"
    return {name: "constexpr" if name.isupper() and name not in kinds else kinds.get(name, "i32")
            for name in kernel.arg_names}  # fmt: skip


_COMPILE = """
import json, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
from accelbridge.torch_attention import mla_decode
from tests.torch_attention.test_mla_decode_gluon import _signature
dtype, final = sys.argv[1], sys.argv[2] == "1"
kernel = mla_decode._sm90_kernel()
consts = {"BLOCK_H": 64, "BLOCK_N": 64, "CAUSAL": True, "FINAL": final}
source = GluonASTSource(kernel, _signature(kernel, dtype, final), consts)
compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 8})
ptx = compiled.asm["ptx"]
print(json.dumps({"shared": compiled.metadata.shared, "wgmma": "wgmma.mma_async" in ptx,
                  "tma": "cp.async.bulk.tensor" in ptx}))
"""


@pytest.mark.deep  # a triton compile per case, in a fresh process
@pytest.mark.skipif(_gluon() is not None, reason=str(_gluon()))
@pytest.mark.parametrize("dtype, final", [("bf16", False), ("bf16", True), ("fp16", True)])
def test_the_gluon_kernel_compiles_for_sm90_within_an_sms_shared_memory(dtype, final):
    """Gluon's API moves between triton releases (3.7 renamed the TMA load, 3.9 the CTA barrier): compiling the
    kernel for sm90 here, without a GPU (in a fresh process: triton's bindings report leaks at exit), catches
    that before a GPU does."""
    done = subprocess.run([sys.executable, "-c", _COMPILE, dtype, "1" if final else "0"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    compiled = json.loads(done.stdout.strip().splitlines()[-1])
    assert 200 * 1024 < compiled["shared"] <= SM90_SHARED  # q and two key tiles (216 KB): one block an SM
    assert compiled["wgmma"] and compiled["tma"]


@pytest.mark.skipif(_gluon() is not None, reason=str(_gluon()))
def test_mla_decode_picks_the_gluon_kernel_only_with_its_block_sizes_on_sm90():
    cache = torch.zeros(4, 64, 2, 576, dtype=torch.bfloat16)[:, :, 1]  # kv head 1 of 2: rows 1152 apart
    sm90 = capabilities.Capabilities("cuda:0", triton=True, tma=True, gluon_sm90=True)
    route = mla_decode._tma_route(cache, (64, 64, 8, 2, 512), sm90)
    descriptors = [make(cache) for make in route.makers(64).values()]
    assert route.gluon and route.kernel is mla_decode._sm90_kernel()
    assert [d.block_shape for d in descriptors] == [[64, 256], [64, 64]]
    assert all(d.layout.swizzle_byte_width == 128 for d in descriptors)
    for config, caps in [((32, 64, 8, 2, 512), sm90), ((64, 32, 8, 2, 512), sm90), ((64, 64, 4, 2, 512), sm90),
                         ((64, 64, 8, 2, 512), dataclasses.replace(sm90, gluon_sm90=False))]:  # fmt: skip
        route = mla_decode._tma_route(cache, config, caps)
        assert not route.gluon and route.kernel is mla_decode._tma_kernel()


def test_the_gluon_kernel_is_said_present_or_missing_with_its_reason():
    described = "\n".join(capabilities.Capabilities("cuda:0", triton=True, tma=True, gluon_sm90=True).describe())
    assert "Gluon sm90 kernel: dense MLA decode" in described
    why = capabilities._gluon_sm90_ready(torch.device("cpu"))
    assert why is not None and "sm90" in why and "interpreter" in why


_BROKEN = """
import dataclasses, json, logging, torch
from triton.compiler.errors import CompilationError
from accelbridge.ops import reference
from accelbridge.torch_attention import capabilities, mla_decode
said, tried = [], []
class Said(logging.Handler):
    def emit(self, record):
        said.append(record.getMessage())
logging.getLogger("accelbridge").addHandler(Said())
caps = capabilities.of(torch.device("cpu"))
capabilities.of = lambda d: dataclasses.replace(caps, gluon_sm90=True)
def broken(*a, **k):
    tried.append(1)
    raise CompilationError(None, None, "async_copy_global_to_shared has been removed; call async_load instead")
from accelbridge.torch_attention.mla_decode_gluon import mla_decode_sm90_kernel
fake = type("K", (), {"__getitem__": lambda self, grid: broken, "arg_names": mla_decode_sm90_kernel.arg_names})()
mla_decode._sm90_kernel = lambda: fake
mla_decode._configs = lambda device, heads: ((64, 64, 8, 1, 512),)
g = torch.Generator().manual_seed(0)
q, cache = (torch.randn(*shape, generator=g).to(torch.bfloat16) for shape in ((2, 1, 64, 576), (4, 64, 1, 576)))
table, lens = torch.arange(4, dtype=torch.int32).view(2, 2), torch.tensor([100, 128], dtype=torch.int32)
diffs = []
for _ in range(2):
    out, lse = mla_decode.mla_decode(q, cache, table, lens, 576**-0.5, True, None, None, False, None)
    want, want_lse = reference.flash_mla_with_kvcache(q, cache, table, lens, 512, causal=True)
    diffs.append(float((out.float() - want.float()).abs().max()))
print(json.dumps({"said": said, "tried": len(tried), "diffs": diffs}))
"""


@pytest.mark.deep  # interpreted
@pytest.mark.skipif(bool(interpreted.not_ready() or _gluon()), reason=str(interpreted.not_ready() or _gluon()))
def test_a_gluon_kernel_this_triton_cannot_compile_hands_over_to_the_triton_one_and_says_so():
    """Under the interpreter, with sm90 pretended and the Gluon launch failing as Gluon's API drift fails it: the
    call still answers (the Triton TMA kernel), one warning names the triton and the error, and the Gluon kernel
    is not tried again."""
    result = interpreted.run(_BROKEN)
    assert result["tried"] == 1 and all(d < 1e-2 for d in result["diffs"]), result
    (said,) = result["said"]
    assert "does not compile with triton" in said and "async_load" in said and "Triton TMA kernel runs" in said
