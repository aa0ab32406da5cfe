"""The reference behind a call counter: shows whether a kernel ran."""

import functools

from accelbridge.ops import reference as ref

CALLS = []


def _spy(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        CALLS.append(fn.__name__)
        return fn(*args, **kwargs)

    return wrapper


flash_attn_varlen_func = _spy(ref.flash_attn_varlen_func)
flash_attn_with_kvcache = _spy(ref.flash_attn_with_kvcache)
flash_mla_with_kvcache = _spy(ref.flash_mla_with_kvcache)
