"""pytest plugin (entry point ``pytest11``): capability-gated test runs.

Markers skip with the resolver's own reasons:
``@pytest.mark.platform("cuda", "rocm")``, ``@pytest.mark.arch(">=sm90")``,
``@pytest.mark.op("fa3.kvcache", provider=None)``. ``--accel-simulate SPEC`` makes a
simulated platform current for the whole session.
"""

from __future__ import annotations

from collections import Counter

import pytest

_SKIPS: Counter[str] = Counter()
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
        "arch(rule): run only where the arch satisfies the rule, e.g. '>=sm90'",
        "op(op, provider=None): run only where the op resolves (to that provider, if given)",
    ):
        config.addinivalue_line("markers", line)
    from accelbridge.attention import checks

    checks.set_level(config.getoption("--accel-checks", default="full"))  # tests want every bad argument named
    spec = config.getoption("--accel-simulate", default=None)
    if spec:
        from accelbridge import platforms

        block = platforms.simulated(spec)
        block.__enter__()
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
        r = attention.resolve(op)
        rows = {c["provider"]: c["reasons"] for c in r.candidates}
        if wanted is not None and r.selected != wanted:
            why = "; ".join(rows.get(wanted, [f"is not a candidate on {p.name}"])) or f"{r.selected} comes first"
            return f"{op}: {wanted} {why}"
        if wanted is None and r.selected is None:
            return f"{op}: " + " | ".join(f"{pid} {'; '.join(rs)}" for pid, rs in rows.items())
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
