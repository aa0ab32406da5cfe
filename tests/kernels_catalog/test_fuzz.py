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
