"""The `accelbridge` command: argparse subcommands over the three layers.

User input errors print one line and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
from collections.abc import Sequence
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
            ("this process", _rank_line(p) if report["device"] else "-"),
            ("dtypes", ", ".join(report["dtypes"]) or "-"),
            ("fp8 e4m3 dtype", report["fp8_e4m3_dtype"] or "-"),
            ("visible devices", report["visible_devices_env"] or "-"),
            ("torch", report["torch_version"]),
        ]
    )
    print("\nKernel resolution (first viable provider per op; `accelbridge explain OP` says why)")
    rows = [(r["op"], r["selected"] or "none", r["summary"]) for r in report["resolution"]]
    _print_table(rows, headers=("op", "provider", "note"))
    print("\nPlatform plugins (entry point group accelbridge.platforms)")
    if not report["plugins"]:
        print("  none installed")
    for pl in report["plugins"]:
        status = pl["status"] if not pl["error"] else f"FAILED {pl['error']}"
        print(f"  {pl['name']} ({pl['target']}): {status}")
    return 0


def _rank_line(platform) -> str:
    """``cuda:1 (rank 1 of 2, local rank 1)``: the device this process resolves against."""
    from accelbridge.platforms import devices

    return devices.describe_rank(platform, platform.device_index())


def _resolution_table(platform) -> list[dict[str, Any]]:
    """One row per op: the provider that would serve it here, or why none would."""
    from accelbridge import ops, platforms
    from accelbridge.attention import chain
    from accelbridge.attention.resolver import describe

    rows = []
    with platforms.simulated(platform) if platform is not platforms.current() else contextlib.nullcontext():
        for op in ops.ids():
            r = describe(chain(op), load_all=False)
            skipped = [f"{c['provider']}: {'; '.join(c['reasons'])}" for c in r.candidates if c["viable"] is False]
            accelerator = getattr(platform, "accelerator", False)
            slow = r.selected == "reference" and accelerator
            portable = r.selected == "torch" and accelerator and r.candidates[0]["provider"] != "torch"
            lead = "SLOW PATH (pure-torch reference); " if slow else ""
            lead = lead or "no vendor kernel: torch's own kernels; " * portable
            note = lead + " | ".join(skipped)
            summary = lead + " | ".join(f"{c['provider']}: {'; '.join(map(_gist, c['reasons']))}"
                                        for c in r.candidates if c["viable"] is False)  # fmt: skip
            if r.selected is None and not skipped:
                note = summary = "no provider listed for this op on this platform"
            if r.selected is None and ops.planned_by(op):  # a planning op without a provider returns None
                fine = f"fine: returns None, {', '.join(ops.planned_by(op))} plans each call itself"
                note, summary = f"{fine}; {note}", f"{fine}; {summary}"
            rows.append({"op": op, "selected": r.selected, "note": note, "summary": summary,
                         "reference_fallback": slow})  # fmt: skip
    return rows


_DETAIL = re.compile(r": (?=[A-Z])")  # where a reason quotes the exception's own sentences


def _gist(reason: str) -> str:
    """A reason without the exception text it quotes, for one table row (JSON and explain keep it whole)."""
    return _DETAIL.split(reason, maxsplit=1)[0]


def _standins_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--standins", action="store_true",
                        help="put the stand-ins of vendor packages (mate) on the path first")  # fmt: skip


# -- explain ------------------------------------------------------------------------------
def _use_standins(args: argparse.Namespace) -> None:
    """Vendor stand-ins (mate) first on the path, only when asked for (--standins)."""
    if args.standins:
        from accelbridge.testing import standins

        sys.path.insert(0, standins.path())


def cmd_explain(args: argparse.Namespace) -> int:
    from accelbridge import attention, platforms

    _use_standins(args)
    with platforms.simulated(args.simulate) if args.simulate else contextlib.nullcontext():
        if args.json:
            print(json.dumps(attention.resolve(args.op).to_dict(), indent=2))
        elif args.source:
            from accelbridge.attention.facade import generated_source

            print(generated_source(args.op))
        else:
            print(attention.explain(args.op))
    return 0


# -- catalog ------------------------------------------------------------------------------
def cmd_catalog_validate(args: argparse.Namespace) -> int:
    from accelbridge.kernels_catalog import import_issues, order_warnings, validate_file

    issues = [issue for f in args.files for issue in validate_file(f)]
    if args.imports and not issues:
        issues = [issue for f in args.files for issue in import_issues(f)]
    for issue in sorted(issues):
        print(issue)
    if issues:
        print(f"{len(issues)} error(s) in {len({i.file for i in issues})} file(s)", file=sys.stderr)
        return 1
    warnings = sorted(w for f in args.files for w in order_warnings(f))
    for warning in warnings:
        print(f"warning: {warning}")
    print("ok" + (f", {len(warnings)} warning(s)" if warnings else ""))
    return 0


def cmd_catalog_show(args: argparse.Namespace) -> int:
    from accelbridge.kernels_catalog import load

    name = args.platform or _platform(args).name
    data = load(name).to_dict()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"catalog of platform {name}, merged from: {', '.join(data['files'])}")
    for pid, p in data["providers"].items():
        trusted = ", trusted" if p["trusted"] else ""
        print(f"\n{pid}: {p['source']}{trusted}  [{p['from']}]")
        if p["description"]:
            print(f"  {p['description']}")
        if p["install"]:
            print(f"  install: {p['install']}")
        for op, e in p["ops"].items():
            req = "; ".join(f"{k} {v}" for k, v in e["requires"].items()) or "no requirements"
            adapt = "; adapt " + ", ".join(f"{k}={v}" for k, v in e["adapt"].items()) if e["adapt"] else ""
            print(f"  {op:<24} {e['function']}  ({req}{adapt})  [{e['from']}]")
    print("\norder (first viable wins):")
    for op, ids in data["order"].items():
        print(f"  {op:<24} {' -> '.join(ids)}")
    return 0


def cmd_catalog_matrix(args: argparse.Namespace) -> int:
    from accelbridge.kernels_catalog.matrix import support_matrix

    sys.stdout.write(support_matrix())
    return 0


# -- bench --------------------------------------------------------------------------------
def cmd_bench(args: argparse.Namespace) -> int:
    from accelbridge import bench

    results = []
    unknown = [w for w in args.what if w not in ("overhead", "throughput", "compile", "catalog")]
    if unknown:
        raise AccelbridgeError(
            f"bench: unknown measurement {unknown[0]!r}; valid: overhead, throughput, compile, catalog"
        )
    if args.provider and "throughput" not in args.what:
        raise AccelbridgeError("bench: --provider compares providers' throughput; run `bench throughput --provider P`")
    if args.graphs and not args.provider:
        raise AccelbridgeError("bench: --graphs times the providers' CUDA-graph replays; run "
                               "`bench throughput --provider P --graphs`")  # fmt: skip
    for what in args.what or ["overhead"]:
        if what == "throughput" and args.provider:
            result = _bench_providers(args.provider, args.graphs)
            results.append(result)
            if not args.json:
                from accelbridge.bench.providers import format_providers

                print(format_providers(result))
            continue
        if what == "compile":
            from accelbridge.bench.compiled import bench_compile, format_compile

            result = bench_compile()
            results.append(result)
            if not args.json:
                print(format_compile(result))
            continue
        result = getattr(bench, f"bench_{what}")()
        results.append(result)
        if not args.json:
            print(bench.format_result(what, result))
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


def _bench_providers(names: list[str], graphs: bool = False) -> dict[str, Any]:
    from accelbridge import kernels_catalog, platforms
    from accelbridge.bench.providers import bench_providers

    catalog = kernels_catalog.load(platforms.current())
    unknown = [p for p in names if p not in catalog.providers]
    if unknown:
        raise AccelbridgeError(f"bench: no provider {unknown[0]!r} in the {catalog.platform} catalog; "
                               f"valid: {', '.join(catalog.providers)}")  # fmt: skip
    return bench_providers(names, graphs=graphs)


# -- selftest -----------------------------------------------------------------------------
def _selftest_row(case_width: int, provider_width: int) -> str:
    """One row format for the whole table, wide enough for every case and provider it may print."""
    return "{:<16} {:<P} {:<C} {:<6} {:>9} {:>9} {:>15}  {}".replace("P", str(provider_width)).replace(
        "C", str(case_width)
    )


def _fmt_err(x: float | None) -> str:
    return "-" if x is None else f"{x:.2e}"


def cmd_selftest(args: argparse.Namespace) -> int:
    import time

    import torch

    from accelbridge import platforms
    from accelbridge.kernels_catalog.schema import did_you_mean
    from accelbridge.testing import conformance

    checked = conformance.checked_ops()
    if args.op and args.op not in checked:
        raise AccelbridgeError(
            f"selftest: no checks for op {args.op!r}{did_you_mean(args.op, checked)}; valid: {', '.join(checked)}"
        )
    seed = conformance.new_seed() if args.seed is None else args.seed
    _use_standins(args)
    with platforms.simulated(args.simulate) if args.simulate else contextlib.nullcontext():
        p = platforms.current()
        from accelbridge import kernels_catalog

        if args.provider and args.provider not in kernels_catalog.load(p).providers:
            valid = ", ".join(kernels_catalog.load(p).providers)
            hint = did_you_mean(args.provider, kernels_catalog.load(p).providers)
            raise AccelbridgeError(
                f"selftest: no provider {args.provider!r} in the {p.name} catalog{hint}; valid: {valid}"
            )
        where = f"{p.name} {p.arch().name}" + (f" (simulated {p.spec})" if p.simulated else "")
        if not args.json:
            print(f"accelbridge selftest on {where}, device {conformance.device()}, torch {torch.__version__}, "
                  f"seed {seed} (rerun with --seed {seed})")  # fmt: skip
            names = [c.name for op in ([args.op] if args.op else checked) for c in conformance.cases(op, args.full)]
            row = _selftest_row(max(map(len, names), default=4), max(map(len, kernels_catalog.load(p).providers)))
            print(row.format("op", "provider", "case", "result", "max_abs", "rel_l2", "atol/rtol", "note"))
        start, rows = time.perf_counter(), []
        for r in conformance.run_all(args.op, args.provider, full=args.full, seed=seed):
            rows.append(r)
            if not args.json:
                tol = "-" if r.case.name == "*" else f"{r.case.tolerance.atol:g}/{r.case.tolerance.rtol:g}"
                errors, note = (_fmt_err(r.max_abs), _fmt_err(r.rel)), r.detail
                if r.provider == "reference" and r.status == "pass":  # compared with itself: nothing measured
                    errors, note = ("-", "-"), "the reference itself: checks the call convention, not the numbers"
                print(row.format(r.case.op, r.provider, r.case.name, r.status, *errors, tol, note).rstrip(),
                      flush=True)  # fmt: skip
    counts = {s: sum(r.status == s for r in rows) for s in ("pass", "FAIL", "error", "skip")}
    elapsed = time.perf_counter() - start
    if args.json:
        print(json.dumps({"platform": p.name, "arch": p.arch().name, "seed": seed, "counts": counts,
                          "seconds": round(elapsed, 2), "results": [r.to_dict() for r in rows]}, indent=2))  # fmt: skip
    else:
        tested = counts["pass"] + counts["FAIL"] + counts["error"]
        print(f"\n{tested} case(s) run: {counts['pass']} passed, {counts['FAIL']} FAILED, {counts['error']} errors; "
              f"{counts['skip']} skipped ({elapsed:.1f} s)")  # fmt: skip
        if not tested:
            print("no provider here could run a case; `accelbridge explain OP` says why")
    if args.provider and not (counts["pass"] + counts["FAIL"] + counts["error"]):
        reasons = sorted({r.detail for r in rows if r.detail}) or ["it serves none of the checked ops here"]
        print(f"selftest: provider {args.provider!r} ran no case: {'; '.join(reasons)}", file=sys.stderr)
        return 1  # a CI gate must not pass on nothing
    return 1 if counts["FAIL"] or counts["error"] else 0


# -- lock / download -------------------------------------------------------------------------
def cmd_lock(args: argparse.Namespace) -> int:
    from pathlib import Path

    from accelbridge.attention import hub

    hub.lock(Path(args.output) if args.output else None)
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from accelbridge.attention import hub

    paths = hub.download()
    print(f"{len(paths)} hub kernel(s) in the cache" + ("" if hub.lock_file().exists() else " (no lock file: "
          "latest matching revisions; `accelbridge lock` pins them)"))  # fmt: skip
    return 0


# -- entry --------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from accelbridge import ops

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

    explain = sub.add_parser("explain", help="why each provider of an op is or is not used here")
    explain.add_argument("op", metavar="OP", help=", ".join(ops.ids()))
    explain.add_argument(
        "--simulate", metavar="SPEC", help="explain on a simulated platform, e.g. cuda:sm90, rocm:gfx942"
    )
    explain.add_argument("--json", action="store_true", help="print resolve(OP).to_dict() as JSON")
    explain.add_argument(
        "--source", action="store_true", help="print the generated code a call runs: facade, provider calls, traced"
    )
    _standins_flag(explain)
    explain.set_defaults(func=cmd_explain)

    catalog = sub.add_parser("catalog", help="validate, show and tabulate kernel catalogs")
    csub = catalog.add_subparsers(dest="catalog_command", metavar="ACTION", required=True)
    validate = csub.add_parser("validate", help="list every error as FILE:LINE:COL (exit 1), or print ok")
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.add_argument(
        "--imports",
        action="store_true",
        help="also check that each provider's module is installed here (found, never imported)",
    )
    validate.set_defaults(func=cmd_catalog_validate)
    show = csub.add_parser("show", help="the merged catalog, with the file each entry came from")
    show.add_argument("--platform", help="cuda, rocm, musa, cpu or a plugin (default: the current platform)")
    show.add_argument("--simulate", metavar="SPEC", help="take the platform from a simulation spec")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_catalog_show)
    matrix = csub.add_parser("matrix", help="markdown support matrix of the built-in catalogs")
    matrix.set_defaults(func=cmd_catalog_matrix)
    selftest = sub.add_parser("selftest", help="every available provider vs the float32 reference (conformance)")
    checked = ", ".join(op for op, spec in ops.OPS.items() if spec.cases is not None)
    selftest.add_argument("--op", metavar="OP", help=f"one op: {checked} (default: all)")
    selftest.add_argument("--provider", metavar="P", help="one provider id of the current catalog (default: all)")
    selftest.add_argument("--full", action="store_true", help="add the dtype x GQA x head dim x mask cross product")
    selftest.add_argument("--seed", type=int, help="reuse the inputs of an earlier run (printed in its header)")
    selftest.add_argument(
        "--simulate",
        metavar="SPEC",
        help="run on a simulated platform's catalog (tensors stay on the CPU), e.g. cuda:sm90",
    )
    selftest.add_argument("--json", action="store_true", help="print each result as JSON (conformance.Result)")
    _standins_flag(selftest)
    selftest.set_defaults(func=cmd_selftest)
    lock = sub.add_parser("lock", help="pin the catalogs' hub kernels to commits in the kernels.lock of the cache dir")
    lock.add_argument("--output", metavar="PATH", help="write the lock here instead")
    lock.set_defaults(func=cmd_lock)
    download = sub.add_parser("download", help="fetch the catalogs' hub kernels (the locked commits, if locked)")
    download.set_defaults(func=cmd_download)
    bench = sub.add_parser("bench", help="facade overhead, kernel throughput, compiled facade, catalog load time")
    bench.add_argument("what", nargs="*", metavar="WHAT", help="overhead (default), throughput, compile, catalog")
    bench.add_argument(
        "--provider",
        action="append",
        default=[],
        metavar="P",
        help="with throughput: these providers side by side with the vendor kernel (repeatable)",
    )
    bench.add_argument(
        "--graphs",
        action="store_true",
        help="with throughput --provider: also each one's CUDA-graph replay, against the vendor kernel's (a GPU)",
    )
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import warnings

    if list(sys.argv[1:] if argv is None else argv) == ["--version"]:  # without the parser's imports (torch: ~1.5 s)
        print(f"accelbridge {__version__}")
        return 0
    parser = build_parser()
    args = parser.parse_args(argv)
    # load failures are reported in the tables and explain output; no duplicate warning lines
    warnings.filterwarnings("ignore", message="accelbridge: provider ")
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
