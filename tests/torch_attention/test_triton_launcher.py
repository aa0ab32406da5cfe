"""The bound C launch: the arguments Triton's descriptor wrapper would pass, in its layout, each call's values in
their places, a descriptor encoded once a pointer; declined under a launch hook or on another device, and wherever
the launcher is not the known one."""

from types import SimpleNamespace

import pytest
import torch

from accelbridge.torch_attention import triton_launcher

_HEAD = ["gx", "gy", "gz", "stream", "function", False, False, None, None, (8, 1, 0), None, None, None]


class _Desc:
    def __init__(self, base):
        self.base = base


def _expand(desc, meta):  # Triton's make_tensordesc_arg with metadata: the encoded map, then shape and strides
    return [("map", desc.base.data_ptr(), meta), 64, 576, 576, 1]


def _runtime(device=0, hooks=()):
    hook = SimpleNamespace(calls=list(hooks))
    return {"device": lambda: device, "stream": lambda d: 1000 + d,
            "hooks": SimpleNamespace(launch_enter_hook=hook, launch_exit_hook=SimpleNamespace(calls=[]))}  # fmt: skip


def _bound(monkeypatch, encoded, runtime=None):
    launched = []

    def encode(desc, meta):
        encoded.append(desc.base.data_ptr())
        return _expand(desc, meta)

    monkeypatch.setattr(triton_launcher, "_encode", encode)
    # parameters Q, n, NOPE (a descriptor), BLOCK (a constexpr), OUT, scale; per call: Q, NOPE, OUT, scale
    args, slots = [None, 7, None, 16, None, None], (0, 2, 4, 5)
    q, cache, out = torch.zeros(8), torch.zeros(64), torch.zeros(8)
    bound = triton_launcher.lay_out(lambda *a: launched.append(a), _HEAD, args, slots, {2: _Desc}, ["meta"],
                                    (q, cache, out, 0.5), runtime or _runtime())  # fmt: skip
    return bound, launched, (q, cache, out)


def test_a_bound_launch_passes_what_the_descriptor_wrapper_would(monkeypatch):
    encoded = []
    bound, launched, (q, cache, out) = _bound(monkeypatch, encoded)
    assert not any(isinstance(v, torch.Tensor) for v in bound.head)  # the template keeps no call's tensor
    q2, out2 = torch.zeros(8), torch.zeros(8)
    assert bound((q2, cache, out2, 0.25), (3, 2, 1))
    values = [q2, 7, _Desc(cache), 16, out2, 0.25]  # the wrapper's own expansion of the JIT's arguments
    wrapped = [*(3, 2, 1, 1000), *_HEAD[4:]]
    for i, v in enumerate(values):
        wrapped.extend(_expand(v, "meta") if i == 2 else [v])
    assert list(launched[0]) == wrapped


def test_a_descriptor_is_encoded_once_a_pointer(monkeypatch):
    encoded = []
    bound, launched, (q, cache, out) = _bound(monkeypatch, encoded)
    other = torch.zeros(64)
    for c in (cache, cache, other, other, cache):
        assert bound((q, c, out, 1.0), (1, 1, 1))
    assert encoded == [cache.data_ptr(), other.data_ptr()]  # the first at laying out, the other once
    assert [a[13 + 2][1] for a in launched] == [p.data_ptr() for p in (cache, cache, other, other, cache)]


@pytest.mark.parametrize("runtime", [_runtime(hooks=["proton"]), {**_runtime(), "device": lambda: 1}],
                         ids=["launch hook", "another device"])  # fmt: skip
def test_a_bound_launch_declines_under_a_hook_or_on_another_device(monkeypatch, runtime):
    bound, launched, (q, cache, out) = _bound(monkeypatch, [], dict(_runtime(), hooks=runtime["hooks"]))
    bound.current_device = runtime["device"]
    assert not bound((q, cache, out, 1.0), (1, 1, 1)) and not launched


def _wrapper(launcher, tensordesc_indices, tensordesc_meta):  # Triton 3.6's descriptor wrapper's closure
    def inner(*args):
        return launcher, tensordesc_indices, tensordesc_meta

    return inner


def test_the_raw_launch_is_found_only_under_the_known_wrapper():
    assert triton_launcher._raw_launch(len, []) == (len, [])  # no descriptor: the C function itself
    assert triton_launcher._raw_launch(_wrapper(len, {3, 5}, ["a", "b"]), [3, 5]) == (len, ["a", "b"])
    assert triton_launcher._raw_launch(lambda *a: None, []) == (None, [])  # a Python wrapper not known
    assert triton_launcher._raw_launch(_wrapper(len, {3}, [None]), [3]) == (None, [])  # no metadata
    assert triton_launcher._raw_launch(_wrapper(len, {3}, ["a"]), [4]) == (None, [])  # other parameters


def test_bind_declines_a_triton_whose_launcher_was_not_checked(monkeypatch):
    triton = pytest.importorskip("triton")
    monkeypatch.setattr(triton, "__version__", "3.9.0")
    assert triton_launcher.bind(object(), [], (), {}, ()) is None
