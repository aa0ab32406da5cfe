"""Vendor-qualified architecture names.

A capability tuple alone is ambiguous: ROCm gfx90a reports (9, 0) and MUSA S5000 reports
(3, 1). Every arch therefore carries its family (sm, gfx, mp, cpu, or a plugin's), and
ordering is defined inside one family only; comparing across families is an error.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from accelbridge.errors import PlatformError


class ArchMismatchError(PlatformError, TypeError):
    """Two archs of different vendor families were compared."""


@dataclass(frozen=True)
class ArchFamily:
    prefix: str
    vendor: str
    parse: Callable[[str], Arch | None]
    examples: tuple[str, ...]


_FAMILIES: dict[str, ArchFamily] = {}


@dataclass(frozen=True)
class Arch:
    """One architecture, e.g. sm90, gfx942, mp31, cpu.

    ``version`` orders archs of one family: (major, minor) for sm and mp,
    (major, minor, stepping) for gfx. ``suffix`` (sm_90a's ``a``) names a build target
    and takes no part in comparisons.
    """

    family: str
    version: tuple[int, ...]
    suffix: str = field(default="", compare=False)

    @property
    def vendor(self) -> str:
        return _FAMILIES[self.family].vendor

    @property
    def name(self) -> str:
        if self.family == "cpu":
            return "cpu"
        if self.family == "gfx":
            major, minor, stepping = self.version
            return f"gfx{major}{minor:x}{stepping:x}"
        return f"{self.family}{''.join(str(v) for v in self.version)}{self.suffix}"

    @property
    def capability(self) -> tuple[int, int]:
        """(major, minor) as the vendor runtime reports it."""
        if self.family == "cpu":
            return (0, 0)
        return (self.version[0], self.version[1])

    def __str__(self) -> str:
        return self.name

    def _checked(self, other: object) -> tuple[int, ...]:
        if not isinstance(other, Arch):
            return NotImplemented  # type: ignore[return-value]
        if other.family != self.family:
            raise ArchMismatchError(
                f"cannot compare {self.name} ({self.vendor}) with {other.name} ({other.vendor}): "
                "arch order holds inside one vendor family only"
            )
        return other.version

    def __lt__(self, other: object) -> bool:
        o = self._checked(other)
        return o is NotImplemented or self.version < o

    def __le__(self, other: object) -> bool:
        o = self._checked(other)
        return o is NotImplemented or self.version <= o

    def __gt__(self, other: object) -> bool:
        o = self._checked(other)
        return o is NotImplemented or self.version > o

    def __ge__(self, other: object) -> bool:
        o = self._checked(other)
        return o is NotImplemented or self.version >= o

    @classmethod
    def parse(cls, text: str) -> Arch:
        """Parse ``sm90``, ``sm_90a``, ``gfx942``, ``mp31``, ``cpu`` or a plugin family's name."""
        token = text.strip().lower() if isinstance(text, str) else text
        if isinstance(token, str):
            for family in _FAMILIES.values():
                if token.startswith(family.prefix):
                    arch = family.parse(token)
                    if arch is not None:
                        return arch
        examples = ", ".join(e for f in _FAMILIES.values() for e in f.examples)
        raise PlatformError(f"unknown arch {text!r}: expected one of the forms {examples}")


def register_family(prefix: str, vendor: str, examples: tuple[str, ...] = ()) -> None:
    """Let an out-of-tree platform name its archs ``PREFIX<major><minor>`` (e.g. ``xpu12``)."""
    if prefix in _FAMILIES and _FAMILIES[prefix].vendor != vendor:
        raise PlatformError(f"arch family {prefix!r} already belongs to vendor {_FAMILIES[prefix].vendor!r}")
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)(\d)$")

    def parse(token: str) -> Arch | None:
        m = pattern.match(token)
        return Arch(prefix, (int(m.group(1)), int(m.group(2)))) if m else None

    _FAMILIES[prefix] = ArchFamily(prefix, vendor, parse, examples or (f"{prefix}12",))


_SM = re.compile(r"^sm_?(\d+)(\d)([af]?)$")
_GFX = re.compile(r"^gfx(\d+)([0-9a-f])([0-9a-f])$")
_MP = re.compile(r"^mp(\d+)(\d)$")


def _parse_sm(token: str) -> Arch | None:
    m = _SM.match(token)
    return Arch("sm", (int(m.group(1)), int(m.group(2))), m.group(3)) if m else None


def _parse_gfx(token: str) -> Arch | None:
    m = _GFX.match(token)
    return Arch("gfx", (int(m.group(1)), int(m.group(2), 16), int(m.group(3), 16))) if m else None


def _parse_mp(token: str) -> Arch | None:
    m = _MP.match(token)
    return Arch("mp", (int(m.group(1)), int(m.group(2)))) if m else None


def _parse_cpu(token: str) -> Arch | None:
    return Arch("cpu", ()) if token == "cpu" else None


_FAMILIES.update(
    {
        "sm": ArchFamily("sm", "nvidia", _parse_sm, ("sm80", "sm_90a", "sm100")),
        "gfx": ArchFamily("gfx", "amd", _parse_gfx, ("gfx90a", "gfx942", "gfx1100")),
        "mp": ArchFamily("mp", "mthreads", _parse_mp, ("mp21", "mp31")),
        "cpu": ArchFamily("cpu", "cpu", _parse_cpu, ("cpu",)),
    }
)


def family_vendor(family: str) -> str:
    return _FAMILIES[family].vendor
