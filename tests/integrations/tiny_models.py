"""Tiny random-initialised transformers models (2 layers, hidden 64, vocab 128), built from configs: no download."""

from __future__ import annotations

import torch

VOCAB = 128
PAD = 0
COMMON = {"hidden_size": 64, "num_hidden_layers": 2, "vocab_size": VOCAB, "pad_token_id": PAD, "bos_token_id": 1,
          "eos_token_id": None, "initializer_range": 0.1}  # fmt: skip


# Per model: its config class, the arguments beyond COMMON, and the transformers implementation that computes
# what the model does (sdpa, or eager where sdpa lacks a feature the model uses: softcap, sinks).
_HEADS = {"num_attention_heads": 4, "num_key_value_heads": 2}  # GQA 2:1
SPECS = {
    "llama": ("LlamaConfig", {**_HEADS, "intermediate_size": 128}, "sdpa"),
    "qwen2": ("Qwen2Config", {**_HEADS, "intermediate_size": 128}, "sdpa"),
    "mistral": ("MistralConfig", {**_HEADS, "intermediate_size": 128, "sliding_window": 5}, "sdpa"),
    "gemma2": ("Gemma2Config", {**_HEADS, "intermediate_size": 128, "head_dim": 16, "sliding_window": 5,
                                "query_pre_attn_scalar": 16, "attn_logit_softcapping": 2.0,
                                "final_logit_softcapping": 30.0}, "eager"),
    "gpt_oss": ("GptOssConfig", {**_HEADS, "intermediate_size": 64, "head_dim": 16, "sliding_window": 5,
                                 "num_local_experts": 4, "num_experts_per_tok": 2}, "eager"),
    # MLA as transformers computes it: q/k head dim 32 + 16 = 48, v head dim 32 (DeepSeek V3: 128 + 64 / 128)
    "deepseek_v3": ("DeepseekV3Config", {"num_attention_heads": 4, "num_key_value_heads": 4, "intermediate_size": 128,
                                         "moe_intermediate_size": 32, "n_routed_experts": 4, "num_experts_per_tok": 2,
                                         "n_shared_experts": 1, "n_group": 1, "topk_group": 1,
                                         "first_k_dense_replace": 1, "q_lora_rank": 32, "kv_lora_rank": 32,
                                         "qk_nope_head_dim": 32, "qk_rope_head_dim": 16, "v_head_dim": 32}, "sdpa"),
}  # fmt: skip

MODELS = tuple(SPECS)


def build(name: str, dtype: torch.dtype = torch.float32, device: str = "cpu", seed: int = 0, **overrides):
    """The model `name` (config arguments `overrides` on top), seeded random weights, in eval mode.

    Returns (model, the transformers implementation to compare with).
    """
    import transformers as tf

    config_class, arguments, baseline = SPECS[name]
    config = getattr(tf, config_class)(**{**COMMON, **arguments, **overrides})
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(config, dtype=dtype).to(device).eval()
    if name == "gpt_oss":  # make the sinks matter, whatever the version initialises them to
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.sinks.normal_(0.0, 1.0)
    return model, baseline


def prompts(seed: int = 1, lengths: tuple[int, ...] = (3, 11, 7, 1)) -> list[list[int]]:
    """Prompts of different lengths (the longest beyond the sliding windows above)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(2, VOCAB, (n,), generator=g).tolist() for n in lengths]


def left_padded(batch: list[list[int]], device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids and attention_mask of a left-padded batch."""
    width = max(map(len, batch))
    ids = torch.full((len(batch), width), PAD, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, p in enumerate(batch):
        ids[row, width - len(p) :] = torch.tensor(p)
        mask[row, width - len(p) :] = 1
    return ids.to(device), mask.to(device)
