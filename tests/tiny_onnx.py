"""Tiny test models built in seconds: a byte-level BPE tokenizer and a random Llama.

``write_tokenizer`` needs only ``tokenizers``; ``build_hf_llama`` adds torch and
transformers; ``build_onnx`` runs onnxruntime-genai's model builder on the result
(fp32, CPU). Everything is seeded, so a folder built twice holds the same model.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
"""Special tokens, ids 0, 1, 2 (as in SmolLM2): unk/eot, bos, eos."""
USER_TOKEN = "<tool>"
"""One added token that is not special (USER_DEFINED for llama.cpp)."""
BPE_SIZE = 500
"""Tokens the BPE trainer makes (specials included); the model's vocabulary is larger."""
MODEL_VOCAB = 512
"""The embedding's row count: ids BPE_SIZE + 1 .. 511 have no token (padding)."""
_CORPUS = (
    "A robot arm picks up a red cube and places it on the table. "
    "The quick brown fox jumps over the lazy dog while the sensors watch. "
    "Lidar, cameras and force sensors tell the robot where the cube is. "
)


def write_tokenizer(folder: Path) -> None:
    """tokenizer.json and tokenizer_config.json for the tiny vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_SIZE,
        special_tokens=list(SPECIAL),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS * 3 + str(i) for i in range(100)], trainer)
    tok.add_tokens([USER_TOKEN])
    tok.save(str(folder / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": SPECIAL[1],
        "eos_token": SPECIAL[2],
        "unk_token": SPECIAL[0],
        "model_max_length": 256,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=1))


def build_hf_llama(folder: Path, seed: int = 0) -> None:
    """A random 2-layer Llama with the tiny tokenizer, saved with save_pretrained."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    write_tokenizer(folder)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=MODEL_VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.2,  # logits spread over a few units, so argmaxes are not near ties
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).eval().save_pretrained(folder)


def build_onnx(hf_folder: Path, out: Path, cache: Path) -> None:
    """Convert with ``python -m onnxruntime_genai.models.builder -e cpu -p fp32``."""
    cmd = [
        sys.executable, "-m", "onnxruntime_genai.models.builder",
        "-i", str(hf_folder), "-o", str(out), "-p", "fp32", "-e", "cpu", "-c", str(cache),
    ]  # fmt: skip
    cache.mkdir(parents=True, exist_ok=True)  # also the working directory: `-m` puts it on
    # sys.path, and the builder's own `import builders` must not find tests/builders.py
    done = subprocess.run(cmd, cwd=cache, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(
            f"the model builder failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        )
