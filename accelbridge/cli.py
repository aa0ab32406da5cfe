"""The `accelbridge` command: argparse subcommands over the three layers.

User input errors print one line and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from accelbridge import __version__
from accelbridge.errors import AccelbridgeError


def _platform(args: argparse.Namespace):
    from accelbridge import platforms

    if getattr(args, "simulate", None):
        return platforms.simulate(args.simulate)
    return platforms.current()


def _print_table(rows: Sequence[Sequence[Any]], headers: Sequence[str] | None = None, indent: str = "  ") -> None:
    table = [list(map(str, headers))] if headers else []
    table += [[str(c) for c in r] for r in rows]
    if not table:
        return
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for n, r in enumerate(table):
        print(indent + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if headers and n == 0:
            print(indent + "  ".join("-" * w for w in widths))


# -- info ---------------------------------------------------------------------------------
def cmd_info(args: argparse.Namespace) -> int:
    import torch

    from accelbridge import platforms

    p = _platform(args)
    report = p.describe()
    report["torch_version"] = torch.__version__
    report["accelbridge_version"] = __version__
    report["plugins"] = platforms.plugin_report()
    report["resolution"] = _resolution_table(p)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    sim = f" (simulated: {report['simulation_spec']})" if p.simulated else ""
    print(f"accelbridge {__version__}: platform report{sim}")
    names = ", ".join(report["device_names"]) or "-"
    _print_table(
        [
            ("platform", report["platform"]),
            ("vendor", report["vendor"]),
            ("device type", report["device_type"]),
            ("arch", report["arch"] or "-"),
            ("capability", ".".join(map(str, report["capability"] or [])) or "-"),
            ("toolkit", report["toolkit_version"] or "-"),
            ("devices", f"{report['device_count']} ({names})"),
            ("dtypes", ", ".join(report["dtypes"]) or "-"),
            ("fp8 e4m3 dtype", report["fp8_e4m3_dtype"] or "-"),
            ("visible devices", report["visible_devices_env"] or "-"),
            ("torch", report["torch_version"]),
        ]
    )
    print("\nKernel resolution (first viable provider per op; `accelbridge explain OP` says why)")
    rows = [(r["op"], r["selected"] or "none", r["note"]) for r in report["resolution"]]
    _print_table(rows, headers=("op", "provider", "note"))
    print("\nPlatform plugins (entry point group accelbridge.platforms)")
    if not report["plugins"]:
        print("  none installed")
    for pl in report["plugins"]:
        status = pl["status"] if not pl["error"] else f"FAILED {pl['error']}"
        print(f"  {pl['name']} ({pl['target']}): {status}")
    return 0


def _resolution_table(platform) -> list[dict[str, Any]]:
    """One row per op: the provider that would serve it here, or why none would."""
    # RESOLUTION TABLE: filled in by the attention facade (catalog + resolver)
    return []


# -- entry --------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="accelbridge",
        description="What this accelerator can run, why, and running it.",
    )
    parser.add_argument("--version", action="version", version=f"accelbridge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    info = sub.add_parser("info", help="platform report and per-op resolution table")
    info.add_argument("--simulate", metavar="SPEC", help="e.g. cuda:sm90:toolkit=12.8, rocm:gfx942, musa:mp31")
    info.add_argument("--json", action="store_true", help="print describe() and extras as JSON")
    info.set_defaults(func=cmd_info)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


_EXTRA_COMMANDS: list[Callable[[Any], None]] = []


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except AccelbridgeError as e:
        print(f"accelbridge: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `accelbridge info | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
