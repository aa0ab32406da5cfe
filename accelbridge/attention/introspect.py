"""Public inspection of resolutions: what conformance, selftest, bench and the CLI use.

Nothing here reaches into caches: each answer comes from the op's chain on the current platform.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from accelbridge.attention.facade import chain
from accelbridge.attention.resolver import Candidate


@dataclass
class ProviderCall:
    """One provider of one op here: its compiled call (canonical arguments, in order) and its reasons."""

    op: str
    provider: str
    _candidate: Candidate
    _call: Callable[[], Callable[..., Any]]

    @property
    def viable(self) -> bool:
        return self._candidate.viable

    @property
    def reasons(self) -> list[str]:
        """Why it cannot serve the op at all here (empty when viable)."""
        return list(self._candidate.reasons)

    @property
    def notes(self) -> list[str]:
        return list(self._candidate.binding.notes) if self._candidate.binding else []

    def call_reasons(self, values: dict[str, Any]) -> list[str]:
        """Why it cannot serve a call with these canonical argument values (empty: it can)."""
        return self._candidate.binding.call_reasons(values) if self._candidate.binding else self.reasons

    def __call__(self, *args: Any) -> Any:
        """Call it with the canonical arguments in order (the facade's own steady-state path)."""
        return self._call()(*args)


def candidates(op: str) -> list[str]:
    """The candidate provider ids of ``op`` on the current platform, in resolution order."""
    return list(chain(op).ids)


def provider(op: str, provider_id: str) -> ProviderCall | None:
    """Provider ``provider_id`` of ``op`` here (examined, loaded), or None if it is not a candidate."""
    c = chain(op)
    i = c.index(provider_id)
    if i is None:
        return None
    return ProviderCall(op, provider_id, c.candidate(i), lambda: c.call(i))


def selected(op: str) -> str | None:
    """The provider a plain call of ``op`` reaches here (None: none can)."""
    c = chain(op)
    i = c.first_viable()
    return None if i is None else c.ids[i]
