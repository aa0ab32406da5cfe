"""Schema 1 of a catalog file and its validator, which collects every located error."""

from __future__ import annotations

import difflib
import re
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet

from accelbridge import ops
from accelbridge.errors import PlatformError
from accelbridge.kernels_catalog.errors import Issue
from accelbridge.kernels_catalog.yamlmarks import Document, Path
from accelbridge.platforms.arch import family_vendor
from accelbridge.platforms.dtypes import DTYPE_NAMES
from accelbridge.platforms.rules import ArchRule, parse_int_rule

SCHEMA_VERSION = 1
TOP_KEYS: dict[str, Any] = {"schema": int, "platform": str, "description": str, "providers": dict, "order": dict}
PROVIDER_KEYS: dict[str, Any] = {
    "description": str,
    "source": dict,
    "install": str,
    "requires": dict,
    "ops": dict,
    "trusted": bool,
    "validates": list,
}
# what a provider's kernel checks itself, with a clear error (the facade's cheap level then skips it)
VALIDATES = ("dtype", "shape", "device")
SOURCE_KINDS = ("module", "hub", "path", "builtin")
SOURCE_KEYS: dict[str, Any] = {
    "module": str,
    "hub": str,
    "version": int,
    "revision": str,
    "path": str,
    "package": str,
    "builtin": str,
}
# a builtin source -> the module its functions are read from (None: the op declarations' reference functions)
BUILTINS: dict[str, str | None] = {"torch": "accelbridge.torch_attention", "reference": None}
ANY_PLATFORM = "*"  # a file for every platform (the built-in providers' catalogs/builtin.yaml)
REQUIRES_KEYS: dict[str, Any] = {
    "arch": (str, list),
    "toolkit": str,
    "torch": str,
    "dtypes": list,
    "head_dim": (str, list),
}
OP_KEYS: dict[str, Any] = {"function": str, "description": str, "requires": dict, "adapt": dict}
ADAPT_KEYS: dict[str, Any] = {
    "rename": dict,
    "window": str,
    "returns": str,
    "constants": dict,
    "emulate": str,
    "kwargs": list,
    "ignores": list,
    "refuses": list,
}
REFUSE_KEYS: dict[str, Any] = {"args": list, "when": str, "why": str}
WINDOW_MODES = ("auto", "as-is", "none-for-infinite", "none-if-infinite", "triple")
RETURN_MODES = ("auto", "out", "always-tuple")
EMULATIONS = ("kvcache-via-varlen", "mla-decode-via-csr")
_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_IDENT = re.compile(r"^[A-Za-z_]\w*$")
_TYPE_NAMES = {int: "an integer", str: "a string", dict: "a mapping", list: "a list", bool: "true or false"}


def _type_name(t: Any) -> str:
    if isinstance(t, tuple):
        return " or ".join(_type_name(x) for x in t)
    return _TYPE_NAMES[t]


def _is(value: Any, t: Any) -> bool:
    types = t if isinstance(t, tuple) else (t,)
    if isinstance(value, bool) and bool not in types:
        return False  # YAML `true` is no integer
    return isinstance(value, types)


def did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Validator:
    """Validates one parsed document against schema 1.

    ``known_ops`` maps provider ids defined by earlier files of the same platform to the ops
    they serve, so an overlay's ``order`` may name built-in providers.
    """

    def __init__(self, doc: Document, platform_families: dict[str, str], known_ops: dict[str, set[str]]):
        self.doc = doc
        self.families = platform_families
        self.known_ops = known_ops
        self.issues: list[Issue] = list(doc.issues)
        self.family: str | None = None

    def error(self, path: Path, message: str, key: bool = False) -> None:
        self.issues.append(self.doc.at(path, message, key=key))

    def mapping(self, path: Path, value: Any, keys: dict[str, Any], what: str) -> dict[str, Any]:
        """Keep the known keys of a mapping whose values have the right type; report the rest."""
        if not isinstance(value, dict):
            self.error(path, f"{what} must be a mapping, got {type(value).__name__}")
            return {}
        good = {}
        for k, v in value.items():
            if k not in keys:
                self.error(path + (k,), f"unknown key {k!r} in {what}{did_you_mean(k, keys)}", key=True)
            elif not _is(v, keys[k]):
                self.error(path + (k,), f"{what}: {k!r} must be {_type_name(keys[k])}, got {type(v).__name__}")
            else:
                good[k] = v
        return good

    # -- top level --------------------------------------------------------------------------
    def validate(self) -> list[Issue]:
        top = self.mapping((), self.doc.data, TOP_KEYS, "the catalog")
        if not isinstance(self.doc.data, dict):
            return self.issues
        for required in ("schema", "platform"):
            if required not in self.doc.data:
                self.error((), f"missing required key {required!r} at the top level")
        if "schema" in top and top["schema"] != SCHEMA_VERSION:
            self.error(("schema",), f"unsupported schema {top['schema']!r}: this accelbridge reads schema 1")
        if "platform" in top:
            name = top["platform"]
            if name == ANY_PLATFORM:
                pass  # no arch family: its arch rules name none
            elif name not in self.families:
                valid = ", ".join(sorted(self.families))
                close = did_you_mean(name, self.families)
                plugin = ("" if close else " (a platform of an out-of-tree plugin exists once its package is "
                          "installed: `accelbridge info` lists the plugins found)")  # fmt: skip
                self.error(("platform",), f"unknown platform {name!r}{close}; valid: {valid}{plugin}")
            else:
                self.family = self.families[name]
        ops_of: dict[str, set[str]] = {k: set(v) for k, v in self.known_ops.items()}
        for pid, provider in top.get("providers", {}).items():
            path = ("providers", pid)
            if not isinstance(pid, str) or not pid:
                self.error(path, f"provider id {pid!r} must be a non-empty string", key=True)
                continue
            if provider is None:  # an overlay removing a provider
                ops_of.pop(pid, None)
                continue
            served = self.provider(path, provider)
            ops_of[pid] = (ops_of.get(pid, set()) | served) if pid in self.known_ops else served
        for op, ids in top.get("order", {}).items():
            self.order(("order", op), op, ids, ops_of)
        return self.issues

    def op_id(self, path: Path, op: Any) -> bool:
        if op in ops.OPS:
            return True
        self.error(path, f"unknown op {op!r}{did_you_mean(op, ops.ids())}; valid ops: {', '.join(ops.ids())}", key=True)
        return False

    def order(self, path: Path, op: Any, ids: Any, ops_of: dict[str, set[str]]) -> None:
        if not self.op_id(path, op):
            return
        if not isinstance(ids, list):
            self.error(path, f"order of {op}: must be a list of provider ids, got {type(ids).__name__}")
            return
        if not ids:
            self.error(path, f"order of {op} is empty: list at least one provider (e.g. torch, reference)")
        for i, pid in enumerate(ids):
            if not isinstance(pid, str):
                self.error(path + (i,), f"order of {op}: entries are provider ids (strings), got {type(pid).__name__}")
            elif pid not in ops_of:
                defined = ", ".join(sorted(ops_of)) or "none"
                self.error(path + (i,), f"order of {op}: provider {pid!r} is not defined{did_you_mean(pid, ops_of)}; "
                           f"defined: {defined}")  # fmt: skip
            elif op not in ops_of[pid]:
                self.error(path + (i,), f"order of {op}: provider {pid!r} does not serve {op} (no ops.{op} entry)")
        seen = set()
        for i, pid in enumerate(ids):
            if not isinstance(pid, str):
                continue
            if pid in seen:
                self.error(path + (i,), f"order of {op}: provider {pid!r} is listed twice")
            seen.add(pid)

    # -- providers ----------------------------------------------------------------------------
    def provider(self, path: Path, provider: Any) -> set[str]:
        p = self.mapping(path, provider, PROVIDER_KEYS, f"provider {path[-1]!r}")
        if isinstance(provider, dict) and "source" not in provider and path[-1] not in self.known_ops:
            self.error(path, f"provider {path[-1]!r} has no 'source' (module, hub, path or builtin)")
        if "source" in p:
            self.source(path + ("source",), p["source"])
        if "requires" in p:
            self.requires(path + ("requires",), p["requires"])
        for i, what in enumerate(p.get("validates", [])):
            if what not in VALIDATES:
                self.error(path + ("validates", i), f"validates: unknown check kind {what!r}"
                           f"{did_you_mean(str(what), VALIDATES)}; valid: {', '.join(VALIDATES)}")  # fmt: skip
        served: set[str] = set()
        for op, entry in p.get("ops", {}).items():
            if not self.op_id(path + ("ops", op), op):
                continue
            served.add(op)
            if entry is not None:  # null removes an op in an overlay
                self.op_entry(path + ("ops", op), op, entry)
        return served

    def source(self, path: Path, source: dict[str, Any]) -> None:
        s = self.mapping(path, source, SOURCE_KEYS, "source")
        kinds = [k for k in SOURCE_KINDS if k in source]
        if len(kinds) != 1:
            got = ", ".join(kinds) if kinds else "none"
            self.error(path, f"source needs exactly one of module, hub, path, builtin (got {got})")
            return
        kind = kinds[0]
        if kind == "hub":
            pinned = [k for k in ("version", "revision") if k in source]
            if not pinned:
                self.error(path, f"hub source {source['hub']!r} is not pinned: add `version: N` or `revision: REV`")
            elif len(pinned) == 2:
                self.error(path + ("revision",), "hub source: give `version` or `revision`, not both", key=True)
            if "hub" in s and not re.match(r"^[\w.-]+/[\w.-]+$", s["hub"]):
                self.error(path + ("hub",), f"hub source {s['hub']!r} must be ORG/REPO")
            if "version" in s and s["version"] < 1:
                self.error(path + ("version",), f"hub version must be >= 1, got {s['version']}")
        for extra, needs in (("version", "hub"), ("revision", "hub"), ("package", "path")):
            if extra in source and kind != needs:
                self.error(path + (extra,), f"source key {extra!r} only goes with {needs!r}", key=True)
        if kind == "module" and "module" in s and not _DOTTED.match(s["module"]):
            self.error(path + ("module",), f"module {s['module']!r} is not a dotted module name")
        if kind == "builtin" and "builtin" in s and s["builtin"] not in BUILTINS:
            b = s["builtin"]
            valid = ", ".join(BUILTINS)
            self.error(path + ("builtin",), f"unknown builtin {b!r}{did_you_mean(b, BUILTINS)}; valid: {valid}")

    def requires(self, path: Path, requires: dict[str, Any]) -> None:
        r = self.mapping(path, requires, REQUIRES_KEYS, "requires")
        if "arch" in r:
            try:
                rule = ArchRule.parse(r["arch"])
            except PlatformError as e:
                self.error(path + ("arch",), f"bad arch rule: {e}{_arch_hint(r['arch'])}")
            else:
                if self.family and rule.family != self.family:
                    vendor = family_vendor(rule.family)
                    self.error(
                        path + ("arch",),
                        f"arch rule {rule} names {vendor} archs, but this file is for platform "
                        f"{self.doc.data.get('platform')!r} ({self.family} archs, e.g. {_example(self.family)})",
                    )
        for key in ("toolkit", "torch"):
            if key in r:
                try:
                    SpecifierSet(r[key])
                except InvalidSpecifier:
                    self.error(path + (key,), f"bad {key} version specifier {r[key]!r}: use PEP 440, e.g. '>=12.3'")
        if "head_dim" in r:
            try:
                parse_int_rule(r["head_dim"])
            except PlatformError as e:
                self.error(path + ("head_dim",), f"bad head_dim rule: {e}")
        for i, name in enumerate(r.get("dtypes", [])):
            if name not in DTYPE_NAMES:
                valid = ", ".join(DTYPE_NAMES)
                alias = DTYPE_ALIASES.get(name) if isinstance(name, str) else None
                hint = f" (did you mean {alias!r}?)" if alias else did_you_mean(name, DTYPE_NAMES)
                self.error(path + ("dtypes", i), f"unknown dtype {name!r}{hint}; valid: {valid}")

    def op_entry(self, path: Path, op: str, entry: Any) -> None:
        e = self.mapping(path, entry, OP_KEYS, f"op {op}")
        if isinstance(entry, dict) and "function" not in entry:
            self.error(path, f"op {op} needs 'function': the attribute path under the source module")
        if "function" in e and not _DOTTED.match(e["function"]):
            self.error(path + ("function",), f"function {e['function']!r} is not a dotted identifier path")
        if "requires" in e:
            self.requires(path + ("requires",), e["requires"])
        if "adapt" in e:
            self.adapt(path + ("adapt",), op, e["adapt"])

    def refusal(self, path: Path, op: str, refusal: Any) -> None:
        r = self.mapping(path, refusal, REFUSE_KEYS, "a refusal")
        if isinstance(refusal, dict) and not {"args", "when"} <= set(refusal):
            self.error(path, "a refusal needs 'args' (the arguments refused) and 'when' (a condition on the call)")
        canonical = ops.get(op).names
        for i, name in enumerate(r.get("args", [])):
            if name not in canonical:
                hint = did_you_mean(name, canonical)
                self.error(path + ("args", i), f"refuses: {name!r} is no argument of {op}{hint}")
        if isinstance(r.get("when"), str):
            problem = _expression_error(op, r["when"])
            if problem:
                self.error(path + ("when",), f"refuses: when {r['when']!r} {problem}")

    def adapt(self, path: Path, op: str, adapt: dict[str, Any]) -> None:
        a = self.mapping(path, adapt, ADAPT_KEYS, "adapt")
        canonical = ops.get(op).names
        for name, target in a.get("rename", {}).items():
            if name not in canonical:
                hint = did_you_mean(name, canonical)
                self.error(path + ("rename", name), f"rename: {name!r} is no argument of {op}{hint}", key=True)
            if not isinstance(target, str) or not _IDENT.match(target):
                self.error(path + ("rename", name), f"rename: target {target!r} must be a parameter name")
        for key, modes in (("window", WINDOW_MODES), ("returns", RETURN_MODES), ("emulate", EMULATIONS)):
            if key in a and a[key] not in modes:
                self.error(path + (key,), f"adapt.{key}: unknown value {a[key]!r}{did_you_mean(a[key], modes)}; "
                           f"valid: {', '.join(modes)}")  # fmt: skip
        if a.get("emulate") == "kvcache-via-varlen" and not op.endswith(".kvcache"):
            self.error(path + ("emulate",), f"adapt.emulate kvcache-via-varlen only applies to kvcache ops, not {op}")
        if a.get("emulate") == "mla-decode-via-csr" and op != "flashmla.kvcache":
            self.error(
                path + ("emulate",), f"adapt.emulate mla-decode-via-csr only applies to flashmla.kvcache, not {op}"
            )
        for name in a.get("constants", {}):
            if not isinstance(name, str) or not _IDENT.match(name):
                self.error(path + ("constants", name), f"constants: {name!r} must be a parameter name", key=True)
        for i, refusal in enumerate(a.get("refuses", [])):
            self.refusal(path + ("refuses", i), op, refusal)
        for key in ("kwargs", "ignores"):
            for i, name in enumerate(a.get(key, [])):
                if name not in canonical:
                    self.error(
                        path + (key, i), f"{key}: {name!r} is no argument of {op}{did_you_mean(name, canonical)}"
                    )


# what people type for a dtype (torch's names) and an arch (marketing names, capabilities)
DTYPE_ALIASES = {"float16": "fp16", "half": "fp16", "bfloat16": "bf16", "float32": "fp32", "float": "fp32",
                 "float8_e4m3fn": "fp8_e4m3", "float8_e4m3fnuz": "fp8_e4m3", "float8_e5m2": "fp8_e5m2"}  # fmt: skip
ARCH_ALIASES = {"volta": "sm70", "turing": "sm75", "ampere": "sm80", "ada": "sm89", "hopper": "sm90",
                "blackwell": "sm100", "mi200": "gfx90a", "mi250": "gfx90a", "mi300": "gfx942",
                "mi350": "gfx950"}  # fmt: skip
_CAPABILITY = re.compile(r"(\d+)\.(\d+)")


def _arch_hint(rule: Any) -> str:
    """' (did you mean ...)' for an arch written as a GPU generation or a capability: hopper, >=8.0."""
    items = rule if isinstance(rule, list) else [rule]
    if not all(isinstance(x, str) for x in items):
        return ""
    text = " ".join(items)
    fixed = _CAPABILITY.sub(lambda m: f"sm{m.group(1)}{m.group(2)}", text)
    for name, arch in ARCH_ALIASES.items():
        fixed = re.sub(rf"\b{name}\b", arch, fixed, flags=re.IGNORECASE)
    return f" (did you mean {fixed!r}?)" if fixed != text else ""


def _expression_error(op: str, expr: str) -> str | None:
    """Why ``expr`` is no valid condition over ``op``'s arguments (None: it is)."""
    import ast
    import builtins

    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as e:
        return f"is no Python expression ({e.msg})"
    from accelbridge.ops.spec import EXPRESSION_ENV

    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} - set(ops.get(op).names) - set(EXPRESSION_ENV)
    unknown = sorted(n for n in names if not hasattr(builtins, n))
    return f"reads {', '.join(unknown)}, which are no arguments of {op}" if unknown else None


def _example(family: str) -> str:
    return {"sm": "sm90", "gfx": "gfx942", "mp": "mp31", "cpu": "cpu"}.get(family, f"{family}12")
