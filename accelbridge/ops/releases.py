"""The provider releases whose signatures the canonical ones come from, and what each one's functions lack.

The facade declares the newest release's parameters (sglang-kernel 0.4.10's). An older release's
function lacks some of them: the adapter reads that from the installed function's own signature
(never from this table), so a call that asks something of a parameter the function lacks goes to the
next provider (``explain`` names the release and signature it found). This table says what changed
between the releases for the docs (signatures.md, the support matrix); tests check each release's
stand-in against it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Release:
    package: str
    version: str
    lacks: dict[str, tuple[str, ...]] = field(default_factory=dict)  # facade function -> parameters it has not
    changes: str = ""  # what this release changed, in a sentence

    @property
    def name(self) -> str:
        return f"{self.package} {self.version}"


RELEASES = (
    Release("sglang-kernel", "0.4.5", {"flash_mla_with_kvcache": ("kv_format",)},
            "sparse decode reads the cache's layout from q's head dim: V3.2 (576, 656 bytes a token) or V4 "
            "(512, 584 bytes)"),
    Release("sglang-kernel", "0.4.10", {},
            "flash_mla_with_kvcache takes kv_format (sparse decode only: V32, V32_NO_ROPE, V4, V41), told by "
            "the bytes a token when None: 528 bytes is V3.2-no-RoPE under tensor metadata, V4.1 under a "
            "FlashMLASchedMeta; flash_attn is unchanged; new flash_mla_mega (fused-RoPE MLA, no facade op)"),
)  # fmt: skip


def lacking(function: str, parameter: str) -> tuple[Release, ...]:
    """The releases whose ``function`` has no ``parameter``."""
    return tuple(r for r in RELEASES if parameter in r.lacks.get(function, ()))
