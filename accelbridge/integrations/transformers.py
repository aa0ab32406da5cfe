"""Hugging Face transformers attention backend: ``attn_implementation="accelbridge"``.

Importing this module registers the backend with transformers (``AttentionInterface`` and its mask
interface), so a model loaded or switched with ``attn_implementation="accelbridge"`` computes every
attention call through :func:`accelbridge.attention.flash_attn_varlen_func` (padded, packed and
continuous-batching prefill batches) or :func:`accelbridge.attention.flash_attn_with_kvcache`
(decode steps: continuous batching's through transformers' paged cache and its block table, a plain
cache's read in place as (batch, tokens, kv heads, dim) views),
resolved against the active platform's catalog like any facade call. ``"paged|accelbridge"`` names the
same backend (transformers 5.23+ drops the ``paged|`` prefix, as of ``paged|flash_attention_2``).

What the model passes is mapped, or refused with an error naming the model's argument:
causal and the sliding window (transformers counts the query's own token, FA's ``window_size`` does
not: ``sliding_window=w`` is ``window_size=(w - 1, 0)``), ``softcap``, ``s_aux`` (attention sinks, as
``sinks`` in the model's dtype, as transformers' flash backends pass them), ``scaling``, GQA, q/k and v
head dims that differ. ``dropout > 0``,
``output_attentions=True``, a 4D or block mask, a position bias and a non-causal sliding window are
refused (:class:`TransformersArgumentError`), never approximated.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import torch
import torch.nn.functional as F
import transformers
from packaging.version import Version
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

from accelbridge import attention
from accelbridge.errors import AccelbridgeError

NAME = "accelbridge"
PAGED_NAME = "paged|accelbridge"
NAMES = (NAME, PAGED_NAME)
MIN_VERSION = Version("5.0")

# Keywords that reach an attention function and ask nothing of it: generation and cache bookkeeping
# (transformers' paged cache has already read or written its pages when they arrive), positions already
# applied by the rotary embedding, output switches of other modules. Any other keyword with a value
# (not None or False) is refused: what it asks of attention is unknown, so it cannot be honoured.
_BOOKKEEPING = frozenset({"position_ids", "cache_position", "use_cache", "cache", "past_key_values", "read_index",
                          "write_index", "logits_indices", "logits_processor_args", "position_embeddings",
                          "output_router_logits", "output_hidden_states", "return_dict", "layer_idx"})  # fmt: skip
_SERVED = frozenset({"cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k", "block_table", "k_cache",
                     "v_cache", "output_attentions", "position_bias", "head_mask"})  # fmt: skip
_KNOWN = _BOOKKEEPING | _SERVED


class TransformersArgumentError(AccelbridgeError, ValueError):
    """A transformers model passed an attention argument the facade cannot serve exactly."""


def _refuse(module: torch.nn.Module, argument: str, got: str, fix: str) -> TransformersArgumentError:
    model = type(module).__name__
    layer = getattr(module, "layer_idx", None)
    where = f"{model} (layer {layer})" if layer is not None else model
    return TransformersArgumentError(
        f"accelbridge.integrations.transformers: {where} passed {argument}={got}; the accelbridge attention "
        f"backend cannot serve it exactly. {fix}"
    )


# The facade's argument names as the model passes them, for errors.
_MODEL_NAMES = {"sinks": "s_aux", "window_size": "sliding_window", "softmax_scale": "scaling", "causal": "is_causal",
                "page_table": "block_table", "k": "key", "v": "value", "q": "query"}  # fmt: skip


def _facade(module: torch.nn.Module, function: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
    """A facade call; a refusal by every provider names the model's argument too."""
    try:
        return function(*args, **kwargs)
    except attention.UnsupportedFeatureError as refusal:
        argument = refusal.argument or "call"
        raise _refuse(module, _MODEL_NAMES.get(argument, argument), f"(the facade's {argument})",
                      f"No provider of this platform serves it:\n{refusal}") from refusal  # fmt: skip


def _window(module: torch.nn.Module, sliding_window: int | None, causal: bool) -> tuple[int, int]:
    """transformers' sliding_window (tokens seen, the query's own included) as FA's (left, right)."""
    if sliding_window is None:
        return (-1, -1)
    if not causal:
        raise _refuse(module, "sliding_window", f"{sliding_window} with is_causal=False",
                      "transformers' own eager mask (|i - j| <= w) and flash path (|i - j| < w) disagree on a "
                      "bidirectional window; use attn_implementation='eager' for this model.")  # fmt: skip
    return (int(sliding_window) - 1, 0)


def _check(module: torch.nn.Module, attention_mask: Any, dropout: float, kwargs: dict[str, Any]) -> None:
    if dropout:
        raise _refuse(module, "dropout", f"{dropout}", "The facade has no dropout: call model.eval(), or set "
                      "the config's attention_dropout to 0.0 for training.")  # fmt: skip
    if kwargs.get("output_attentions"):
        raise _refuse(module, "output_attentions", "True", "Flash-style kernels never form the attention "
                      "weights; load the model with attn_implementation='eager' to get them.")  # fmt: skip
    for name in ("position_bias", "head_mask"):
        if kwargs.get(name) is not None:
            raise _refuse(module, name, "a tensor", "Use attn_implementation='eager' or 'sdpa' for this model.")
    unknown = sorted(k for k, v in kwargs.items() if k not in _KNOWN and v is not None and v is not False)
    if unknown:
        value = kwargs[unknown[0]]
        got = f"a tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else repr(value)[:40]
        raise _refuse(module, unknown[0], got, "The backend does not know what this argument asks of attention, so "
                      "it cannot honour it; use attn_implementation='sdpa' or 'eager' for this model, or report it "
                      "to accelbridge.")  # fmt: skip
    if attention_mask is not None and (not isinstance(attention_mask, torch.Tensor) or attention_mask.dim() != 2):
        shape = tuple(attention_mask.shape) if hasattr(attention_mask, "shape") else type(attention_mask).__name__
        raise _refuse(module, "attention_mask", f"{shape}", "The backend takes a 2D padding mask (batch, keys) "
                      "as transformers' flash mask function builds it; a 4D or block mask is not a varlen "
                      "batch. Pass a 2D padding mask, or use attn_implementation='sdpa'.")  # fmt: skip


def _lengths(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Indices of the kept tokens, cumulative lengths and the longest length of a 2D padding mask."""
    lens = mask.sum(dim=-1, dtype=torch.int32)
    index = torch.nonzero(mask.flatten(), as_tuple=False).flatten()
    return index, F.pad(torch.cumsum(lens, 0, dtype=torch.int32), (1, 0)), int(lens.max())


@functools.lru_cache(maxsize=256)
def _uniform(batch: int, length: int, device: torch.device) -> torch.Tensor:
    """Cumulative lengths of `batch` sequences of `length` (read-only, shared by every layer and step)."""
    return torch.arange(0, (batch + 1) * length, length, dtype=torch.int32, device=device)


def _packed_starts(position_ids: torch.Tensor | None, batch: int, q_len: int, k_len: int) -> torch.Tensor | None:
    """Cumulative lengths of sequences packed in one row (position ids restarting), else None."""
    if position_ids is None or batch != 1 or q_len == 1 or q_len != k_len:
        return None
    pos = position_ids.reshape(-1)
    if pos.numel() != q_len:
        return None
    starts = torch.nonzero(pos == pos.min(), as_tuple=False).flatten()
    if starts.numel() <= 1:
        return None
    return torch.cat([starts.to(torch.int32), torch.tensor([q_len], dtype=torch.int32, device=pos.device)])


def attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    softcap: float | None = None,
    is_causal: bool | None = None,
    s_aux: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function contract: q/k/v (batch, heads, tokens, dim) -> (batch, tokens, heads, dv)."""
    _check(module, attention_mask, dropout, kwargs)
    causal = bool(is_causal if is_causal is not None else getattr(module, "is_causal", True))
    features = {
        "softmax_scale": scaling,
        "causal": causal,
        "window_size": _window(module, sliding_window, causal),
        "softcap": float(softcap) if softcap else 0.0,
        "sinks": s_aux,
        "ver": _VER,
    }
    batch, heads, q_len, _ = query.shape
    q, k, v = (x.transpose(1, 2) for x in (query, key, value))  # (batch, tokens, heads, dim)
    dv = v.shape[-1]

    block_table, k_cache, v_cache = kwargs.get("block_table"), kwargs.get("k_cache"), kwargs.get("v_cache")
    if block_table is not None and k_cache is not None and v_cache is not None:  # paged decode: one token a sequence
        cu_k = kwargs["cu_seq_lens_k"]
        n = q.shape[0] * q.shape[1]
        out = _facade(
            module, attention.flash_attn_with_kvcache,
            q.reshape(n, 1, heads, -1), k_cache, v_cache, k=k.reshape(n, 1, *k.shape[2:]),
            v=v.reshape(n, 1, *v.shape[2:]), cache_seqlens=(cu_k[1 : n + 1] - cu_k[:n] - 1).to(torch.int32),
            page_table=block_table, **features,
        )  # fmt: skip
        return out.reshape(batch, q_len, heads, out.shape[-1]), None

    cu_q, cu_k = kwargs.get("cu_seq_lens_q"), kwargs.get("cu_seq_lens_k")
    if cu_q is not None and cu_k is not None:  # packed rows (continuous batching, padding-free training)
        max_q, max_k = kwargs.get("max_length_q"), kwargs.get("max_length_k")
        max_q = int(max_q) if max_q is not None else int((cu_q[1:] - cu_q[:-1]).max())
        max_k = int(max_k) if max_k is not None else int((cu_k[1:] - cu_k[:-1]).max())
        out = _facade(
            module, attention.flash_attn_varlen_func,
            q.reshape(-1, heads, q.shape[-1]), k.reshape(-1, *k.shape[2:]), v.reshape(-1, *v.shape[2:]),
            cu_q.to(torch.int32), cu_k.to(torch.int32), max_q, max_k, **features,
        )  # fmt: skip
        return out.view(batch, -1, heads, dv), None

    if attention_mask is not None:  # left- or right-padded batch: unpad, one varlen call, pad back
        mask = attention_mask.to(device=q.device, dtype=torch.bool)
        k, v = k[:, : mask.shape[-1]], v[:, : mask.shape[-1]]
        index_k, cu_k, max_k = _lengths(mask)
        if q_len == mask.shape[-1]:
            index_q, cu_q, max_q = index_k, cu_k, max_k
        else:  # the queries are the last q_len positions, as transformers' flash path assumes
            index_q, cu_q, max_q = _lengths(mask[:, -q_len:])
        out = _facade(
            module, attention.flash_attn_varlen_func,
            q.reshape(-1, heads, q.shape[-1])[index_q], k.reshape(-1, *k.shape[2:])[index_k],
            v.reshape(-1, *v.shape[2:])[index_k], cu_q, cu_k, max_q, max_k, **features,
        )  # fmt: skip
        padded = out.new_zeros(batch * q_len, heads, dv)
        padded[index_q] = out
        return padded.view(batch, q_len, heads, dv), None

    k_len = k.shape[1]
    starts = _packed_starts(kwargs.get("position_ids"), batch, q_len, k_len)
    if starts is not None:  # sequences packed in one row, told by restarting position ids
        max_len = int((starts[1:] - starts[:-1]).max())
        out = _facade(
            module, attention.flash_attn_varlen_func, q[0], k[0], v[0], starts, starts, max_len, max_len, **features
        )  # fmt: skip
        return out.view(batch, q_len, heads, dv), None

    if q_len < k_len:  # queries over a cache of earlier keys (a decode step): the cache read in place, as
        # (batch, tokens, kv heads, dim) views; packing it into varlen rows would copy it whole every step
        return _facade(module, attention.flash_attn_with_kvcache, q, k, v, **features), None

    # every row one whole sequence: a varlen batch of equal lengths
    cu_q, cu_k = _uniform(batch, q_len, q.device), _uniform(batch, k_len, q.device)
    out = _facade(
            module, attention.flash_attn_varlen_func,
        q.reshape(-1, heads, q.shape[-1]), k.reshape(-1, *k.shape[2:]), v.reshape(-1, *v.shape[2:]),
        cu_q, cu_k, q_len, k_len, **features,
    )  # fmt: skip
    return out.view(batch, q_len, heads, dv), None


_VER = 3


def _mask(*args: Any, **kwargs: Any) -> torch.Tensor | None:
    """transformers' flash mask: None or the 2D padding mask (the backend derives the rest from lengths)."""
    return ALL_MASK_ATTENTION_FUNCTIONS["flash_attention_2"](*args, **kwargs)


def _accept_in_continuous_batching() -> None:
    """Let transformers' continuous batching run this backend as it runs flash attention, block tables included.

    transformers 5.x accepts only "sdpa", "paged|eager" and names containing "flash" for continuous
    batching (``ContinuousBatchingManager.switch_to_cb_friendly_attn``), and turns its block-table decode
    path on only for flash_attention_2/3 on CUDA (``initialization.ensure_decode_fast_path_is_available``).
    This backend takes exactly what the flash path gets there (packed rows with cumulative lengths, no
    mask, ``is_causal=True``; block table, paged caches and the new keys), on any device, so both checks
    are widened for our names only; every other implementation goes through transformers' own code.
    """
    from transformers.generation.continuous_batching import continuous_api, initialization

    manager = continuous_api.ContinuousBatchingManager
    original_switch = manager.switch_to_cb_friendly_attn
    if not getattr(original_switch, "_accelbridge", False):

        @functools.wraps(original_switch)
        def switch_to_cb_friendly_attn(self, model, auto_switch_to_flash: bool = True) -> None:  # noqa: ANN001
            if model.config._attn_implementation in NAMES:
                return None
            return original_switch(self, model, auto_switch_to_flash)

        switch_to_cb_friendly_attn._accelbridge = True  # type: ignore[attr-defined]
        manager.switch_to_cb_friendly_attn = switch_to_cb_friendly_attn

    original_fast_path = initialization.ensure_decode_fast_path_is_available
    if not getattr(original_fast_path, "_accelbridge", False):

        @functools.wraps(original_fast_path)
        def ensure_decode_fast_path_is_available(config, cb_config, user_requested: bool) -> None:  # noqa: ANN001
            if config._attn_implementation not in NAMES:
                return original_fast_path(config, cb_config, user_requested)
            types = initialization.group_layers_by_attn_type(config)
            if not all(initialization.ATTN_TYPE_TO_ALLOCATOR[t].supports_block_table for t in types):
                cb_config.max_blocks_per_request = 0  # transformers' sliding-window pages have no block table
            return None

        ensure_decode_fast_path_is_available._accelbridge = True  # type: ignore[attr-defined]
        initialization.ensure_decode_fast_path_is_available = ensure_decode_fast_path_is_available


def register(ver: int = 3) -> None:
    """Register the backend (done on import); ``ver`` picks the fa3.* (3) or fa4.* (4) ops."""
    global _VER
    if ver not in (3, 4):
        raise ValueError(f"accelbridge.integrations.transformers.register: ver is {ver!r}; expected 3 or 4")
    installed = Version(transformers.__version__)
    if installed < MIN_VERSION:
        raise ImportError(f"accelbridge.integrations.transformers needs transformers>={MIN_VERSION}, found "
                          f"{installed}: pip install 'accelbridge[transformers]'")  # fmt: skip
    _VER = ver
    for name in NAMES:
        AttentionInterface.register(name, attention_forward)
        AttentionMaskInterface.register(name, _mask)
    try:
        _accept_in_continuous_batching()
    except (ImportError, AttributeError) as error:  # a transformers whose continuous batching is laid out otherwise
        warnings.warn(f"accelbridge.integrations.transformers: continuous batching (generate_batch) cannot run this "
                      f"backend with transformers {installed}: {error!r}; model.generate and forward calls can "
                      f"(tested with transformers 5.24)", stacklevel=2)  # fmt: skip


def explain() -> str:
    """Which provider serves the backend's two ops on the active platform, and why."""
    return "\n".join(attention.explain(f"fa{_VER}.{op}") for op in ("varlen", "kvcache"))


register()
