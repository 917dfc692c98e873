"""The vocabulary as llama.cpp sees it: the GGUF converter's view of a Hugging Face
tokenizer, llama.cpp's rules by token text on small vocabularies, and fingerprints
checked against llama.cpp itself, on GGUFs crafted here and on the real models."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tiny_onnx

from picospec.cloud.hf_vocab import (
    ATTR_BYTE,
    ATTR_CONTROL,
    ATTR_NORMAL,
    ATTR_UNKNOWN,
    ATTR_UNUSED,
    ATTR_USER_DEFINED,
    LlamaVocab,
)
from picospec.codec.errors import ConfigError
from picospec.codec.vocab import fingerprint

V = tiny_onnx.MODEL_VOCAB
N, C, UD = ATTR_NORMAL, ATTR_CONTROL, ATTR_USER_DEFINED


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """The tiny BPE tokenizer's files (no model)."""
    pytest.importorskip("tokenizers")
    path = tmp_path_factory.mktemp("tokenizer")
    tiny_onnx.write_tokenizer(path)
    return path


def copy_of(folder: Path, to: Path) -> Path:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(folder / name, to / name)
    return to


def loaded(entries: list[tuple[str, int]], **ids: int) -> LlamaVocab:
    """from_entries over ("t<i>", NORMAL) filler ids 0..3 and then entries."""
    texts = [f"t{i}".encode() for i in range(4)] + [t.encode() for t, _ in entries]
    return LlamaVocab.from_entries(texts, [N] * 4 + [a for _, a in entries], ids)


# --- a Hugging Face tokenizer, as convert_hf_to_gguf.py writes it -------------------------


def test_folder_vocabulary_follows_the_gguf_converter(folder):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    user = tok.token_to_id(tiny_onnx.USER_TOKEN)
    entries = []
    for i in range(V):
        text = tok.id_to_token(i)
        if text is None:  # the embedding is padded past the tokenizer
            entries.append((f"[PAD{i}]".encode(), ATTR_UNUSED))
        elif text in tiny_onnx.SPECIAL:
            entries.append((text.encode(), ATTR_CONTROL))
        else:
            entries.append((text.encode(), ATTR_USER_DEFINED if i == user else ATTR_NORMAL))
    vocab = LlamaVocab.from_folder(folder, V)
    # bos/eos from tokenizer_config.json; eot by its text, the lowest of the candidates
    want = fingerprint(entries, {"bos": 1, "eos": 2, "eot": 0})
    assert vocab.fingerprint.difference(want) is None and vocab.fingerprint == want
    assert dict(vocab.specials) == {"bos": 1, "eos": 2, "eot": 0, "pad": -1}
    assert vocab.end_ids == {0, 2}


def test_a_transformers_tokenizer_reads_like_its_folder(folder):
    transformers = pytest.importorskip("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    from_tokenizer = LlamaVocab.from_tokenizer(tok, V, eos_ids=[7])
    assert from_tokenizer.fingerprint == LlamaVocab.from_folder(folder, V).fingerprint
    assert from_tokenizer.end_ids == {0, 2, 7}


def test_a_changed_token_is_located_by_the_fingerprint(folder, tmp_path):
    copy_of(folder, tmp_path)
    spec = json.loads((tmp_path / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    a, b = (next(t for t, i in vocab.items() if i == n) for n in (300, 301))
    vocab[a], vocab[b] = 301, 300  # two ids swap their tokens (the merges stay valid)
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    base = LlamaVocab.from_folder(folder, V).fingerprint
    changed = LlamaVocab.from_folder(tmp_path, V).fingerprint
    assert base.difference(changed) == "token entries first differ within ids 256..319"


def test_ids_the_tokenizer_config_lacks_come_from_config_json_then_defaults(folder, tmp_path):
    copy_of(folder, tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("{}")
    (tmp_path / "config.json").write_text(json.dumps({"text_config": {"eos_token_id": 2}}))
    vocab = LlamaVocab.from_folder(tmp_path, V, fallback_ids={"bos": 1, "pad": 5})
    assert dict(vocab.specials) == {"bos": 1, "eos": 2, "eot": 0, "pad": 5}
    bare = LlamaVocab.from_folder(tmp_path, V)
    assert bare.specials["bos"] == 11  # llama.cpp's GPT-2 BPE default
    assert bare.specials["eos"] == 2


def test_a_tokenizer_larger_than_the_model_is_refused(folder):
    with pytest.raises(ConfigError, match=r"has \d+ tokens but the model only 100"):
        LlamaVocab.from_folder(folder, 100)


def test_sentencepiece_style_tokenizers_have_byte_and_unknown_pieces(tmp_path):
    """A byte-fallback BPE is converted like a SentencePiece model: <0xNN> pieces
    are BYTE, the unknown piece UNKNOWN (when it is not an added token)."""
    pytest.importorskip("tokenizers")
    from tokenizers import AddedToken, Tokenizer, models

    pieces = {"<unk>": 0, "<s>": 1, "</s>": 2, "<0x41>": 3, "▁a": 4}
    for byte_fallback in (True, False):
        tok = Tokenizer(models.BPE(pieces, [], unk_token="<unk>", byte_fallback=byte_fallback))
        tok.add_special_tokens([AddedToken("<s>", special=True), AddedToken("</s>", special=True)])
        tok.save(str(tmp_path / "tokenizer.json"))
        vocab = LlamaVocab.from_folder(tmp_path, 6)
        if byte_fallback:
            assert vocab.attrs == (ATTR_UNKNOWN, C, C, ATTR_BYTE, N, ATTR_UNUSED)
            assert (vocab.specials["bos"], vocab.specials["eos"]) == (1, 2)  # llama.cpp's defaults
        else:
            assert vocab.attrs == (N, C, C, N, N, ATTR_UNUSED)


def test_missing_files_and_libraries_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"tokenizer\.json not found"):
        LlamaVocab.from_folder(tmp_path, V)
    with pytest.raises(ConfigError, match="model file not found"):
        LlamaVocab.from_gguf(tmp_path / "none.gguf")
    (tmp_path / "bad.gguf").write_bytes(b"not a gguf")
    code = (
        "import sys\n"
        "for name in ('tokenizers', 'gguf', 'transformers', 'torch'):\n"
        "    sys.modules[name] = None\n"
        "from picospec.cloud.hf_vocab import LlamaVocab\n"
        "from picospec.codec.errors import ConfigError\n"
        f"for read in (lambda: LlamaVocab.from_folder({str(tmp_path)!r}, 8),\n"
        f"             lambda: LlamaVocab.from_gguf({str(tmp_path / 'bad.gguf')!r})):\n"
        "    try:\n"
        "        read()\n"
        "    except ConfigError as e:\n"
        "        print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "pip install tokenizers" in out.stdout and "pip install gguf" in out.stdout


# --- llama.cpp's rules by token text --------------------------------------------------------


def test_text_rules_mark_control_unused_and_end_tokens():
    vocab = loaded(
        [
            ("<|im_end|>", N),  # 4: the EOT by its text, forced CONTROL
            ("<unused0>", C),  # 5: CONTROL with "unused" gains UNUSED
            ("<unused1>", N),  # 6: not CONTROL: unchanged
            ("<|fim_pad|>", N),  # 7: FIM pad: CONTROL, ends a generation
            ("<|fim_prefix|>", N),  # 8: FIM prefix: CONTROL only
            ("<|channel|>", C),  # 9: gpt-oss: rendered as text
            ("", N),  # 10: an empty text gets a name
        ],
        eos=1,
    )
    assert vocab.attrs[4:] == (N | C, C | ATTR_UNUSED, N, N | C, N | C, UD, N)
    assert vocab.texts[10] == b"[EMPTY_10]"
    assert dict(vocab.specials) == {"bos": -1, "eos": 1, "eot": 4, "pad": -1}
    assert vocab.end_ids == {1, 4, 7}


def test_ids_named_by_the_file_replace_detection_by_text():
    vocab = loaded([("<|im_end|>", N), ("<|fim_pad|>", N)], eot=2, fim_pad=3, eom=1)
    assert vocab.attrs[4:] == (N | C, N)  # the EOG text is CONTROL; the FIM text was not needed
    assert vocab.specials["eot"] == 2
    assert vocab.end_ids == {1, 2, 3, 4}


def test_gpt_oss_end_of_message_is_not_an_end():
    """With <|return|> and <|call|>, llama.cpp drops <|end|> from the end tokens
    and renders it, though it stays the EOT id."""
    vocab = loaded([("<|end|>", C), ("<|return|>", C), ("<|call|>", C)], eos=5)
    assert vocab.attrs[4:] == (UD, C, C)
    assert vocab.specials["eot"] == 4
    assert vocab.end_ids == {5, 6}
    kept = loaded([("<|end|>", C), ("<|return|>", C)])
    assert kept.end_ids == {4, 5}


def test_closing_strikethrough_is_text_where_tool_responses_exist():
    vocab = loaded([("</s>", C), ("<|tool_response>", C)], eos=4)
    assert vocab.attrs[4:] == (N, C)
    assert vocab.end_ids == {5}
    assert loaded([("</s>", N)]).end_ids == {4}  # elsewhere an end token, forced CONTROL


def test_with_specials_names_the_difference(folder):
    vocab = LlamaVocab.from_folder(folder, V)
    other = vocab.with_specials(eot=5)
    assert other.fingerprint.difference(vocab.fingerprint) == "eot token id 5 vs 0"
    assert other.end_ids == vocab.end_ids | {5}  # the new eot ends a generation
    with pytest.raises(ConfigError, match="unknown special"):
        vocab.with_specials(eom=3)
    with pytest.raises(ConfigError, match=f"outside the vocabulary of {V}"):
        vocab.with_specials(pad=V)


def test_numbered_vocabulary_is_a_placeholder():
    vocab = LlamaVocab.numbered(3, end_ids=[2])
    assert vocab.texts == (b"<0>", b"<1>", b"<2>") and vocab.end_ids == {2}
    assert vocab.fingerprint.specials == (-1, -1, -1, -1)


# --- against llama.cpp ------------------------------------------------------------------------


def _byte_level_texts() -> list[str]:
    """GPT-2's 256 byte-level characters."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    kept += range(ord("®"), ord("ÿ") + 1)
    moved = [b for b in range(256) if b not in kept]
    return [chr(b) for b in kept] + [chr(256 + i) for i in range(len(moved))]


def write_tiny_gguf(
    path: Path, tokens: list[str], types: list[int], model: str, **ids: int
) -> None:
    """A 1-layer Llama GGUF with random weights and the given vocabulary; ids:
    tokenizer.ggml.<key>_token_id entries."""
    import gguf

    n_embd, n_ff, n_vocab = 8, 16, len(tokens)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(64)
    w.add_embedding_length(n_embd)
    w.add_block_count(1)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(2)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(4)
    w.add_tokenizer_model(model)
    if model == "gpt2":
        w.add_tokenizer_pre("gpt-2")
        w.add_token_merges(["Ġ Ġ"])
    else:
        w.add_token_scores([0.0] * n_vocab)
    w.add_token_list(tokens)
    w.add_token_types(types)
    for key, value in ids.items():
        w.add_uint32(f"tokenizer.ggml.{key}_token_id", value)
    square = (n_embd, n_embd)
    shapes = {"token_embd": (n_vocab, n_embd), "output": (n_vocab, n_embd)}
    shapes |= {"output_norm": (n_embd,), "blk.0.attn_norm": (n_embd,), "blk.0.ffn_norm": (n_embd,)}
    shapes |= {f"blk.0.attn_{x}": square for x in ("q", "k", "v", "output")}
    shapes |= {"blk.0.ffn_gate": (n_ff, n_embd), "blk.0.ffn_up": (n_ff, n_embd)}
    shapes |= {"blk.0.ffn_down": (n_embd, n_ff)}
    rng = np.random.default_rng(0)
    for name, shape in shapes.items():
        w.add_tensor(f"{name}.weight", rng.standard_normal(shape).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# (tokenizer.ggml.model, the tokens after GPT-2's byte-level ones with their GGUF
# types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte, and
# tokenizer.ggml.<key>_token_id entries).
CRAFTED = {
    "text rules": (
        "gpt2",
        [
            ("<|im_end|>", 1),
            ("<unused0>", 3),
            ("<unused1>", 4),
            ("<|fim_pad|>", 1),
            ("<|fim_prefix|>", 1),
            ("▁<SUF>", 1),
            ("<|channel|>", 3),
            ("", 1),
            ("[e~[", 5),
        ],
        {},
    ),
    "named ids": (
        "gpt2",
        [("<|im_end|>", 1), ("<|fim_pad|>", 1), ("qqx", 1), ("<|eom_id|>", 4)],
        {"eot": 258, "fim_pad": 258, "prefix": 256, "bos": 99999},  # a bad id is ignored
    ),
    "gpt-oss": (
        "gpt2",
        [("<|end|>", 3), ("<|return|>", 3), ("<|call|>", 3), ("<|message|>", 3)],
        {"eos": 257},
    ),
    "gemma 4 style": ("gpt2", [("</s>", 3), ("<|tool_response>", 1), ("<turn|>", 1)], {}),
    "sentencepiece": (
        "llama",
        [("<unk>", 2), ("<s>", 3), ("</s>", 3), ("<0x0A>", 6), ("▁a", 1), ("<start_of_turn>", 3)],
        {},
    ),
}


@pytest.mark.parametrize("case", CRAFTED)
def test_crafted_vocabulary_matches_llama_cpp(case, tmp_path):
    """Each kind appears once (with several candidates llama.cpp takes the first
    in its hash map's order, which this module does not reproduce)."""
    pytest.importorskip("gguf")
    pytest.importorskip("llama_cpp")
    from picospec.runtime.llamacpp import LlamaWeights

    model, extra, ids = CRAFTED[case]
    base = _byte_level_texts() if model == "gpt2" else []
    tokens = base + [t for t, _ in extra]
    path = tmp_path / "tiny.gguf"
    write_tiny_gguf(path, tokens, [1] * len(base) + [ty for _, ty in extra], model, **ids)
    weights = LlamaWeights(path)
    ours = LlamaVocab.from_gguf(path)
    assert weights.vocab_fingerprint.difference(ours.fingerprint) is None
    assert sorted(ours.end_ids) == [i for i in range(weights.vocab_size) if weights.is_end(i)]


@pytest.fixture(scope="module", params=["smollm2", "gemma3"])
def real_gguf(request) -> Path:
    if request.param == "smollm2":
        return Path(request.getfixturevalue("smollm2")["target"])
    pytest.importorskip("llama_cpp")
    from picospec.runtime.models import ProvisioningError, prepare

    try:
        return prepare("gemma3", drafter=False, say=lambda _msg: None)["target"]
    except ProvisioningError as e:
        pytest.skip(str(e))


@pytest.mark.models
@pytest.mark.slow
def test_gguf_vocabulary_equals_llama_cpp(real_gguf):
    """SmolLM2 (byte-level BPE) and Gemma 3 (SentencePiece, 262k tokens, about 10 s)."""
    pytest.importorskip("gguf")
    from picospec.runtime.llamacpp import LlamaWeights

    weights = LlamaWeights(real_gguf)
    ours = LlamaVocab.from_gguf(real_gguf)
    assert weights.vocab_fingerprint.difference(ours.fingerprint) is None
    assert sorted(ours.end_ids) == [i for i in range(weights.vocab_size) if weights.is_end(i)]


@pytest.mark.models
@pytest.mark.slow
def test_smollm2_tokenizer_folder_matches_llama_cpp(smollm2, tmp_path):
    """tokenizer.json rebuilt by transformers from the GGUF, read here, against
    llama.cpp's own fingerprint of that GGUF (about 10 s). Not done for Gemma 3:
    transformers' rebuild drops the user-defined type of its 30 whitespace tokens."""
    pytest.importorskip("gguf")
    from transformers import AutoTokenizer

    from picospec.runtime.llamacpp import LlamaWeights

    gguf = Path(smollm2["target"])
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp_path)
    weights = LlamaWeights(gguf)
    ours = LlamaVocab.from_folder(tmp_path, weights.vocab_size)
    assert weights.vocab_fingerprint.difference(ours.fingerprint) is None
    assert sorted(ours.end_ids) == [i for i in range(weights.vocab_size) if weights.is_end(i)]
