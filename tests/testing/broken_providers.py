"""Providers with the reference's signature and one realistic bug each, for conformance to catch."""

import functools
import inspect

import torch

from accelbridge.ops import reference as ref

_SIG = inspect.signature(ref.flash_attn_varlen_func)


def _faulty(fault):
    """A varlen function with the reference's signature whose arguments pass through ``fault`` first."""

    @functools.wraps(ref.flash_attn_varlen_func)
    def fn(*args, **kwargs):
        bound = _SIG.bind(*args, **kwargs)
        bound.apply_defaults()
        return fault(dict(bound.arguments))

    return fn


def _drop_softcap(a):
    a["softcap"] = 0.0  # the bug: accepted, then silently ignored
    return ref.flash_attn_varlen_func(**a)


def _ignore_out(a):
    a["out"] = None  # computes into a new tensor; the caller's buffer stays untouched
    return ref.flash_attn_varlen_func(**a)


def _miss_last_row(a):
    out = a["out"]
    result = ref.flash_attn_varlen_func(**{**a, "out": None})
    out[:-1].copy_(result[0][:-1] if isinstance(result, tuple) else result[:-1])
    return (out, result[1]) if isinstance(result, tuple) else out


def _lse_transposed(a):
    result = ref.flash_attn_varlen_func(**a)
    return (result[0], result[1].t().contiguous()) if isinstance(result, tuple) else result


def _wrong_scale(a):
    a["softmax_scale"] = 1.25 * a["q"].shape[-1] ** -0.5
    return ref.flash_attn_varlen_func(**a)


def _illegal_access(a):
    raise RuntimeError("CUDA error: an illegal memory access was encountered")


def _half_precision_accumulate(a):
    """Computes in the input dtype end to end, as a careless port does: fails the fp16 tolerance."""
    out = ref.flash_attn_varlen_func(**{**a, "out": None, "return_softmax_lse": False})
    noisy = out + torch.randn_like(out.float()).to(out.dtype) * 5e-2
    if a["out"] is not None:
        a["out"].copy_(noisy)
        noisy = a["out"]
    return noisy


def _index_with_every_entry(a):
    """Gathers each sequence's whole page-table row, as the torch provider once did: a sentinel past a
    sequence's pages (2147480000) faults (IndexError here, a device-side assert on a GPU)."""
    if a["page_table"] is not None:
        a["k"][a["page_table"].long()]
    return ref.flash_attn_varlen_func(**a)


def _sink_inf_as_none(a):
    """Honours finite sinks but takes a +inf one for "no sink" (that head's output must be 0)."""
    if a["sinks"] is not None:
        a["sinks"] = torch.where(torch.isposinf(a["sinks"]), float("-inf"), a["sinks"])
    return ref.flash_attn_varlen_func(**a)


drop_softcap = _faulty(_drop_softcap)
ignore_out = _faulty(_ignore_out)
miss_last_row = _faulty(_miss_last_row)
lse_transposed = _faulty(_lse_transposed)
wrong_scale = _faulty(_wrong_scale)
illegal_access = _faulty(_illegal_access)
noisy = _faulty(_half_precision_accumulate)
index_with_every_entry = _faulty(_index_with_every_entry)
sink_inf_as_none = _faulty(_sink_inf_as_none)
FAULTS = ("drop_softcap", "ignore_out", "miss_last_row", "lse_transposed", "wrong_scale", "illegal_access", "noisy",
          "index_with_every_entry", "sink_inf_as_none")  # fmt: skip
