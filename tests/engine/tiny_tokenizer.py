"""A byte-level chat tokenizer for the tiny Llama, and a complete tiny checkpoint folder.

Tests that need text (chat templates, training on instruction pairs, serving) get the same
kind of folder as the real base model, in milliseconds: one token per UTF-8 byte plus
SmolLM2's three special tokens, with SmolLM2's ids and a ChatML template.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoConfig, GenerationConfig, PreTrainedTokenizerFast
from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

from tests.engine.conftest import VOCAB, build_base

BOS = PAD = "<|endoftext|>"
EOS = "<|im_end|>"
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # ids 0, 1, 2, as in SmolLM2
FIRST_BYTE_ID = len(SPECIAL_TOKENS)  # byte b has id FIRST_BYTE_ID + b
MAX_LENGTH = 128  # the tiny model's max_position_embeddings

# SmolLM2's ChatML, without its default system message.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def build_tiny_tokenizer(folder: Path) -> PreTrainedTokenizerFast:
    """Saves the byte-level chat tokenizer into ``folder`` and returns it."""
    byte_chars = bytes_to_unicode()  # byte -> the printable character byte-level BPE uses
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    vocab.update({byte_chars[b]: FIRST_BYTE_ID + b for b in range(256)})
    assert len(vocab) <= VOCAB, f"{len(vocab)} tokens do not fit the tiny model's {VOCAB}"
    backend = Tokenizer(models.BPE(vocab, merges=[]))  # no merges: one token per byte
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    specials = [AddedToken(token, normalized=False, special=True) for token in SPECIAL_TOKENS]
    backend.add_special_tokens(specials)  # keep their ids, never split them
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        chat_template=CHAT_TEMPLATE,
        model_max_length=MAX_LENGTH,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.save_pretrained(folder)
    return tokenizer


def build_tiny_checkpoint(folder: Path, seed: int = 0) -> Path:
    """A complete causal-LM folder: the tiny random Llama, its tokenizer and token ids."""
    build_base(folder, seed)
    tokenizer = build_tiny_tokenizer(folder)
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = AutoConfig.from_pretrained(folder)
    for name, value in ids.items():
        setattr(config, name, value)
    config.save_pretrained(folder)
    GenerationConfig(**ids).save_pretrained(folder)
    return folder
