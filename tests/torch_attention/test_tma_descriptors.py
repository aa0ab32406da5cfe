"""A call's TMA descriptor is the one its class would build, pointed at the call's tensor; templates hold none."""

import pytest
import torch

from accelbridge.torch_attention import tma_descriptors

tensor_descriptor = pytest.importorskip("triton.tools.tensor_descriptor", reason="triton is not installed")


def _cache(blocks=6, page=64, width=576):
    return torch.randn(blocks, page, 2, width, dtype=torch.bfloat16)[:, :, 1]  # one kv head's view, rows apart


def test_a_descriptor_is_the_classes_own_over_the_calls_tensor():
    cache = _cache()
    rows = ((cache.shape[0] * cache.shape[1], 576), (cache.stride(1), 1))
    made = tma_descriptors.descriptor(tensor_descriptor.TensorDescriptor, cache, *rows, [64, 256])
    own = tensor_descriptor.TensorDescriptor.from_tensor(cache.as_strided(*rows), [64, 256])
    assert made.base is cache and made.base.data_ptr() == own.base.data_ptr()
    assert tuple(made.shape) == tuple(own.shape) and tuple(made.strides) == tuple(own.strides)
    assert list(made.block_shape) == list(own.block_shape) and made.padding == own.padding


def test_the_next_call_gets_its_own_base_and_no_template_holds_a_tensor():
    first, second = _cache(), _cache()
    rows = ((first.shape[0] * first.shape[1], 576), (first.stride(1), 1))
    a = tma_descriptors.descriptor(tensor_descriptor.TensorDescriptor, first, *rows, [64, 64])
    b = tma_descriptors.descriptor(tensor_descriptor.TensorDescriptor, second, *rows, [64, 64])
    assert a.base is first and b.base is second
    assert all(t.base is None for t in tma_descriptors._TEMPLATES.values())


def test_a_geometry_the_class_refuses_is_refused_on_its_first_call():
    cache = _cache()
    with pytest.raises(ValueError, match="power of 2"):  # Triton's own check: a box side of 48
        tma_descriptors.descriptor(tensor_descriptor.TensorDescriptor, cache, (384, 576), (1152, 1), [48, 64])


def test_gluons_descriptor_too():
    hopper = pytest.importorskip("triton.experimental.gluon.nvidia.hopper", reason="this triton has no Gluon")
    from accelbridge.torch_attention import mla_decode

    cache = _cache()
    rows = ((cache.shape[0] * cache.shape[1], 576), (cache.stride(1), 1))
    layout = mla_decode._gluon_layouts(torch.bfloat16, 64)[0]
    made = tma_descriptors.descriptor(hopper.TensorDescriptor, cache, *rows, [64, 256], layout)
    own = hopper.TensorDescriptor(cache.as_strided(*rows), rows[0], rows[1], [64, 256], layout)
    assert made.base is cache and made.layout == own.layout and list(made.block_shape) == [64, 256]
    assert tuple(made.shape) == tuple(own.shape) and tuple(made.strides) == tuple(own.strides)
