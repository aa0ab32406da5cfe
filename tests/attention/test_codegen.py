"""Generated code is visible: tracebacks, inspect.getsource and `explain --source` show its lines; guards are data."""

import inspect
import traceback

import pytest
import torch

from accelbridge import attention, codegen, ops
from accelbridge.attention import adapters
from accelbridge.kernels_catalog import Adapt, OpEntry, Requirements

from .conftest import varlen_problem

SPEC = ops.get("fa3.varlen")


def test_define_registers_the_source_for_tracebacks_and_getsource():
    source = "def boom(x):\n    y = x + 1\n    raise ValueError(y)\n"
    fn = codegen.define("<accelbridge test boom>", source, {})["boom"]
    assert inspect.getsource(fn) == source and codegen.source_of(fn) == source
    with pytest.raises(ValueError) as e:
        fn(1)
    shown = "".join(traceback.format_exception(e.value))
    assert 'File "<accelbridge test boom>", line 3, in boom' in shown and "raise ValueError(y)" in shown
    other = codegen.define("<accelbridge test boom>", source.replace("+ 1", "+ 2"), {})["boom"]
    assert other.__code__.co_filename == "<accelbridge test boom #2>", "another text keeps the first one's lines"
    assert inspect.getsource(fn) == source


def test_expression_is_a_function_of_the_named_arguments():
    e = codegen.Expression("x.shape[0] == n and torch.is_tensor(x)", ["x", "n"], {"torch": torch}, "<test rule>")
    assert e.params == {"n", "x"} and e({"x": torch.ones(3), "n": 3}) is True
    assert "return _values['x'].shape[0] == _values['n']" in inspect.getsource(e.fn)
    with pytest.raises(NameError, match="'n'"):
        e({"x": torch.ones(3)})
    lazy = codegen.Expression("i is None or q.shape[-1] == 576", ["i", "q"], {}, "<test lazy rule>")
    assert lazy({"i": None}) is True, "a name evaluation does not reach is not read"


def vendor(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal=False, window_size=(-1, -1)):
    return q


def test_each_guard_is_both_a_reason_and_a_line_of_the_generated_call():
    refuse = [{"args": ["window_size"], "when": "causal", "why": "no causal window"}]
    entry = OpEntry("fa3.varlen", "f", Requirements.from_data({"dtypes": ["bf16"], "head_dim": "<=64"}),
                    Adapt.from_data({"refuses": refuse}), "test")  # fmt: skip
    b = adapters.bind("v", SPEC, entry, vendor, "vendor.f")
    source = codegen.source_of(adapters.compile_call(b, "off", lambda arg, args: arg))
    assert [g.argument for g in b.guards] == [*b.unsupported, "window_size", "dtype", "head_dim"]
    for g in b.guards:
        assert g.line(f"({', '.join(SPEC.names)},)") in source
    q = torch.empty(2, 1, 128, dtype=torch.float16)
    assert b.call_reasons({"q": q, "causal": True, "window_size": (4, 0)}) == [
        "cannot honour window_size= when causal (no causal window)",
        "does not take dtype torch.float16",
        "does not take head_dim 128",
    ]


def test_explain_source_prints_the_call_path_from_the_facade_to_the_provider(rng, capsys):
    from accelbridge.cli import main

    q, k, v, cu_q, cu_k = varlen_problem(rng, [3, 2], [3, 4])
    attention.flash_attn_varlen_func(q, k, v, cu_q, cu_k, 3, 4, causal=True)
    assert main(["explain", "--source", "fa3.varlen"]) == 0
    shown = capsys.readouterr().out
    assert "# facade function flash_attn_varlen_func: <accelbridge facade flash_attn_varlen_func>" in shown
    assert "# torch at check level cheap: <accelbridge adapter torch:fa3.varlen:cheap" in shown
    assert "# under torch.compile: <accelbridge traced fa3.varlen>" in shown
    assert shown.count("def adapter(") >= 2 and "def traced(" in shown
    fn = attention.chain("fa3.varlen").impl()
    assert inspect.getsource(fn) in shown, "the steady-state call is one of the printed adapters"
