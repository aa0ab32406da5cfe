"""docs/architecture.md, checked: layers without upward arrows or circles, and its add-an-op checklist."""

import ast
from pathlib import Path

import pytest
import torch

from accelbridge import attention, ops
from accelbridge.attention import InvalidArgumentError
from accelbridge.ops.cases import Case, Inputs
from accelbridge.ops.spec import Check, Data, OpSpec, Option, Out, fail
from accelbridge.testing import conformance

PACKAGE = Path(__file__).parents[1] / "accelbridge"
LAYER = {"errors": 0, "env": 0, "codegen": 0, "platforms": 1, "ops": 2, "torch_attention": 2, "kernels_catalog": 3,
         "attention": 4, "bench": 5,
         "testing": 5, "integrations": 5, "cli": 5, "__main__": 6,
         "": 0}  # fmt: skip  # the root only re-exports lazily


def _imports() -> dict[str, set[str]]:
    """module -> the accelbridge modules it imports (module level and inside functions)."""
    files = {}
    for f in PACKAGE.rglob("*.py"):
        parts = f.relative_to(PACKAGE.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    graph = {}
    for name, f in files.items():
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("accelbridge")}
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("accelbridge"):
                for a in node.names:  # `from accelbridge import ops` imports the module accelbridge.ops
                    sub = f"{node.module}.{a.name}"
                    deps.add(sub if sub in files else node.module)
        graph[name] = {d for d in deps if d in files and d != name}
    return graph


def _layer(module: str) -> int:
    return LAYER[module.split(".")[1] if "." in module else ""]


def test_no_module_imports_from_a_higher_layer():
    upward = [(m, d) for m, ds in _imports().items() for d in ds if _layer(d) > _layer(m)]
    assert not upward, upward


def test_no_import_circle():
    graph = _imports()
    seen, on_path, circles = set(), [], []

    def visit(m):
        if m in on_path:
            circles.append(on_path[on_path.index(m) :] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        on_path.append(m)
        for d in sorted(graph[m]):
            if not d.startswith(m + "."):  # a package's __init__ importing its own modules is no circle
                visit(d)
        on_path.pop()

    for m in sorted(graph):
        visit(m)
    assert not circles, circles


def test_platforms_import_nothing_above_them():
    for m, deps in _imports().items():
        if m.startswith("accelbridge.platforms"):
            assert all(_layer(d) <= 1 for d in deps), (m, deps)


# -- the add-an-op checklist, followed with a toy op ----------------------------------------------
def toy_scale(x: Data, factor: Option = 1.0, bias: Data = None, out: Out = None):  # step 1
    """A toy op: x * factor (+ bias)."""


def _toy_values(a):
    if a["factor"] != a["factor"]:  # NaN
        fail("factor", "is NaN", "a number")


TOY_CHECKS = (  # step 2
    Check("x", "x.dim() == 2", "{_shape(x)}", "a tensor (rows, cols)"),
    Check("x", "x.dtype in _F", "has dtype {x.dtype}", "a floating dtype", what="dtype"),
    Check("bias", "bias is None or bias.shape == x.shape[-1:]", "{_shape(bias)}", "(cols,) like x's last dim"),
    Check("factor", _toy_values, kind="values"),
)


def toy_reference(x, factor=1.0, bias=None, out=None):  # step 3
    y = x.float() * factor + (0 if bias is None else bias.float())
    if out is not None:
        out.copy_(y.to(x.dtype))
        return out
    return y.to(x.dtype)


def toy_cases(full=False):
    return [Case("toy.scale", "plain", lens_q=(4,), d=8), Case("toy.scale", "bias", lens_q=(6,), d=16, sinks=True)]


def toy_inputs(case, inp: Inputs):
    x = inp.randn(case.lens_q[0], case.d)
    return {"x": x, "factor": 1.5, "bias": inp.randn(case.d) if case.sinks else None}


@pytest.fixture
def toy_op():
    spec = ops.register(
        OpSpec(
            "toy.scale",
            toy_scale,
            checks=TOY_CHECKS,
            reference=toy_reference,
            cases=toy_cases,
            inputs=toy_inputs,
            features={"dtype": "x.dtype"},
        )
    )  # step 4
    attention.reset()
    yield spec
    ops.unregister("toy.scale")
    attention.reset()


def test_add_an_op_checklist(toy_op):
    fn = attention.function("toy.scale")  # step 5: no other edit anywhere
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(fn(x, 2.0), x * 2.0)
    out = torch.full_like(x, float("nan"))
    assert fn(x, 2.0, out=out) is out and torch.equal(out, x * 2.0)
    # resolves (the implicit reference serves every declared op), explains, checks
    assert attention.resolve("toy.scale").selected == "reference"
    assert "selected reference" in attention.explain("toy.scale")
    with pytest.raises(InvalidArgumentError, match=r"toy_scale: x has shape \(5,\); expected a tensor"):
        fn(torch.ones(5))
    with pytest.raises(InvalidArgumentError, match=r"bias has shape \(4,\); expected \(cols,\)"):
        fn(x, 1.0, torch.ones(4))
    attention.set_checks("full")
    with pytest.raises(InvalidArgumentError, match="factor is NaN; expected a number"):
        fn(x, float("nan"))
    attention.set_checks(None)
    # conforms
    assert "toy.scale" in conformance.checked_ops()
    results = list(conformance.run_all("toy.scale", seed=1))
    assert [r.status for r in results] == ["pass", "pass"], [r.detail for r in results]
    from accelbridge import kernels_catalog

    assert "toy.scale" in kernels_catalog.load("cuda").providers["reference"].ops
