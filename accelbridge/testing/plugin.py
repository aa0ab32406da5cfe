"""pytest plugin (entry point ``pytest11``): capability-gated test runs.

Markers skip with the resolver's own reasons:
``@pytest.mark.platform("cuda", "rocm")``, ``@pytest.mark.arch(">=sm90")``,
``@pytest.mark.op("fa3.kvcache", provider=None)``. ``--accel-simulate SPEC`` makes a
simulated platform current for the whole session.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Iterator

import pytest

from accelbridge.kernels_catalog import BUILTIN_PROVIDERS

_SKIPS: Counter[str] = Counter()
_MARKERS = ("platform", "arch", "op")
_SIMULATION = pytest.StashKey[object]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("accelbridge")
    group.addoption("--accel-simulate", metavar="SPEC", default=None,
                    help="simulate a platform for this run, e.g. cuda:sm90:toolkit=12.8")  # fmt: skip
    group.addoption("--accel-checks", metavar="LEVEL", default="full", choices=("full", "cheap", "off"),
                    help="facade argument checks during the run: full (default in tests: value checks too), "
                         "cheap (production's default), off")  # fmt: skip


def pytest_configure(config: pytest.Config) -> None:
    for line in (
        "platform(*names): run only on these platforms (cuda, rocm, musa, cpu, plugins)",
        "arch(rule, ...): run only where the arch satisfies the rule, e.g. '>=sm90, <sm100'; several arguments are "
        "alternatives (OR)",
        "op(op, provider=None, kernel=False, **features): run only where the op resolves (to that provider, "
        "or to a vendor kernel with kernel=True) for a call with these features (dtype, head_dim, paged, ...)",
    ):
        config.addinivalue_line("markers", line)
    from accelbridge.attention import checks

    checks.set_level(config.getoption("--accel-checks", default="full"))  # tests want every bad argument named
    spec = config.getoption("--accel-simulate", default=None)
    if spec:
        from accelbridge import platforms

        block = platforms.simulated(spec)
        try:
            block.__enter__()
        except Exception as e:  # a bad spec is the user's, not pytest's INTERNALERROR
            raise pytest.UsageError(f"--accel-simulate {spec!r}: {e}") from None
        config.stash[_SIMULATION] = block


def pytest_unconfigure(config: pytest.Config) -> None:
    block = config.stash.get(_SIMULATION, None)
    if block is not None:
        block.__exit__(None, None, None)


def pytest_report_header(config: pytest.Config) -> str:
    from accelbridge import platforms

    p = platforms.current()
    sim = f" (simulated {getattr(p, 'spec', '')})" if p.simulated else ""
    return f"accelbridge: platform {p.name}, arch {p.arch().name}, toolkit {p.toolkit_version or '-'}{sim}"


_OP_KEYWORDS = ("provider", "kernel")
_ALIASES = {"paged": ("page_table", "block_table")}  # the paging argument, whatever the op calls it


def _op_features(op: str, kwargs: dict) -> dict:
    """op(...) keywords -> resolve() features; unknown keywords are a usage error."""
    from accelbridge import ops
    from accelbridge.attention.resolver import FEATURE_ALIASES

    features = {}
    for key, value in kwargs.items():
        if key in _OP_KEYWORDS:
            continue
        name = next((n for n in _ALIASES.get(key, (key,)) if n in ops.get(op).params), key)
        if name not in FEATURE_ALIASES and name not in ops.get(op).params:
            valid = sorted({*_OP_KEYWORDS, *FEATURE_ALIASES, *_ALIASES, *ops.get(op).params})
            raise pytest.UsageError(f"@pytest.mark.op({op!r}, {key}=...): unknown keyword {key!r}; valid: "
                                    f"{', '.join(valid)}")  # fmt: skip
        features[name] = value
    return features


def _did_you_mean(got: object, valid) -> str:
    close = difflib.get_close_matches(str(got), [str(v) for v in valid], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _misspelled_markers(item: pytest.Item) -> Iterator[str]:
    """A marker one typo away from platform/arch/op would otherwise be silently ignored: the test would
    run everywhere."""
    for mark in item.iter_markers():
        if mark.name not in _MARKERS:
            close = difflib.get_close_matches(mark.name, _MARKERS, n=1, cutoff=0.75)
            if close:
                yield f"@pytest.mark.{mark.name} is not an accelbridge marker (did you mean @pytest.mark.{close[0]}?)"


def _validate_markers(item: pytest.Item) -> Iterator[str]:
    """Unknown platform, arch, op or provider ids in markers: each a usage error listing the valid ones."""
    from accelbridge import kernels_catalog, ops, platforms

    for mark in item.iter_markers("platform"):
        known = platforms.known_platforms()
        bad = [name for name in mark.args if name not in known]
        if bad or not mark.args:
            name = bad[0] if bad else ""
            yield (f"@pytest.mark.platform{mark.args}: unknown platform {name!r}{_did_you_mean(name, known)}; "
                   f"valid: {', '.join(known)}")  # fmt: skip
    for mark in item.iter_markers("arch"):
        try:
            platforms.ArchRule.parse(list(mark.args))
        except Exception as e:
            yield f"@pytest.mark.arch{mark.args}: {e}"
    for mark in item.iter_markers("op"):
        if not mark.args or mark.args[0] not in ops.OPS:
            got = mark.args[0] if mark.args else None
            yield f"@pytest.mark.op({got!r}): unknown op{_did_you_mean(got, ops.ids())}; valid: {', '.join(ops.ids())}"
            continue
        try:
            _op_features(mark.args[0], mark.kwargs)
        except pytest.UsageError as e:
            yield str(e)
        wanted = mark.kwargs.get("provider")
        if wanted is not None:
            known = sorted(
                {pid for name in platforms.known_platforms() for pid in kernels_catalog.load(name).providers}
            )
            if wanted not in known:
                hint = _did_you_mean(wanted, known)
                yield (f"@pytest.mark.op({mark.args[0]!r}, provider={wanted!r}): unknown provider{hint}; "
                       f"valid: {', '.join(known)}")  # fmt: skip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every bad marker of a test at once (one run to fix them all), as one usage error."""
    for item in items:
        errors = list(_misspelled_markers(item))
        if any(item.iter_markers(name) for name in _MARKERS):
            errors += _validate_markers(item)
        if errors:
            raise pytest.UsageError("\n".join(f"{item.nodeid}: {e}" for e in errors))


def skip_reason(item: pytest.Item) -> str | None:
    """Why this item cannot run on the current platform, or None."""
    from accelbridge import platforms

    p = platforms.current()
    for mark in item.iter_markers("platform"):
        if p.name not in mark.args:
            return f"needs platform {' or '.join(mark.args)}, this is {p.name}"
    for mark in item.iter_markers("arch"):
        rule = platforms.ArchRule.parse(list(mark.args))
        if not rule.matches(p.arch()):
            return f"needs arch {rule}, this is {p.arch().name}"
    for mark in item.iter_markers("op"):
        from accelbridge import attention

        op = mark.args[0]
        wanted = mark.kwargs.get("provider")
        r = attention.resolve(op, **_op_features(op, mark.kwargs))
        rows = {c["provider"]: c["reasons"] for c in r.candidates}
        if wanted is not None and r.selected != wanted:
            why = "; ".join(rows.get(wanted, [f"is not a candidate on {p.name}"])) or f"{r.selected} comes first"
            return f"{op}: {wanted} {why}"
        if wanted is None and r.selected is None:
            return f"{op}: " + " | ".join(f"{pid} {'; '.join(rs)}" for pid, rs in rows.items())
        if mark.kwargs.get("kernel") and r.selected in BUILTIN_PROVIDERS:
            others = " | ".join(f"{pid} {'; '.join(rs)}" for pid, rs in rows.items() if pid not in BUILTIN_PROVIDERS)
            return (f"{op}: needs a vendor kernel, only the built-in {r.selected} provider serves it here "
                    f"({others or 'no other provider'})")  # fmt: skip
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    if not any(item.iter_markers(name) for name in ("platform", "arch", "op")):
        return
    reason = skip_reason(item)
    if reason:
        _SKIPS[reason] += 1
        _skip_at_test(reason)


def _skip_at_test(reason: str) -> None:
    """Skip, reported at the test's own location (as a skip marker is), not at this plugin's line."""
    try:
        raise pytest.skip.Exception(reason, _use_item_location=True)
    except TypeError:  # a pytest without that keyword: plain skip
        pytest.skip(reason)


def pytest_terminal_summary(terminalreporter) -> None:
    if _SKIPS:
        _report(terminalreporter)
        _SKIPS.clear()


def _report(terminalreporter) -> None:
    if _SKIPS:
        terminalreporter.section("accelbridge capability skips")
        for reason, n in _SKIPS.most_common():
            terminalreporter.write_line(f"{n:4d} skipped: {reason}")
