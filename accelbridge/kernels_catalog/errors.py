"""Catalog errors: every problem located as FILE:LINE:COL, all collected before raising."""

from __future__ import annotations

from dataclasses import dataclass

from accelbridge.errors import AccelbridgeError


@dataclass(frozen=True, order=True)
class Issue:
    file: str
    line: int  # 1-based
    col: int  # 1-based
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"


class CatalogError(AccelbridgeError, ValueError):
    """One or more catalog problems; ``issues`` holds each, ``str()`` lists them one per line."""

    def __init__(self, issues: list[Issue]):
        self.issues = sorted(issues)
        super().__init__("\n".join(str(i) for i in self.issues))
