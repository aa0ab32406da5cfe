import pytest

from accelbridge.platforms import Arch, ArchMismatchError, PlatformError, register_family


@pytest.mark.parametrize(
    "text, family, version, name",
    [
        ("sm80", "sm", (8, 0), "sm80"),
        ("sm_90a", "sm", (9, 0), "sm90a"),
        ("sm90", "sm", (9, 0), "sm90"),
        ("sm100", "sm", (10, 0), "sm100"),
        ("sm103", "sm", (10, 3), "sm103"),
        ("sm120", "sm", (12, 0), "sm120"),
        ("gfx90a", "gfx", (9, 0, 10), "gfx90a"),
        ("gfx942", "gfx", (9, 4, 2), "gfx942"),
        ("gfx950", "gfx", (9, 5, 0), "gfx950"),
        ("gfx1100", "gfx", (11, 0, 0), "gfx1100"),
        ("mp21", "mp", (2, 1), "mp21"),
        ("mp22", "mp", (2, 2), "mp22"),
        ("mp31", "mp", (3, 1), "mp31"),
        ("cpu", "cpu", (), "cpu"),
        (" SM90 ", "sm", (9, 0), "sm90"),
    ],
)
def test_parse(text, family, version, name):
    a = Arch.parse(text)
    assert (a.family, a.version, a.name) == (family, version, name)


def test_vendor_and_capability():
    assert Arch.parse("gfx90a").capability == (9, 0)
    assert Arch.parse("gfx942").vendor == "amd"
    assert Arch.parse("mp31").capability == (3, 1)
    assert Arch.parse("sm100").vendor == "nvidia"


@pytest.mark.parametrize("bad", ["", "sm", "sm8", "gfx9", "xyz90", "mp3", "sm90b", "cuda"])
def test_unknown_arch_names_the_input_and_forms(bad):
    with pytest.raises(PlatformError, match="unknown arch") as e:
        Arch.parse(bad)
    assert repr(bad) in str(e.value) and "gfx942" in str(e.value)


def test_order_inside_families():
    p = Arch.parse
    assert p("sm80") < p("sm90") < p("sm100") < p("sm103") < p("sm120")
    assert p("gfx90a") < p("gfx942") < p("gfx950") < p("gfx1100")
    assert p("mp21") < p("mp22") < p("mp31")
    assert p("sm_90a") == p("sm90") and p("sm90a") >= p("sm90")
    assert sorted([p("sm100"), p("sm80"), p("sm90")]) == [p("sm80"), p("sm90"), p("sm100")]


@pytest.mark.parametrize("a, b", [("gfx90a", "sm90"), ("mp31", "sm80"), ("gfx1100", "sm89"), ("cpu", "sm80")])
def test_cross_vendor_comparison_raises_never_false(a, b):
    with pytest.raises(ArchMismatchError, match="vendor family"):
        _ = Arch.parse(a) >= Arch.parse(b)
    with pytest.raises(ArchMismatchError):
        _ = Arch.parse(b) < Arch.parse(a)
    assert Arch.parse(a) != Arch.parse(b)  # equality is fine (dict keys), just never equal


def test_rocm_capability_is_not_cuda_capability():
    # gfx90a reports (9, 0) like Hopper; the families keep them apart
    assert Arch.parse("gfx90a").capability == Arch.parse("sm90").capability
    assert Arch.parse("gfx90a") != Arch.parse("sm90")


def test_plugin_family():
    register_family("xpu", "acme")
    a = Arch.parse("xpu12")
    assert (a.family, a.version, a.vendor, a.name) == ("xpu", (1, 2), "acme", "xpu12")
    with pytest.raises(ArchMismatchError):
        _ = a < Arch.parse("sm90")
