"""Stand-in for ``mate.mha_interface``: its scheduler-metadata signature (other names and order than CUDA FA3)."""

import torch


def get_scheduler_metadata(batch_size, num_heads_q, num_heads_kv, headdim, headdim_v, cache_seqlens, cu_seqlens_q,
                           cu_seqlens_k_new, max_seqlen_q, max_seqlen_k, page_size, causal, window_size,
                           num_splits):  # fmt: skip
    """A plan the stand-in kernels ignore (the reference schedules nothing): the values it was asked for."""
    return torch.tensor([batch_size, num_heads_q, num_heads_kv, headdim, num_splits, max_seqlen_k], dtype=torch.int32)
