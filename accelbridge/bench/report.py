"""The text `accelbridge bench` prints for each measurement (the JSON is the result itself)."""

from __future__ import annotations

from typing import Any


def format_result(what: str, result: dict[str, Any]) -> str:
    if what == "catalog":
        verdict = "within" if result["median_ms"] <= result["target_ms"] else "above"
        return (
            f"catalog: {result['what']}\n"
            f"  median {result['median_ms']:.2f} ms, min {result['min_ms']:.2f} ms over {result['rounds']} rounds "
            f"({verdict} the {result['target_ms']:.0f} ms goal on this machine)"
        )
    if what == "overhead":
        rows = [("direct call", f"{result['direct_us']:.3f} us", "")]
        for label, levels in result["providers"].items():
            rows += [(f"facade, {label}, ACCELBRIDGE_CHECKS={level}", f"{r['facade_us']:.3f} us",
                      f"(+{r['added_us']:.3f} us)") for level, r in levels.items()]  # fmt: skip
        width, num = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
        lines = [f"overhead: {result['what']}; median of {result['rounds']} rounds x {result['calls_per_round']} calls"]
        lines += [f"  {name:<{width}}  {t:>{num}}  {added}".rstrip() for name, t, added in rows]
        worst = max(result["default_added_us"].values())
        verdict = "within" if worst <= result["target_us"] else "above"
        lines.append(f"  default level (cheap), any provider: up to +{worst:.3f} us, {verdict} the "
                     f"{result['target_us']:.1f} us goal on this machine "
                     f"(dispatch alone: +{result['added_us']:.3f} us)")  # fmt: skip
        return "\n".join(lines)
    if what == "throughput":
        if "skipped" in result:
            return f"throughput: skipped ({result['skipped']})"
        lines = [f"throughput on {result['gpu']} (torch {result['torch']}), median of {result['rounds']} rounds:"]
        for r in result["rows"]:
            tflops = f"direct {r['direct_tflops']:7.1f} TFLOP/s  facade {r['facade_tflops']:7.1f} TFLOP/s"
            lines.append(f"  {r['case']:<34} {tflops}  facade/direct time {r['facade_vs_direct']:.4f}"
                         f"  (with ACCELBRIDGE_CHECKS=full: {r['full_checks_vs_direct']:.4f})")  # fmt: skip
        lines.append(
            f"  facade = the default check level ({result.get('level', 'cheap')}); full adds value checks (a host sync)"
        )
        return "\n".join(lines)
    return "\n".join(f"{k}: {v}" for k, v in result.items())
