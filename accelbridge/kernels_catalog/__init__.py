"""Kernel catalogs: YAML files declaring which providers serve which attention ops, where."""

from accelbridge.kernels_catalog.errors import CatalogError, Issue
from accelbridge.kernels_catalog.loader import (
    BUILTIN_DIR,
    BUILTIN_PROVIDERS,
    clear_cache,
    import_issues,
    load,
    order_warnings,
    overlay_files,
    validate_file,
)
from accelbridge.kernels_catalog.model import Adapt, Catalog, OpEntry, Provider, Requirements, Source

__all__ = [
    "BUILTIN_DIR",
    "BUILTIN_PROVIDERS",
    "Adapt",
    "Catalog",
    "CatalogError",
    "Issue",
    "OpEntry",
    "Provider",
    "Requirements",
    "Source",
    "clear_cache",
    "import_issues",
    "load",
    "order_warnings",
    "overlay_files",
    "validate_file",
]
