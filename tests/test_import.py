"""Importing accelbridge stays cheap: no kernel package, no GPU, not even torch."""

import subprocess
import sys

HEAVY = ("sgl_kernel", "kernels", "flash_attn", "torch_musa", "aiter", "mate", "huggingface_hub")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint('\\n'.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split())


def test_import_accelbridge_imports_no_kernel_package():
    mods = _modules_after("import accelbridge")
    assert not {m.split(".")[0] for m in mods} & set(HEAVY)
    assert "torch" not in mods


def test_import_layers_imports_no_kernel_package():
    code = "import accelbridge.platforms, accelbridge.kernels_catalog, accelbridge.attention"
    mods = _modules_after(code)
    assert not {m.split(".")[0] for m in mods} & set(HEAVY)


def test_detection_does_not_initialise_cuda():
    code = (
        "import torch\nfrom accelbridge import platforms\np = platforms.current()\n"
        "assert not torch.cuda.is_initialized(), 'cuda initialised'\nprint(p.name)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_first_cpu_call_through_the_torch_provider_does_not_import_dynamo():
    """torch.nn.attention.varlen imports torch._dynamo (0.85 s of a first call); only a CUDA device needs it."""
    code = "\n".join([
        "import torch", "from accelbridge import attention, platforms",
        "q = torch.zeros(4, 2, 64, dtype=torch.bfloat16)", "cu = torch.tensor([0, 4], dtype=torch.int32)",
        "with platforms.simulated('cpu'):", "    attention.flash_attn_varlen_func(q, q, q, cu, cu, 4, 4, causal=True)",
    ])  # fmt: skip
    assert "torch._dynamo" not in _modules_after(code)


def test_the_built_in_declarations_read_only_known_names():
    """Checked here rather than at every import (``ops.register`` validates a vendor's own at once)."""
    from accelbridge import ops

    for spec in ops.OPS.values():
        spec.validate()


def test_a_declaration_reading_an_unknown_name_is_refused_when_registered():
    import pytest

    from accelbridge import ops
    from accelbridge.errors import DeclarationError
    from accelbridge.ops.spec import Check, Data, OpSpec

    def toy(q: Data):
        """A toy op."""

    spec = OpSpec("toy.op", toy, checks=(Check("q", "q.dim() == rank", "", ""),), features={})
    with pytest.raises(DeclarationError, match=r"toy.op: check on q reads unknown name\(s\) \['rank'\]"):
        ops.register(spec)
    assert "toy.op" not in ops.OPS
