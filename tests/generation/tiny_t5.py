"""A tiny random T5 saved as a normal Hugging Face directory, built from a config (no download).

Its tokenizer is the byte-level BPE of ``tests.generation.conftest.build_tiny_tokenizer`` with the chat
template removed, because T5 ships none (rendering then uses ``hybrid.chat``'s plain format), and with
a post-processor that appends EOS to every encoded text, as T5's sentencepiece tokenizer appends
``</s>``: so the encoder input at training must match ``encode_rendered`` at inference token for token.
"""

from __future__ import annotations

from pathlib import Path


def build_t5_tokenizer():
    from tokenizers import processors

    from tests.generation.conftest import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    tok.chat_template = None
    tok._tokenizer.post_processor = processors.TemplateProcessing(
        single="$A <|im_end|>", pair="$A <|im_end|> $B <|im_end|>",
        special_tokens=[("<|im_end|>", tok.eos_token_id)])
    return tok


def build_tiny_t5(tokenizer, seed: int = 0):
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    cfg = T5Config(d_model=32, num_layers=2, num_heads=2, d_kv=16, d_ff=64, vocab_size=len(tokenizer),
                   pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                   decoder_start_token_id=tokenizer.pad_token_id,  # T5's convention: the pad token starts
                   dropout_rate=0.0)
    return T5ForConditionalGeneration(cfg).eval()


def save_tiny_t5(path: Path, seed: int = 0) -> Path:
    tok = build_t5_tokenizer()
    build_tiny_t5(tok, seed).save_pretrained(path)
    tok.save_pretrained(path)
    return path
