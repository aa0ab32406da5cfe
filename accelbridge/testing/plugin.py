"""pytest plugin (entry point ``pytest11``): capability-gated test runs."""

from __future__ import annotations


def pytest_report_header(config) -> str:
    from accelbridge import platforms

    p = platforms.current()
    sim = " (simulated)" if p.simulated else ""
    return f"accelbridge: platform {p.name}, arch {p.arch().name}, toolkit {p.toolkit_version or '-'}{sim}"
