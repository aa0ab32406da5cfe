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
