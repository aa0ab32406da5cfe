"""sglang-kernel 0.4.10's sgl_kernel.flash_attn: the same file as 0.4.5's, so the 0.4.5 stand-in's module, run here."""

from pathlib import Path

_SAME = Path(__file__).parents[2] / "fixtures" / "sgl_kernel" / "flash_attn.py"
exec(compile(_SAME.read_text(), str(_SAME), "exec"))  # noqa: S102 - our own test fixture
