"""Out-of-tree platforms found through a real entry point in a temporary .dist-info."""

import sys
import textwrap

import pytest

from accelbridge import platforms

pytestmark = pytest.mark.detection  # these tests exercise detection itself: the real (mocked) platform

PLUGIN = """
from accelbridge.platforms import Platform, register_family

register_family("xpu", "acme")


class AcmePlatform(Platform):
    name = "acme"
    vendor = "acme"
    device_type = "cpu"
    visible_devices_env = "ACME_VISIBLE_DEVICES"
    arch_family = "xpu"
    default_simulated_arch = "xpu12"

    def is_available(self):
        return True

    def device_count(self):
        return 2

    def capability(self, device=0):
        return (1, 2)

    def device_name(self, device=0):
        return "Acme X1"


class BrokenAtDetection(AcmePlatform):
    name = "broken"

    def is_available(self):
        raise RuntimeError("driver exploded")
"""


def install_plugin(root, module_name, entry_points, source=PLUGIN):
    (root / f"{module_name}.py").write_text(textwrap.dedent(source))
    info = root / f"{module_name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module_name}\nVersion: 0.1\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[accelbridge.platforms]\n{lines}\n")


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("acme_platform", "acme_broken_import"):
        sys.modules.pop(name, None)


def test_plugin_is_detected_first(plugin_dir):
    install_plugin(plugin_dir, "acme_platform", {"acme": "acme_platform:AcmePlatform"})
    p = platforms.current()
    assert (p.name, p.vendor, p.arch().name) == ("acme", "acme", "xpu12")
    assert platforms.plugin_report() == [
        {"name": "acme", "target": "acme_platform:AcmePlatform", "status": "loaded", "error": None}
    ]
    assert platforms.simulate("acme").arch().name == "xpu12"


def test_plugin_raising_at_import_is_reported_not_skipped(plugin_dir):
    install_plugin(plugin_dir, "acme_broken_import", {"bad": "acme_broken_import:Nope"}, "raise OSError('no driver')\n")
    with pytest.warns(RuntimeWarning, match=r"plugin 'bad' .*import: OSError: no driver"):
        p = platforms.current()
    assert p.name == "cpu"
    (rec,) = platforms.plugin_report()
    assert rec["status"] == "failed" and "OSError: no driver" in rec["error"]


def test_plugin_raising_at_detection_is_reported(plugin_dir):
    install_plugin(plugin_dir, "acme_platform", {"broken": "acme_platform:BrokenAtDetection"})
    with pytest.warns(RuntimeWarning, match=r"'broken' .*detection: RuntimeError: driver exploded"):
        p = platforms.current()
    assert p.name == "cpu"
    assert platforms.plugin_report()[0]["status"] == "failed"


def test_plugin_not_a_platform(plugin_dir):
    install_plugin(plugin_dir, "acme_platform", {"odd": "acme_platform:register_family"})
    with pytest.warns(RuntimeWarning, match="not a Platform subclass"):
        assert platforms.current().name == "cpu"


def test_env_selects_plugin(plugin_dir, monkeypatch):
    install_plugin(plugin_dir, "acme_platform", {"acme": "acme_platform:AcmePlatform"})
    monkeypatch.setenv("ACCELBRIDGE_PLATFORM", "acme")
    assert platforms.current().name == "acme"
