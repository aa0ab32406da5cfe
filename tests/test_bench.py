"""`accelbridge bench`: what it reports (the measurements themselves live in docs/benchmarks.md)."""

import pytest
import torch

from accelbridge import bench
from accelbridge.bench import providers as bench_providers


def test_overhead_reports_a_provider_without_validates_and_cpu_tensors():
    result = bench.bench_overhead(rounds=1, calls=200)
    assert set(result["providers"]) == {"validates dtype, shape", "no validates"}
    for levels in result["providers"].values():
        assert set(levels) == {"off", "cheap", "cheap, CPU tensors", "full"}
        assert all(r["facade_us"] > 0 for r in levels.values())
    text = bench.format_result("overhead", result)
    assert "no validates, ACCELBRIDGE_CHECKS=cheap " in text and "default level (cheap), any provider" in text
    assert "OVER" not in text and ("within the 1.0 us goal" in text or "above the 1.0 us goal on this machine" in text)
    rows = text.splitlines()[1:-1]  # one column of times: every " us" at the same place
    assert len({row.index(" us") for row in rows}) == 1, rows


@pytest.mark.skipif(torch.cuda.is_available(), reason="the vendor comparison runs where CUDA is")
def test_throughput_without_a_gpu_names_what_runs_here():
    text = bench.format_result("throughput", bench.bench_throughput())
    assert text.startswith("throughput: skipped (no CUDA device") and "--provider torch" in text


def test_small_rates_are_not_printed_as_zero_tflops():
    result = {
        "device": "cpu",
        "torch": "x",
        "platform": "cpu",
        "rounds": 1,
        "rows": [{"case": "c", "skipped": {}, "results": {"torch": {"us": 10.0, "tflops": 0.0042, "peak_mib": None}}}],
    }
    assert "4.20 GFLOP/s" in bench_providers.format_providers(result)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the compiled modes are measured where CUDA is")
def test_compile_without_a_gpu_says_where_it_runs():
    from accelbridge.bench.compiled import bench_compile, format_compile

    text = format_compile(bench_compile())
    assert text.startswith("compile: skipped (no CUDA device") and "test_compile.py" in text


def test_compile_rows_show_each_mode_against_the_direct_kernel_and_its_host_time():
    from accelbridge.bench.compiled import format_compile

    modes = {"direct": {"us": 250.0, "host_us": 36.0, "vs_direct": 1.0},
             "inductor": {"us": 256.0, "host_us": 131.0, "vs_direct": 250.0 / 256.0}}  # fmt: skip
    result = {"gpu": "H200", "torch": "x", "rounds": 7, "rows": [{"case": "decode", "provider": "sgl-kernel",
                                                                  "modes": modes}]}  # fmt: skip
    text = format_compile(result)
    assert "decode, sgl-kernel" in text and "0.9766x direct" in text and "(host 131.0 us a call)" in text
    assert "    direct " in text and " 250.0 us  (host 36.0 us a call)" in text


def test_graph_replays_show_beside_each_runner_against_the_vendor_kernels_own():
    results = {"vendor (direct)": {"us": 30.0, "tflops": 2.0, "peak_mib": 1.0, "graph": {"us": 24.0}},
               "torch": {"us": 60.0, "tflops": 1.0, "peak_mib": 1.0, "vs_vendor": 0.5,
                         "graph": {"us": 22.0, "vs_vendor": 24.0 / 22.0}},
               "reference": {"us": 900.0, "tflops": 1.0, "peak_mib": None,
                             "graph": {"skipped": "not capturable: RuntimeError: a sync"}}}  # fmt: skip
    result = {"device": "H100", "torch": "x", "platform": "cuda", "rounds": 5,
              "rows": [{"case": "dense MLA B=1", "skipped": {}, "results": results}]}  # fmt: skip
    lines = bench_providers.format_providers(result).splitlines()
    assert lines[2].endswith("graph 24.0 us") and "0.500x vendor" in lines[3]
    assert lines[3].endswith("graph 22.0 us 1.091x vendor's")
    assert lines[4].endswith("graph: not capturable: RuntimeError: a sync")


def test_graphs_are_a_providers_comparison(capsys):
    from accelbridge import cli

    assert cli.main(["bench", "throughput", "--graphs"]) != 0
    assert "run `bench throughput --provider P --graphs`" in capsys.readouterr().err
