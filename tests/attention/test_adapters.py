"""bind and compile on their own: a provider function, an op declaration and a catalog entry, no resolver."""

import pytest
import torch

from accelbridge import codegen, ops
from accelbridge.attention import InvalidArgumentError, adapters
from accelbridge.kernels_catalog import Adapt, OpEntry, Requirements

SPEC = ops.get("fa3.varlen")


def entry(**adapt):
    return OpEntry("fa3.varlen", "f", Requirements(), Adapt.from_data(adapt), "test")


def vendor(q, k, v, cu_q, cu_k, max_q, max_k, scale=None, is_causal=False, window=None, lse=False, extra=7):
    return (q, {"scale": scale, "is_causal": is_causal, "window": window, "lse": lse, "extra": extra})


def test_bind_maps_renames_drops_hints_and_names_what_it_cannot_honour():
    b = adapters.bind("v", SPEC, entry(rename={"cu_seqlens_q": "cu_q", "cu_seqlens_k": "cu_k",
                                               "max_seqlen_q": "max_q", "max_seqlen_k": "max_k",
                                               "softmax_scale": "scale", "causal": "is_causal",
                                               "window_size": "window", "return_softmax_lse": "lse"},
                                       window="none-if-infinite"), vendor, "vendor.f")  # fmt: skip
    assert b.ok and b.mapped["causal"] == "is_causal"
    assert {"num_splits", "pack_gqa", "sm_margin"} <= set(b.dropped), "hints are dropped, never refused"
    assert "sinks" in b.unsupported and "out" not in b.unsupported and b.out_emulated
    assert b.call_reasons({"sinks": torch.ones(2)}) == ["cannot honour sinks= (no such parameter in vendor.f)"]
    assert b.call_reasons({"sinks": None, "num_splits": 8}) == []


def test_bind_reports_a_required_parameter_no_argument_supplies():
    b = adapters.bind("v", SPEC, entry(), vendor, "vendor.f")
    assert not b.ok and any("requires parameter 'cu_q'" in r for r in b.reasons)


def test_compile_converts_guards_and_explains():
    b = adapters.bind("v", SPEC, entry(rename={"cu_seqlens_q": "cu_q", "cu_seqlens_k": "cu_k",
                                               "max_seqlen_q": "max_q", "max_seqlen_k": "max_k",
                                               "softmax_scale": "scale", "causal": "is_causal",
                                               "window_size": "window", "return_softmax_lse": "lse"},
                                       window="none-if-infinite", returns="out"), vendor, "vendor.f")  # fmt: skip
    rerouted = []
    fn = adapters.compile_call(b, "cheap", lambda arg, args: rerouted.append(arg) or "elsewhere")
    q = torch.randn(4, 2, 8)
    cu = torch.tensor([0, 4], dtype=torch.int32)
    values = dict(SPEC.with_defaults({"q": q, "k": q, "v": q, "cu_seqlens_q": cu, "cu_seqlens_k": cu,
                                      "causal": True, "window_size": (-1, -1)}))  # fmt: skip
    r, seen = fn(*(values[n] for n in SPEC.names))
    assert r is q and seen == {"scale": None, "is_causal": True, "window": None, "lse": False, "extra": 7}
    values["sinks"] = torch.ones(2)
    assert fn(*(values[n] for n in SPEC.names)) == "elsewhere" and rerouted == ["sinks"]
    values["sinks"], values["k"] = None, q.half()
    with pytest.raises(InvalidArgumentError, match="k has dtype torch.float16 but q has torch.float32"):
        fn(*(values[n] for n in SPEC.names))
    assert "window_size = _window_convert(window_size)" in codegen.source_of(fn)


def test_the_passed_predicate_is_the_declarations():
    p = SPEC.params
    assert p["window_size"].passed == "not (_window_inert(window_size))"
    assert p["softcap"].passed == "not (not softcap)" and p["q"].passed == "True"
    kv = ops.get("fa3.kvcache")
    assert kv.params["rotary_seqlens"].inert == "rotary_cos is None or rotary_seqlens is None"


def test_a_similar_provider_parameter_suggests_a_rename():
    def lse_flag(q, k, v, cu_seqlens_q, cu_seqlens_k, return_lse=False):
        return q

    b = adapters.bind("v", SPEC, entry(), lse_flag, "vendor.f")
    assert b.unsupported["return_softmax_lse"] == (
        "no such parameter in vendor.f; it has 'return_lse': map it with adapt.rename {return_softmax_lse: return_lse}?"
    )
