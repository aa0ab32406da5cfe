"""torch.compile over the facade: custom ops derived from the declarations, opcheck, fullgraph, dynamic shapes.

Inputs are the conformance cases' (the kernels' own conventions: sentinel table entries, NaN in
unused slots, -1 sparse indices, empty sequences); results are compared with the eager facade
call on the same inputs, which conformance compares with the float32 reference.
"""

import logging
import warnings

import pytest
import torch

from accelbridge import attention, ops
from accelbridge.attention import compiled
from accelbridge.attention.errors import NotCompilableError
from accelbridge.ops.cases import Inputs

torch._dynamo.config.cache_size_limit = 256
# torch's own tracing machinery warns about torch.jit.script_method (torch 2.13); not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")

COMPILED_OPS = ("fa3.varlen", "fa4.varlen", "fa3.kvcache", "fa4.kvcache", "flashmla.kvcache", "flashmla.sparse_prefill")


def _case_inputs(op, case, seed=0):
    spec = ops.get(op)
    kw = spec.inputs(case, Inputs(case, seed, torch.device("cpu")))
    if spec.plan is not None and spec.plan.producer_args is not None:
        kw.setdefault(spec.plan.param, None)
    if "return_softmax_lse" in spec.params:
        kw["return_softmax_lse"] = True
    return kw


def _cases(op, every=1):
    return [(op, c) for c in ops.get(op).cases(False)][::every]


def _eager(op, kw):
    spec = ops.get(op)
    sel = {spec.selector[0]: spec.selector[1]} if spec.selector else {}
    clone = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    return attention.function(op)(**clone, **sel), clone


def _as_tuple(r):
    return r if isinstance(r, tuple) else (r,)


def _same(a, b):
    for x, y in zip(_as_tuple(a), _as_tuple(b), strict=True):
        assert x.shape == y.shape and x.dtype == y.dtype
        assert torch.equal(torch.nan_to_num(x.float(), 7.0, 9.0, -9.0), torch.nan_to_num(y.float(), 7.0, 9.0, -9.0))


def _schema_args(op, kw, with_out=False):
    """The custom op's positional arguments for a canonical call (what the traced call passes)."""
    c = compiled.compiled(op)
    spec = c.spec
    values = dict(spec.with_defaults(kw))
    args = []
    for name, typ in c.args:
        if name.endswith("__int"):  # an int where the declaration allows a tensor travels in its twin
            base = values[name[: -len("__int")]]
            args.append(base if isinstance(base, int) else None)
        elif isinstance(values[name], int) and f"{name}__int" in dict(c.args):
            args.append(None)
        elif typ == "SymInt[]":
            args.append([-1 if x is None else x for x in values[name]])
        elif spec.params[name].role == "plan" and not isinstance(values[name], torch.Tensor):
            args.append(None)  # a plan object stays outside the graph
        else:
            args.append(values[name])
    return args + ([values["out"]] if with_out else [])


OPCHECK_CASES = [c for op in COMPILED_OPS for c in _cases(op, every=4)]


@pytest.mark.deep  # torch.library.opcheck of every case: ~2 minutes on 2 cores
@pytest.mark.parametrize("op, case", OPCHECK_CASES, ids=[f"{o}-{c.name}" for o, c in OPCHECK_CASES])
def test_opcheck_passes_on_the_torch_provider(op, case):
    kw = _case_inputs(op, case)
    writes = any(ops.get(op).holds(p.mutated_when, kw) for p in ops.get(op).params.values() if p.mutated_when)
    kw.pop("out", None)
    custom = compiled.custom_op(op, writes=writes, lse=True)
    args = _schema_args(op, kw)
    fp8 = any(isinstance(a, torch.Tensor) and a.dtype in ops.spec.FP8_DTYPES for a in args)
    # opcheck's schema test compares inputs before and after with arithmetic CPU torch lacks for FP8
    utils = [u for u in ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
             if not (fp8 and u == "test_schema")]  # fmt: skip
    torch.library.opcheck(custom, args, test_utils=utils)


def test_opcheck_passes_with_out_written_in_place():
    op, case = _cases("fa3.varlen")[0]
    kw = _case_inputs(op, case)
    q, v = kw["q"], kw["v"]
    kw["out"] = torch.full((*q.shape[:-1], v.shape[-1]), float("nan"), dtype=q.dtype)
    torch.library.opcheck(compiled.custom_op(op, out=True, lse=True), _schema_args(op, kw, with_out=True))


def test_schemas_are_derived_from_the_declaration():
    c = compiled.compiled("fa3.kvcache")
    assert ("cache_seqlens", "Tensor?") in c.args and ("cache_seqlens__int", "SymInt?") in c.args
    assert c.unrepresentable == ["score_mod"] and c.conditions == ["k is not None"]
    schema = compiled._registered["accelbridge::fa3_kvcache_w0_lse_out"]
    assert "Tensor(a0!) k_cache" in schema and "Tensor(a1!) v_cache" in schema and "Tensor(a2!) out" in schema
    assert "Tensor k_cache" in compiled._registered["accelbridge::fa3_kvcache"]  # decode writes nothing
    assert ops.get("flashmla.kvcache").plan.param == "tile_scheduler_metadata"
    assert "Tensor? tile_scheduler_metadata" in compiled._registered["accelbridge::flashmla_kvcache"]


@pytest.mark.deep  # every conformance case through the reference
def test_declared_result_shapes_are_the_references():
    """The fake implementation's shapes and dtypes, on every conformance case of every compiled op."""
    for op in COMPILED_OPS:
        for _, case in _cases(op):
            kw = _case_inputs(op, case)
            kw.pop("out", None)
            eager, _ = _eager(op, kw)
            with torch._subclasses.FakeTensorMode(allow_non_fake_inputs=True):
                fake = compiled.custom_op(op, lse=True)(*_schema_args(op, kw))
            for e, f in zip(_as_tuple(eager), _as_tuple(fake), strict=True):
                assert (tuple(e.shape), e.dtype) == (tuple(f.shape), f.dtype), (op, case.name)


FULLGRAPH_CASES = [c for op in COMPILED_OPS for c in _cases(op, every=3)]


@pytest.mark.parametrize("op, case", FULLGRAPH_CASES, ids=[f"{o}-{c.name}" for o, c in FULLGRAPH_CASES])
def test_fullgraph_compile_equals_eager(op, case):
    kw = _case_inputs(op, case)
    spec = ops.get(op)
    sel = {spec.selector[0]: spec.selector[1]} if spec.selector else {}
    fn = attention.function(op)
    expected, after_eager = _eager(op, kw)
    torch._dynamo.reset()
    compiled_fn = torch.compile(lambda kw: fn(**kw, **sel), fullgraph=True, backend="aot_eager")
    clone = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    got = compiled_fn(clone)
    _same(got, expected)
    for name, p in spec.params.items():  # the in-place writes happened as in eager (kvcache append, out)
        if (p.mutated_when or p.role == "out") and isinstance(kw.get(name), torch.Tensor):
            _same(clone[name], after_eager[name])


def test_inductor_compiles_prefill_and_paged_decode():
    for op, case in (_cases("fa3.varlen")[0], _cases("fa3.kvcache")[1]):
        kw = _case_inputs(op, case)
        fn = attention.function(op)
        expected, _ = _eager(op, kw)
        torch._dynamo.reset()
        got = torch.compile(lambda kw: fn(**kw), fullgraph=True)({k: v for k, v in kw.items()})  # noqa: B023
        _same(got, expected)


def test_a_vendor_op_without_a_fake_implementation_compiles_through_the_facade(
    fixture_providers, tmp_path, monkeypatch
):
    import opaque_fa3

    (tmp_path / "opaque.yaml").write_text(
        "schema: 1\nplatform: cpu\nproviders:\n  opaque:\n    source: {module: opaque_fa3}\n"
        "    ops:\n      fa3.varlen: {function: flash_attn_varlen_func}\norder:\n  fa3.varlen: [opaque, torch]\n"
    )
    monkeypatch.setenv("ACCELBRIDGE_CATALOG_PATH", str(tmp_path / "opaque.yaml"))
    attention.reset()
    op, case = _cases("fa3.varlen")[0]
    kw = {k: v for k, v in _case_inputs(op, case).items() if k not in ("window_size", "softcap", "sinks")}
    assert attention.resolve(op).selected == "opaque"
    expected = attention.flash_attn_varlen_func(**kw)
    torch._dynamo.reset()
    with pytest.raises(Exception, match="fake"):  # the vendor function itself does not trace
        torch.compile(lambda kw: opaque_fa3.flash_attn_varlen_func(**kw), fullgraph=True, backend="aot_eager")(kw)
    torch._dynamo.reset()
    got = torch.compile(lambda kw: attention.flash_attn_varlen_func(**kw), fullgraph=True, backend="aot_eager")(kw)
    _same(got, expected)
    torch.library.opcheck(compiled.custom_op(op, lse=False), _schema_args(op, kw))


def _varlen_batch(batch, seqlen, rng):
    lens = torch.randint(1, seqlen + 1, (batch,), generator=rng)
    cu = torch.zeros(batch + 1, dtype=torch.int32)
    cu[1:] = lens.cumsum(0)
    total = int(cu[-1])
    q = torch.randn(total, 4, 64, generator=rng).to(torch.bfloat16)
    k = torch.randn(total, 2, 64, generator=rng).to(torch.bfloat16)
    v = torch.randn(total, 2, 64, generator=rng).to(torch.bfloat16)
    for t in (q, k, v):  # a token count of 1 (batch 1, length 1) would specialise a backed size
        torch._dynamo.decorators.mark_unbacked(t, 0)
    torch._dynamo.mark_dynamic(cu, 0)
    return q, k, v, cu, int(lens.max())


def test_dynamic_shapes_do_not_recompile_across_batch_sizes_and_lengths():
    rng = torch.Generator().manual_seed(0)

    def step(q, k, v, cu, max_len):
        return attention.flash_attn_varlen_func(q, k, v, cu, cu, max_len, max_len, causal=True)

    torch._dynamo.reset()
    f = torch.compile(step, fullgraph=True, backend="aot_eager", dynamic=True)
    f(*_varlen_batch(3, 17, rng))
    with torch.compiler.set_stance("fail_on_recompile"):
        for batch in (1, 2, 5, 8, 16, 31, 64):
            for seqlen in (1, 7, 33):
                args = _varlen_batch(batch, seqlen, rng)
                _same(f(*args), step(*args))


def test_the_traced_path_logs_warns_and_resolves_nothing(caplog):
    """Traced from a fresh state (nothing resolved): the graph is one custom op; resolution waits for the run."""
    op, case = _cases("fa3.kvcache")[1]
    kw = _case_inputs(op, case)
    writes = kw.get("k") is not None
    expected, _ = _eager(op, kw)
    attention.reset()
    torch._dynamo.reset()
    seen = {}

    def backend(gm, inputs):  # runs when tracing ends, before the graph runs
        seen["targets"] = [n.target for n in gm.graph.nodes if n.op == "call_function"]
        seen["records"] = [r for r in caplog.records if r.name.startswith("accelbridge")]
        seen["resolved"] = attention.facade._tables["flash_attn_with_kvcache"].copy()
        return gm

    with caplog.at_level(logging.DEBUG, logger="accelbridge"), warnings.catch_warnings():
        warnings.simplefilter("error")
        got = torch.compile(lambda kw: attention.flash_attn_with_kvcache(**kw), fullgraph=True, backend=backend)(kw)
    ours = [str(t) for t in seen["targets"] if "accelbridge" in str(t)]
    assert ours == [str(compiled.custom_op(op, writes=writes, lse=True))]
    assert seen["records"] == [] and seen["resolved"] == {}
    _same(got, expected)


def test_a_provider_change_needs_no_recompile(monkeypatch):
    op, case = _cases("fa3.varlen")[0]
    kw = _case_inputs(op, case)
    torch._dynamo.reset()
    f = torch.compile(lambda kw: attention.flash_attn_varlen_func(**kw), fullgraph=True, backend="aot_eager")
    first = f(kw)
    monkeypatch.setenv("ACCELBRIDGE_PROVIDERS", "fa3=reference")
    attention.reset()
    assert attention.resolve(op).selected == "reference"
    with torch.compiler.set_stance("fail_on_recompile"):
        second = f(kw)  # the custom op calls the provider resolved now
    for a, b in zip(first, second):
        torch.testing.assert_close(a.float(), b.float(), atol=2e-2, rtol=2e-2)


def test_an_argument_without_a_schema_type_is_named_under_compile():
    op, case = _cases("fa4.varlen")[0]
    kw = dict(_case_inputs(op, case), score_mod=lambda s, *a: s)
    torch._dynamo.reset()
    with pytest.raises(Exception, match="score_mod= cannot cross into a torch.compile graph"):
        torch.compile(lambda kw: attention.flash_attn_varlen_func(**kw, ver=4), fullgraph=True, backend="aot_eager")(kw)
    assert issubclass(NotCompilableError, NotImplementedError)


def test_planning_ops_under_compile_return_no_plan_and_the_consumer_plans():
    op, case = _cases("flashmla.kvcache")[0]
    kw = _case_inputs(op, case)
    expected, _ = _eager(op, kw)

    def step(kw):
        meta, splits = attention.get_mla_metadata(kw["cache_seqlens"], 16, 1)
        return attention.flash_mla_with_kvcache(**{**kw, "tile_scheduler_metadata": meta, "num_splits": splits})

    torch._dynamo.reset()
    _same(torch.compile(step, fullgraph=True, backend="aot_eager")(kw), expected)
    assert compiled.compiled("fa3.scheduler_metadata").traced() is None
