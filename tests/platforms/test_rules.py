import re

import pytest

from accelbridge.platforms import Arch, ArchRule, RuleError, parse_int_rule


def matches(rule, arch):
    return ArchRule.parse(rule).matches(Arch.parse(arch))


@pytest.mark.parametrize(
    "rule, arch, ok",
    [
        (">=sm80", "sm90", True),
        (">=sm80", "sm75", False),
        ([">=sm80, <sm100"], "sm90", True),
        ([">=sm80, <sm100"], "sm100", False),
        (["sm90", ">=sm80, <sm90"], "sm86", True),
        (["sm90", ">=sm80, <sm90"], "sm100", False),
        ("!=sm89", "sm89", False),
        ("!=sm89", "sm90", True),
        (">sm90", "sm90", False),
        ("<=sm90", "sm90", True),
        ("==sm90", "sm_90a", True),
        (" >= sm80 ,  < sm90 ", "sm86", True),
        (">=gfx942", "gfx950", True),
        (">=gfx942", "gfx90a", False),
        (">=mp31", "mp22", False),
        (">=mp31", "mp31", True),
    ],
)
def test_rule_semantics(rule, arch, ok):
    assert matches(rule, arch) is ok


@pytest.mark.parametrize(
    "rule, arch", [(">=sm80", "gfx90a"), (">=sm80", "gfx950"), (">=sm89", "gfx1100"), ("sm90", "mp31")]
)
def test_other_vendor_never_satisfies(rule, arch):
    # the field bug: ROCm gfx90a (9.0) and gfx950 (9.5) passing a >= (9, 0) Hopper gate
    assert matches(rule, arch) is False


@pytest.mark.parametrize(
    "rule, token",
    [
        ([], "empty rule"),
        ("", "''"),
        ("   ", "''"),
        (">=sm80,, <sm90", "stray comma"),
        ("=>sm80", "'=>sm80'"),
        (">=sm80 <sm90", "'>=sm80 <sm90'"),
        (">=sm8", "'>=sm8'"),
        ("~=sm90", "'~=sm90'"),
    ],
)
def test_bad_rules_name_the_token(rule, token):
    with pytest.raises(RuleError) as e:
        ArchRule.parse(rule)
    assert token in str(e.value)
    assert isinstance(e.value, ValueError)


def test_mixing_vendors_in_a_rule_is_an_error():
    with pytest.raises(RuleError, match="mixes vendor families"):
        ArchRule.parse([">=sm80", "gfx942"])
    with pytest.raises(RuleError, match="mixes vendor families"):
        ArchRule.parse(">=sm80, <gfx942")


@pytest.mark.parametrize("rule, message", [
    (">=sm100, <sm90", "rule alternative '>=sm100, <sm90' can never hold"),
    ("sm90, >sm90", "can never hold"),
    ("<sm90, >=sm90", "can never hold"),
    ([">=sm90", "<sm100"], "holds for every value: a list's alternatives are OR'd ('>=sm90' or '<sm100'); for a "
                           "range write one alternative '>=sm90, <sm100'"),
    ([">sm90", "<=sm90"], "holds for every value"),
])  # fmt: skip
def test_a_rule_that_never_or_always_holds_is_an_error(rule, message):
    """``arch(">=sm90", "<sm100")`` read as a range was OR'd into every arch; ``>=sm100, <sm90`` matched none."""
    with pytest.raises(RuleError, match=re.escape(message)):
        ArchRule.parse(rule)


def test_sound_rules_still_parse():
    assert ArchRule.parse([">=sm80, <sm90", "sm100", ">sm120"]).matches(Arch.parse("sm100"))
    assert parse_int_rule(["<=64", ">=128"]).matches(128) and not parse_int_rule(["<=64", ">=128"]).matches(96)


def test_rule_str_reads_like_the_input():
    assert str(ArchRule.parse(["sm90", ">=sm80, <sm90"])) == "sm90 or >=sm80, <sm90"


def test_int_rules():
    r = parse_int_rule("<=256")
    assert r.matches(128) and r.matches(256) and not r.matches(257)
    assert parse_int_rule([">=64, <=128", "==256"]).matches(256)
    with pytest.raises(RuleError, match="'<=big'"):
        parse_int_rule("<=big")
