"""Random mutations of the built-in catalogs only ever raise CatalogError."""

import copy

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accelbridge.kernels_catalog import BUILTIN_DIR, CatalogError, load

BUILTINS = {p.stem: yaml.safe_load(p.read_text()) for p in BUILTIN_DIR.glob("*.yaml")}
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 300),
    st.text(max_size=12),
    st.lists(st.text(max_size=6), max_size=3),
    st.dictionaries(st.text(max_size=6), st.integers(), max_size=2),
    st.sampled_from(["sm90", ">=gfx942", ">=12.3", "<=256", "bf16", "reference", "fa3.varlen", "{module: x}"]),
)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


@st.composite
def mutated(draw):
    name = draw(st.sampled_from(sorted(BUILTINS)))
    data = copy.deepcopy(BUILTINS[name])
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(data) if p]
        path = draw(st.sampled_from(paths))
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "delete", "rename"]))
        if action == "replace":
            parent[path[-1]] = draw(JUNK)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = parent.pop(path[-1])
    return name, data


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutated())
def test_mutations_raise_only_catalog_errors(tmp_path, case):
    name, data = case
    path = tmp_path / "mutant.yaml"
    path.write_text(yaml.safe_dump(data))
    try:
        load(name if isinstance(data, dict) and data.get("platform") == name else "cpu", extra=[path])
    except CatalogError as e:
        assert e.issues and all(i.line >= 1 and i.col >= 1 and i.message for i in e.issues)


# -- random catalogs from scratch: valid ones resolve everywhere without crashing ----------------------
OPS_ = ["fa3.varlen", "fa3.kvcache", "fa4.varlen", "fa4.kvcache", "flashmla.kvcache"]
ARCH_RULES = ["sm90", ">=sm80", ">=sm80, <sm100", "sm100", ">=gfx942", "mp31", "cpu", ">=sm75"]
SPECS = ["cuda:sm90", "cuda:sm80:toolkit=12.1", "cuda:sm100", "rocm:gfx942", "musa:mp31", "cpu"]


@st.composite
def random_catalog(draw):
    platform = draw(st.sampled_from(["cuda", "rocm", "musa", "cpu"]))
    providers = {}
    for n in range(draw(st.integers(1, 4))):
        ops = {}
        for op in draw(st.lists(st.sampled_from(OPS_), min_size=1, max_size=3, unique=True)):
            req = {}
            if draw(st.booleans()):
                req["arch"] = draw(st.lists(st.sampled_from(ARCH_RULES), min_size=1, max_size=2))
            if draw(st.booleans()):
                req["dtypes"] = draw(st.lists(st.sampled_from(["bf16", "fp16", "fp32", "fp8_e4m3"]), min_size=1,
                                              max_size=3, unique=True))  # fmt: skip
            if draw(st.booleans()):
                req["head_dim"] = draw(st.sampled_from(["<=256", "==576", ">=64", "<=128"]))
            fn = {"fa3.varlen": "flash_attn_varlen_func", "fa4.varlen": "flash_attn_varlen_func",
                  "flashmla.kvcache": "flash_mla_with_kvcache"}.get(op, "flash_attn_with_kvcache")  # fmt: skip
            ops[op] = {"function": fn, "requires": req}
        source = draw(st.sampled_from([{"builtin": "reference"}, {"module": f"not_installed_{n}"}]))
        providers[f"p{n}"] = {"source": source, "ops": ops}
    data = {"schema": 1, "platform": platform, "providers": providers}
    if draw(st.booleans()):
        data["order"] = {op: draw(st.permutations([p for p, v in providers.items() if op in v["ops"]]))
                         for op in OPS_ if any(op in v["ops"] for v in providers.values())}  # fmt: skip
    return data, draw(st.sampled_from(SPECS))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(random_catalog())
def test_random_catalogs_validate_and_resolve(tmp_path, monkeypatch, case):
    import warnings

    from accelbridge import attention, kernels_catalog, platforms

    data, spec = case
    path = tmp_path / "random.yaml"
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("ACCELBRIDGE_CATALOG_PATH", str(path))
    platforms.reset()
    with platforms.simulated(spec), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            kernels_catalog.load(platforms.current())
        except CatalogError as e:  # e.g. an order naming a removed provider: reported, located
            assert all(i.line >= 1 for i in e.issues)
            return
        for op in OPS_:
            r = attention.resolve(op)
            rows = {c["provider"]: c for c in r.candidates}
            if r.selected is not None:
                assert rows[r.selected]["viable"] is True
            for c in r.candidates:
                assert c["viable"] or c["reasons"], f"{op}: {c['provider']} not viable without a reason"
