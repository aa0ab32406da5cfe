"""The op ids and the canonical argument names of each (the engine's unified signatures).

The attention facade defines the functions; this table is what catalogs may refer to
(``adapt.rename`` keys), and a test keeps the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass

VARLEN_ARGS = (
    "q", "k", "v", "cu_seqlens_q", "cu_seqlens_k", "max_seqlen_q", "max_seqlen_k", "seqused_q",
    "seqused_k", "page_table", "softmax_scale", "causal", "qv", "q_descale", "k_descale", "v_descale",
    "window_size", "attention_chunk", "softcap", "num_splits", "pack_gqa", "only_qv", "sm_margin",
    "return_softmax_lse", "sinks", "score_mod", "aux_tensors", "out",
)  # fmt: skip
KVCACHE_ARGS = (
    "q", "k_cache", "v_cache", "k", "v", "qv", "rotary_cos", "rotary_sin", "cache_seqlens",
    "cache_batch_idx", "cache_leftpad", "page_table", "cu_seqlens_q", "cu_seqlens_k_new", "max_seqlen_q",
    "rotary_seqlens", "q_descale", "k_descale", "v_descale", "softmax_scale", "causal", "window_size",
    "attention_chunk", "softcap", "rotary_interleaved", "scheduler_metadata", "num_splits", "pack_gqa",
    "only_qv", "sm_margin", "return_softmax_lse", "sinks", "score_mod", "aux_tensors", "out",
)  # fmt: skip
SCHEDULER_METADATA_ARGS = (
    "batch_size", "max_seqlen_q", "max_seqlen_k", "num_heads", "num_heads_k", "headdim", "cache_seqlens",
    "qkv_dtype", "headdim_v", "cu_seqlens_q", "cu_seqlens_k", "cu_seqlens_k_new", "seqused_q", "leftpad_k",
    "page_size", "max_seqlen_k_new", "causal", "window_size", "attention_chunk", "has_softcap", "num_splits",
    "pack_gqa", "sm_margin",
)  # fmt: skip
MLA_METADATA_ARGS = (
    "cache_seqlens", "num_q_tokens_per_head_k", "num_heads_k", "num_heads_q", "is_fp8_kvcache", "topk",
)  # fmt: skip
MLA_KVCACHE_ARGS = (
    "q", "k_cache", "block_table", "cache_seqlens", "head_dim_v", "tile_scheduler_metadata", "num_splits",
    "softmax_scale", "causal", "descale_q", "descale_k", "is_fp8_kvcache", "indices", "attn_sink",
    "extra_k_cache", "extra_indices_in_kvcache", "topk_length", "extra_topk_length",
)  # fmt: skip


@dataclass(frozen=True)
class OpInfo:
    op: str
    family: str  # fa3 | fa4 | flashmla
    facade: str  # the accelbridge.attention function serving it
    args: tuple[str, ...]


OPS: dict[str, OpInfo] = {
    "fa3.varlen": OpInfo("fa3.varlen", "fa3", "flash_attn_varlen_func", VARLEN_ARGS),
    "fa3.kvcache": OpInfo("fa3.kvcache", "fa3", "flash_attn_with_kvcache", KVCACHE_ARGS),
    "fa3.scheduler_metadata": OpInfo(
        "fa3.scheduler_metadata", "fa3", "get_scheduler_metadata", SCHEDULER_METADATA_ARGS
    ),
    "fa4.varlen": OpInfo("fa4.varlen", "fa4", "flash_attn_varlen_func", VARLEN_ARGS),
    "fa4.kvcache": OpInfo("fa4.kvcache", "fa4", "flash_attn_with_kvcache", KVCACHE_ARGS),
    "flashmla.metadata": OpInfo("flashmla.metadata", "flashmla", "get_mla_metadata", MLA_METADATA_ARGS),
    "flashmla.kvcache": OpInfo("flashmla.kvcache", "flashmla", "flash_mla_with_kvcache", MLA_KVCACHE_ARGS),
}
OP_IDS: tuple[str, ...] = tuple(OPS)
OP_FAMILIES: tuple[str, ...] = ("fa3", "fa4", "flashmla")
