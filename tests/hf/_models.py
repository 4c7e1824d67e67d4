"""Tiny random-initialised Hugging Face models (2 layers, width ``n``, vocab 64) and their data.

Built from config classes, nothing downloaded. ``Model(config)`` comes back in train mode
(GPT-2 and BERT then hold active ``Dropout``): call ``.eval()`` where a test needs determinism.
"""

from __future__ import annotations

import torch
import transformers as T

VOCAB = 64
SEQ = 8


def gpt2(n: int = 32, **kw) -> torch.nn.Module:
    return T.GPT2LMHeadModel(T.GPT2Config(n_layer=2, n_embd=n, n_head=2, vocab_size=VOCAB, n_positions=16,
                                            bos_token_id=0, eos_token_id=0, **kw))


def llama(n: int = 32, **kw) -> torch.nn.Module:
    cfg = T.LlamaConfig(hidden_size=n, intermediate_size=2 * n, num_hidden_layers=2, num_attention_heads=2,
                        num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=16, **kw)
    return T.LlamaForCausalLM(cfg)


def bert(n: int = 32, **kw) -> torch.nn.Module:
    cfg = T.BertConfig(hidden_size=n, intermediate_size=2 * n, num_hidden_layers=2, num_attention_heads=2,
                       vocab_size=VOCAB, max_position_embeddings=16, **kw)
    return T.BertForMaskedLM(cfg)


def vit(n: int = 32, **kw) -> torch.nn.Module:
    cfg = T.ViTConfig(hidden_size=n, intermediate_size=2 * n, num_hidden_layers=2, num_attention_heads=2,
                      image_size=16, patch_size=4, num_channels=3, num_labels=5, **kw)
    return T.ViTForImageClassification(cfg)


MAKERS = {"gpt2": gpt2, "llama": llama, "bert": bert, "vit": vit}
#: the attention projection each model's LoRA tests target
LORA_TARGET = {"gpt2": "c_attn", "llama": "q_proj", "bert": "query", "vit": "q_proj"}


def data(kind: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch ``(inputs, labels)``: ids ``(2, SEQ)`` twice for the LMs, images ``(2, 3, 16, 16)`` for ViT."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "vit":
        return torch.randn(2, 3, 16, 16, generator=gen), torch.randint(0, 5, (2,), generator=gen)
    ids = torch.randint(0, VOCAB, (2, SEQ), generator=gen)
    return ids, ids
