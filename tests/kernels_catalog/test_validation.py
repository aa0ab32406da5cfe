"""Every validation error, with its exact line and column."""

import textwrap

import pytest

from accelbridge.cli import main
from accelbridge.kernels_catalog import BUILTIN_DIR, validate_file


def issues_of(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return [(i.line, i.col, i.message) for i in validate_file(path)]


def one(tmp_path, text):
    found = issues_of(tmp_path, text)
    assert len(found) == 1, found
    return found[0]


def loc(text, token, line_hint=None):
    """1-based (line, col) of ``token`` in the file as written (first match, or on line_hint)."""
    for n, line in enumerate(textwrap.dedent(text).lstrip("\n").splitlines(), 1):
        if token in line and (line_hint is None or n == line_hint):
            return n, line.index(token) + 1
    raise AssertionError(f"{token!r} not in text")


GOOD_HEAD = """
schema: 1
platform: cuda
providers:
  mine:
    source: {module: my_fa3}
    ops:
      fa3.varlen: {function: varlen}
"""


def test_builtin_catalogs_validate_ok(capsys):
    files = sorted(str(p) for p in BUILTIN_DIR.glob("*.yaml"))
    assert len(files) == 5  # cpu, cuda, musa, rocm and builtin.yaml (the built-in providers, every platform)
    assert main(["catalog", "validate", *files]) == 0
    assert capsys.readouterr().out == "ok\n"


def test_good_overlay_ok(tmp_path):
    assert issues_of(tmp_path, GOOD_HEAD + "order:\n  fa3.varlen: [mine, sgl-kernel, reference]\n") == []


@pytest.mark.parametrize(
    "text, line, col, message",
    [
        ("schema: 2\nplatform: cuda\n", 1, 9, "unsupported schema 2"),
        ("schema: 1\nplatfrom: cuda\n", 2, 1, "unknown key 'platfrom' in the catalog (did you mean 'platform'?)"),
        ("schema: 1\nplatform: cdua\n", 2, 11, "unknown platform 'cdua' (did you mean 'cuda'?)"),
        ("schema: '1'\nplatform: cuda\n", 1, 9, "'schema' must be an integer, got str"),
        ("schema: 1\nplatform: cuda\nproviders: []\n", 3, 12, "'providers' must be a mapping, got list"),
    ],
)
def test_top_level(tmp_path, text, line, col, message):
    found = issues_of(tmp_path, text)
    assert any((ln, c) == (line, col) and message in m for ln, c, m in found), found


@pytest.mark.parametrize(
    "source, token, message",
    [
        ("{}", "{}", "source needs exactly one of module, hub, path, builtin (got none)"),
        ("{hub: acme/fa3}", "{hub", "hub source 'acme/fa3' is not pinned"),
        ("{hub: acme/fa3, version: 1, revision: v2}", "revision", "give `version` or `revision`, not both"),
        ("{hub: acme/fa3, version: x}", "x}", "'version' must be an integer, got str"),
        ("{hub: acme, version: 1}", "acme", "hub source 'acme' must be ORG/REPO"),
        ("{module: my_fa3, version: 1}", "version", "source key 'version' only goes with 'hub'"),
        ("{builtin: referense}", "referense", "unknown builtin 'referense' (did you mean 'reference'?)"),
        ("{module: 'my fa3'}", "'my fa3'", "module 'my fa3' is not a dotted module name"),
        ("{module: m, path: d}", "{module", "exactly one of module, hub, path, builtin (got module, path)"),
    ],
)
def test_sources(tmp_path, source, token, message):
    text = GOOD_HEAD.replace("{module: my_fa3}", source)
    ln, c, m = one(tmp_path, text)
    assert (ln, c) == loc(text, token, 5) and message in m, (ln, c, m)


def test_unknown_source_key(tmp_path):
    text = GOOD_HEAD.replace("{module: my_fa3}", "{modul: my_fa3}")
    found = issues_of(tmp_path, text)
    assert (*loc(text, "modul"), "unknown key 'modul' in source (did you mean 'module'?)") in found


@pytest.mark.parametrize(
    "requires, token, message",
    [
        ('{arch: [">=gfx942"]}', "[", "arch rule >=gfx942 names amd archs, but this file is for platform 'cuda'"),
        ('{arch: [">=sm80,,<sm90"]}', "[", "bad arch rule: empty term"),
        ('{arch: ["=>sm80"]}', "[", "bad rule token '=>sm80'"),
        ('{arch: [">=sm80", "gfx942"]}', "[", "mixes vendor families"),
        ('{arch: [">=sm100, <sm90"]}', "[", "rule alternative '>=sm100, <sm90' can never hold"),
        ('{toolkit: ">=>12"}', '">=>12"', "bad toolkit version specifier '>=>12'"),
        ('{torch: "two"}', '"two"', "bad torch version specifier 'two'"),
        ("{dtypes: [bf16, bf61]}", "bf61", "unknown dtype 'bf61' (did you mean 'bf16'?)"),
        ('{head_dim: "<=big"}', '"<=big"', "bad head_dim rule"),
        ("{arch: 90}", "90", "'arch' must be a string or a list, got int"),
        ("{archs: [sm90]}", "archs", "unknown key 'archs' in requires (did you mean 'arch'?)"),
    ],
)
def test_requires(tmp_path, requires, token, message):
    text = GOOD_HEAD.replace("{function: varlen}", "{function: varlen, requires: " + requires + "}")
    ln, c, m = one(tmp_path, text)
    assert (ln, c) == loc(text, token, 7) and message in m, (ln, c, m)


@pytest.mark.parametrize(
    "entry, token, message",
    [
        ("{function: 'not a path!'}", "'not", "function 'not a path!' is not a dotted identifier path"),
        ("{}", "{}", "op fa3.varlen needs 'function'"),
        (
            "{function: f, adapt: {rename: {sink: s}}}",
            "sink",
            "rename: 'sink' is no argument of fa3.varlen (did you mean 'sinks'?)",
        ),
        ("{function: f, adapt: {rename: {sinks: 'a b'}}}", "'a b'", "rename: target 'a b' must be a parameter name"),
        ("{function: f, adapt: {window: nope}}", "nope", "adapt.window: unknown value 'nope'"),
        ("{function: f, adapt: {returns: tuple}}", "tuple", "adapt.returns: unknown value 'tuple'"),
        ("{function: f, adapt: {emulate: kvcache-via-varlen}}", "kvcache-", "only applies to kvcache ops"),
        ("{function: f, adapt: {renames: {}}}", "renames", "unknown key 'renames' in adapt (did you mean 'rename'?)"),
        ("{function: f, adapt: {kwargs: [sinkz]}}", "sinkz", "kwargs: 'sinkz' is no argument of fa3.varlen"),
    ],
)
def test_op_entries(tmp_path, entry, token, message):
    text = GOOD_HEAD.replace("{function: varlen}", entry)
    ln, c, m = one(tmp_path, text)
    assert (ln, c) == loc(text, token, 7) and message in m, (ln, c, m)


def test_unknown_op(tmp_path):
    ln, c, m = one(tmp_path, GOOD_HEAD.replace("fa3.varlen:", "fa3.varln:"))
    assert (ln, c) == (7, 7) and "unknown op 'fa3.varln' (did you mean 'fa3.varlen'?)" in m


@pytest.mark.parametrize(
    "order, token, message",
    [
        (
            "fa3.varlen: [mine, sgl-kernal]",
            "sgl-kernal",
            "provider 'sgl-kernal' is not defined (did you mean 'sgl-kernel'?)",
        ),
        ("fa3.varlen: []", "[]", "order of fa3.varlen is empty"),
        ("fa3.kvcache: [mine]", "mine", "provider 'mine' does not serve fa3.kvcache"),
        ("fa3.varlen: [mine, mine]", "mine]", "listed twice"),
        ("fa3.varlenn: [mine]", "fa3.varlenn", "unknown op 'fa3.varlenn'"),
        ("fa3.varlen: mine", "mine", "must be a list of provider ids"),
    ],
)
def test_order(tmp_path, order, token, message):
    text = GOOD_HEAD + "order:\n  " + order + "\n"
    ln, c, m = one(tmp_path, text)
    assert (ln, c) == loc(text, token, 9) and message in m, (ln, c, m)


def test_duplicate_key(tmp_path):
    text = GOOD_HEAD + "  mine:\n    source: {module: other}\n"
    ln, c, m = one(tmp_path, text)
    assert (ln, c) == (8, 3) and m == "duplicate key 'mine' (first at line 4)"


def test_every_error_is_collected(tmp_path):
    text = """
    schema: 2
    platform: cuda
    providers:
      mine:
        source: {hub: acme/fa3}
        requires: {arch: [">=gfx942"], toolkit: ">=>12"}
        ops:
          fa3.varln: {function: x}
          fa3.varlen: {function: "a b", requires: {dtypes: [bf61]}}
    order:
      fa3.varlen: [mine, nope]
      fa3.kvcache: []
    """
    found = issues_of(tmp_path, text)
    expected = [
        loc(text, "2"),  # schema
        loc(text, "{hub"),  # unpinned
        loc(text, '[">=gfx942"]'),  # other vendor's arch
        loc(text, '">=>12"'),  # specifier
        loc(text, "fa3.varln"),  # unknown op
        loc(text, '"a b"'),  # function path
        loc(text, "bf61"),  # dtype
        loc(text, "nope"),  # undefined provider in order
        loc(text, "[]"),  # empty order
    ]
    assert [(ln, c) for ln, c, _ in found] == expected


@pytest.mark.parametrize(
    "raw, line, col, message",
    [
        (b"schema: 1\n\tplatform: cuda\n", 2, 1, "(YAML indents with spaces, never tabs)"),
        (b"- a\n- b\n", 1, 1, "the top level must be a mapping"),
        (b"", 1, 1, "empty catalog file"),
        (b"# only a comment\n", 1, 1, "empty catalog file"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", 1, 1, "not UTF-8 text"),
        (b"schema: 1\nplatform: [cuda\n", 3, 1, "malformed YAML"),
        (b"schema: 1\n---\nschema: 1\n", 3, 1, "one YAML document"),
        (b"a: \x00\n", 1, 4, "malformed YAML"),
    ],
)
def test_malformed_files(tmp_path, raw, line, col, message):
    path = tmp_path / "bad.yaml"
    path.write_bytes(raw)
    (issue,) = validate_file(path)
    assert (issue.line, issue.col) == (line, col) and message in issue.message, issue
    assert str(issue).startswith(f"{path}:{line}:{col}: ")


def test_missing_file(tmp_path):
    (issue,) = validate_file(tmp_path / "nope.yaml")
    assert "cannot read catalog file" in issue.message


def test_cli_validate_lists_all_and_exits_1(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema: 2\nplatform: cdua\n")
    assert main(["catalog", "validate", str(bad)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{bad}:1:9: unsupported schema 2: this accelbridge reads schema 1",
        f"{bad}:2:11: unknown platform 'cdua' (did you mean 'cuda'?); valid: cpu, cuda, musa, rocm",
    ]


def test_refusals_name_real_arguments_and_valid_conditions(tmp_path):
    path = tmp_path / "refuse.yaml"
    path.write_text(
        textwrap.dedent("""\
        schema: 1
        platform: cuda
        providers:
          v:
            source: {module: vendor_mla}
            ops:
              flashmla.kvcache:
                function: decode
                adapt:
                  refuses:
                    - {args: [topk_lenght], when: "indices is not None"}
                    - {args: [attn_sink], when: "q.shape[-1] == d_qk"}
                    - {args: [attn_sink], when: "q.shape[-1] =="}
                    - {args: [attn_sink]}
        """)
    )
    messages = [i.message for i in validate_file(path)]
    assert any("'topk_lenght' is no argument of flashmla.kvcache (did you mean 'topk_length'?)" in m for m in messages)
    assert any("reads d_qk, which are no arguments of flashmla.kvcache" in m for m in messages)
    assert any("is no Python expression" in m for m in messages)
    assert any("a refusal needs 'args'" in m for m in messages)


@pytest.mark.parametrize("requires, message", [
    ('{arch: ["hopper"]}', "unknown arch 'hopper'"),
    ('{arch: ["hopper"]}', "(did you mean 'sm90'?)"),
    ('{arch: [">=8.0"]}', "(did you mean '>=sm80'?)"),
    ('{arch: ["mi300"]}', "(did you mean 'gfx942'?)"),
    ("{dtypes: [float16]}", "unknown dtype 'float16' (did you mean 'fp16'?)"),
    ("{dtypes: [bfloat16]}", "(did you mean 'bf16'?)"),
])  # fmt: skip
def test_generation_names_capabilities_and_torch_dtypes_get_a_did_you_mean(tmp_path, requires, message):
    path = tmp_path / "c.yaml"
    path.write_text(f"schema: 1\nplatform: cuda\nproviders:\n  x:\n    source: {{module: m}}\n"
                    f"    ops:\n      fa3.varlen: {{function: f, requires: {requires}}}\n")  # fmt: skip
    assert any(message in i.message for i in validate_file(path)), [i.message for i in validate_file(path)]


def test_validate_imports_finds_a_misspelled_provider_module(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("schema: 1\nplatform: cuda\nproviders:\n  v:\n    source: {module: yamll}\n"
                    "    ops:\n      fa3.varlen: {function: f}\n")  # fmt: skip
    assert main(["catalog", "validate", str(path)]) == 0, "without --imports only the file is checked"
    capsys.readouterr()
    assert main(["catalog", "validate", "--imports", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}:5:22: provider 'v': module 'yamll' is not installed here (did you mean 'yaml'?)" in out


def test_a_tab_indent_gets_the_hint_and_an_unknown_platform_mentions_plugins(tmp_path):
    tab = tmp_path / "tab.yaml"
    tab.write_text("schema: 1\nplatform: cuda\nproviders:\n\tx:\n    source: {module: m}\n")
    assert "(YAML indents with spaces, never tabs)" in validate_file(tab)[0].message
    plugin = tmp_path / "acme.yaml"
    plugin.write_text("schema: 1\nplatform: acme\nproviders: {}\n")
    assert "out-of-tree plugin exists once its package is installed" in validate_file(plugin)[0].message


ORDER_WITHOUT_TORCH = (
    GOOD_HEAD
    + """      fa3.kvcache: {function: kvcache}
order:
  fa3.varlen: [mine, reference]
  fa3.kvcache: [mine]
"""
)


def test_an_order_leaving_out_a_builtin_warns_and_names_the_fix(tmp_path, capsys):
    """A list is the whole order: torch silently not tried was a newcomer's surprise."""
    path = tmp_path / "c.yaml"
    path.write_text(textwrap.dedent(ORDER_WITHOUT_TORCH).lstrip("\n"))
    assert main(["catalog", "validate", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "ok, 2 warning(s)"
    line, col = loc(ORDER_WITHOUT_TORCH, "[mine, reference]")
    assert out[0] == (f"warning: {path}:{line}:{col}: order of fa3.varlen does not name torch, so torch is never "
                      "tried for fa3.varlen (a list is the whole order): add torch at the end of the list, or say "
                      "it with providers: {torch: {ops: {fa3.varlen: null}}}")  # fmt: skip
    assert "order of fa3.kvcache does not name torch and reference" in out[1]


def test_an_order_that_says_it_drops_torch_does_not_warn(tmp_path, capsys):
    said = ORDER_WITHOUT_TORCH.replace("order:", "  torch:\n    ops: {fa3.varlen: null}\norder:").replace(
        "[mine]", "[mine, torch, reference]"
    )
    path = tmp_path / "c.yaml"
    path.write_text(textwrap.dedent(said).lstrip("\n"))
    assert main(["catalog", "validate", str(path)]) == 0
    assert capsys.readouterr().out == "ok\n"


def test_an_order_with_providers_after_the_reference_warns(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("schema: 1\nplatform: cpu\norder:\n  fa3.varlen: [reference, torch]\n")
    assert main(["catalog", "validate", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "ok, 1 warning(s)"
    assert out[0].endswith("order of fa3.varlen lists torch after reference, which serves every call, so torch is "
                           "never tried: put reference last")  # fmt: skip
