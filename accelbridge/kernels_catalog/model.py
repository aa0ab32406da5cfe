"""The merged catalog as typed objects: what the resolver reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from accelbridge.platforms.rules import ArchRule, Rule, parse_int_rule


@dataclass(frozen=True)
class Requirements:
    """Every held rule must pass (provider-level rules AND op-level rules)."""

    arch: tuple[ArchRule, ...] = ()
    toolkit: tuple[SpecifierSet, ...] = ()
    torch: tuple[SpecifierSet, ...] = ()
    dtypes: tuple[frozenset[str], ...] = ()
    head_dim: tuple[Rule[int], ...] = ()

    @classmethod
    def from_data(cls, data: dict[str, Any] | None) -> Requirements:
        data = data or {}
        return cls(
            arch=(ArchRule.parse(data["arch"]),) if "arch" in data else (),
            toolkit=(SpecifierSet(data["toolkit"]),) if "toolkit" in data else (),
            torch=(SpecifierSet(data["torch"]),) if "torch" in data else (),
            dtypes=(frozenset(data["dtypes"]),) if "dtypes" in data else (),
            head_dim=(parse_int_rule(data["head_dim"]),) if "head_dim" in data else (),
        )

    def __and__(self, other: Requirements) -> Requirements:
        return Requirements(*(a + b for a, b in zip(self._fields(), other._fields())))

    def _fields(self) -> tuple[tuple[Any, ...], ...]:
        return (self.arch, self.toolkit, self.torch, self.dtypes, self.head_dim)

    def platform_reasons(self, platform: Any, torch_version: Version, device: int | None = None) -> list[str]:
        """Why this platform (the arch of ``device``, default this process's; toolkit) and torch cannot serve."""
        reasons = []
        arch = platform.arch(device)
        for rule in self.arch:
            if not rule.matches(arch):
                reasons.append(f"needs arch {rule}, this is {arch.name}")
        toolkit = platform.toolkit_version
        for spec in self.toolkit:
            if toolkit is None:
                reasons.append(f"needs toolkit {spec}, {platform.name} reports none")
            elif not spec.contains(toolkit, prereleases=True):
                reasons.append(f"needs toolkit {spec}, this is {toolkit}")
        for spec in self.torch:
            if not spec.contains(Version(torch_version.base_version), prereleases=True):
                reasons.append(f"needs torch {spec}, this is {torch_version}")
        return reasons

    def describe(self) -> dict[str, str]:
        out = {}
        if self.arch:
            out["arch"] = " and ".join(f"({r})" if len(self.arch) > 1 else str(r) for r in self.arch)
        if self.toolkit:
            out["toolkit"] = ",".join(str(s) for s in self.toolkit)
        if self.torch:
            out["torch"] = ",".join(str(s) for s in self.torch)
        if self.dtypes:
            out["dtypes"] = " & ".join(", ".join(sorted(d)) for d in self.dtypes)
        if self.head_dim:
            out["head_dim"] = " and ".join(str(r) for r in self.head_dim)
        return out


@dataclass(frozen=True)
class Source:
    kind: str  # module | hub | path | builtin
    target: str  # module name, ORG/REPO, absolute directory, or builtin name
    version: int | None = None
    revision: str | None = None
    package: str | None = None

    def describe(self) -> str:
        if self.kind == "hub":
            pin = f"version {self.version}" if self.version is not None else f"revision {self.revision}"
            return f"hub {self.target} ({pin})"
        return f"{self.kind} {self.target}"


@dataclass(frozen=True)
class Adapt:
    rename: dict[str, str] = field(default_factory=dict)
    window: str = "auto"  # auto: read from the provider's own window_size default
    returns: str = "auto"
    constants: dict[str, Any] = field(default_factory=dict)
    emulate: str | None = None
    kwargs: tuple[str, ...] = ()
    ignores: tuple[str, ...] = ()  # accepted by the signature but not honoured: such calls go elsewhere
    # arguments the kernel refuses under a condition on the call: (args, when-expression, why)
    refuses: tuple[tuple[tuple[str, ...], str, str], ...] = ()

    @classmethod
    def from_data(cls, data: dict[str, Any] | None) -> Adapt:
        data = data or {}
        return cls(
            rename=dict(data.get("rename", {})),
            window=data.get("window", "auto"),
            returns=data.get("returns", "auto"),
            constants=dict(data.get("constants", {})),
            emulate=data.get("emulate"),
            kwargs=tuple(data.get("kwargs", ())),
            ignores=tuple(data.get("ignores", ())),
            refuses=tuple((tuple(r["args"]), r["when"], r.get("why", "")) for r in data.get("refuses", ())),
        )


@dataclass(frozen=True)
class OpEntry:
    op: str
    function: str
    requires: Requirements  # provider-level AND op-level
    adapt: Adapt
    origin: str
    validates: frozenset[str] = frozenset()  # checks the provider's kernel performs itself (dtype, shape, device)


@dataclass(frozen=True)
class Provider:
    id: str
    source: Source
    description: str
    install: str | None
    trusted: bool
    ops: dict[str, OpEntry]
    origin: str


@dataclass(frozen=True)
class Catalog:
    platform: str
    providers: dict[str, Provider]
    order: dict[str, tuple[str, ...]]
    files: tuple[str, ...]

    def candidates(self, op: str) -> tuple[str, ...]:
        """Provider ids for ``op`` in resolution order: the `order` list, else definition order."""
        if op in self.order:
            return self.order[op]
        return tuple(pid for pid, p in self.providers.items() if op in p.ops)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of `accelbridge catalog show --json`."""
        return {
            "platform": self.platform,
            "files": list(self.files),
            "providers": {
                pid: {
                    "source": p.source.describe(),
                    "description": p.description,
                    "install": p.install,
                    "trusted": p.trusted,
                    "from": p.origin,
                    "ops": {
                        op: {
                            "function": e.function,
                            "requires": e.requires.describe(),
                            "adapt": {k: v for k, v in vars(e.adapt).items() if v not in ({}, (), None, "auto")},
                            "from": e.origin,
                        }
                        for op, e in p.ops.items()
                    },
                }
                for pid, p in self.providers.items()
            },
            "order": {
                op: list(self.candidates(op))
                for op in sorted({*self.order, *(o for p in self.providers.values() for o in p.ops)})
            },
        }
