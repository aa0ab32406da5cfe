"""Errors of the attention facade."""

from __future__ import annotations

from accelbridge.errors import AccelbridgeError, InvalidArgumentError

__all__ = ["InvalidArgumentError", "NotCompilableError", "ProviderContractError", "ResolutionError",
           "UnsupportedFeatureError"]  # fmt: skip


class ResolutionError(AccelbridgeError, ValueError):
    """A bad op id, env setting or feature name: user input, named in the message."""


class UnsupportedFeatureError(AccelbridgeError, NotImplementedError):
    """No candidate provider can serve this call; names the argument and each provider's reason."""

    def __init__(self, op: str, argument: str | None, reasons: dict[str, list[str]], notes: list[str] = ()):
        self.op, self.argument, self.reasons = op, argument, reasons
        named = argument and argument not in ("dtype", "head_dim")
        what = f" (argument {argument!r})" if named else (f" ({argument})" if argument else "")
        lines = [f"{op}: no provider can serve this call{what}; candidates:"]
        for pid, rs in reasons.items():
            lines.append(f"  {pid}: {'; '.join(rs) or 'viable'}")
        if not reasons:
            lines.append("  none: the catalog lists no provider for this op on this platform")
        lines += [f"  note: {n}" for n in notes]
        said = " ".join([*(r for rs in reasons.values() for r in rs), *notes])
        fixes = ["install a provider that supports it"]  # then only the ways out this call has
        fixes += ["drop the argument"] if named else []
        fixes += ["pin another provider in ACCELBRIDGE_PROVIDERS"] if "ACCELBRIDGE_PROVIDERS" in said else []
        fixes += ["turn strict mode off (ACCELBRIDGE_STRICT)"] if "strict mode" in said else []
        lines.append(f"  fix: {', or '.join(fixes)} (`accelbridge explain {op}`)")
        super().__init__("\n".join(lines))


class ProviderContractError(AccelbridgeError, RuntimeError):
    """A provider returned something its catalog entry does not describe (fix the entry's adapt block)."""


class NotCompilableError(AccelbridgeError, NotImplementedError):
    """A call that cannot enter a torch.compile graph (an argument with no torch.library type); says the fix."""
