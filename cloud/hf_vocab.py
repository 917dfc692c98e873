"""A vocabulary as llama.cpp sees it (from a GGUF file or a Hugging Face tokenizer), fingerprinted.

A drafter run by llama.cpp and a verifier run by another library must map ids
to the same tokens; the handshake compares fingerprints (picospec.codec.vocab)
of each id's text and llama.cpp attribute bits, plus the bos/eos/eot/pad ids.
``LlamaVocab`` is that view of a vocabulary, built from

* a GGUF file (``from_gguf``): the texts and token types stored in it;
* a Hugging Face tokenizer (``from_folder`` for a folder with tokenizer.json,
  ``from_tokenizer`` for a loaded transformers tokenizer): the texts and types
  that llama.cpp's ``convert_hf_to_gguf.py`` would write for it;

and then, for every source, what llama.cpp's loader does by token text
(src/llama-vocab.cpp), as the llama.cpp of llama-cpp-python 0.3.36 does it
(tests/test_hf_vocab.py loads crafted GGUFs with it): an empty text becomes
``[EMPTY_<id>]``; EOT, EOM and FIM tokens not named by the file are found by
their text and gain the CONTROL bit; CONTROL tokens whose text contains "unused"
gain UNUSED; end-of-generation (EOG) texts gain CONTROL; gpt-oss's
``<|channel|>``-style tokens become USER_DEFINED; the EOG set is those texts,
the FIM pad/repo/separator tokens, eos, eot and eom, less ``<|end|>`` (gpt-oss,
solar-open) and ``</s>`` (Gemma 4, PLaMo) where the tokens that make llama.cpp
drop them exist; a missing bos/eos is llama.cpp's default for the tokenizer
kind (11/11 for GPT-2 BPE, 1/2 for SentencePiece).

Where this can differ from llama.cpp:

* when several texts of one kind exist (SmolLM2 and Qwen have both
  ``<|endoftext|>`` and ``<|im_end|>`` as EOT candidates), llama.cpp takes the
  first in its hash map's order, which depends on the C++ standard library;
  this takes the lowest id, which is llama.cpp's choice on SmolLM2. A peer that
  chose otherwise differs in "eot token id" and ``with_specials`` aligns them;
* Hugging Face sources: the converter's path is guessed from the tokenizer (a
  byte-fallback BPE or a Unigram model is taken as SentencePiece: ``<0xNN>``
  pieces are BYTE and the unknown piece UNKNOWN; otherwise GPT-2 style BPE).
  A GGUF converted from a ``tokenizer.model`` file takes types from that file,
  which tokenizer.json may not reproduce, and the bos/eot ids the converter reads
  from a ``TemplateProcessing`` post-processor are not derived;
* llama.cpp's per-model attribute tweaks chosen by model name (LSTRIP/RSTRIP for
  phi-3 and jina models) are not applied, nor its bos/eos defaults for the
  other tokenizer kinds (WordPiece, T5 Unigram, PLaMo-2).

Importing this module needs nothing beyond picospec.codec; ``tokenizers``
(tokenizer.json) and ``gguf`` (GGUF files) are imported when a vocabulary is read.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from picospec.codec.errors import ConfigError
from picospec.codec.vocab import SPECIALS, VocabFingerprint, fingerprint

# llama_token_attr bits (llama.h) and the GGUF token types they come from.
ATTR_UNKNOWN = 1 << 0
ATTR_UNUSED = 1 << 1
ATTR_NORMAL = 1 << 2
ATTR_CONTROL = 1 << 3
ATTR_USER_DEFINED = 1 << 4
ATTR_BYTE = 1 << 5
_TYPE_ATTR = {0: 0, 1: ATTR_NORMAL, 2: ATTR_UNKNOWN, 3: ATTR_CONTROL}
_TYPE_ATTR |= {4: ATTR_USER_DEFINED, 5: ATTR_UNUSED, 6: ATTR_BYTE}


def _texts(*texts: str) -> tuple[bytes, ...]:
    return tuple(t.encode() for t in texts)


# Special tokens llama.cpp finds by text when the GGUF does not name them; each
# kind takes one id and gives it the CONTROL bit.
_FOUND_BY_TEXT = {
    "eot": _texts(
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
        "<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>",
        "<end_of_utterance>",
    ),
    "eom": _texts("<|eom_id|>"),
    "fim_pre": _texts(
        "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>",
        "<|code_prefix|>", "<|prefix|>",
    ),
    "fim_suf": _texts(
        "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>",
        "<|code_suffix|>", "<|suffix|>",
    ),
    "fim_mid": _texts(
        "<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>",
        "<|code_middle|>", "<|middle|>",
    ),
    "fim_pad": _texts("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"),
    "fim_rep": _texts("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
    "fim_sep": _texts("<|file_sep|>"),
}  # fmt: skip
# Every token with one of these texts ends a generation and gains the CONTROL bit.
_EOG_TEXTS = frozenset(_texts(
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>", "[e~[",
    "<｜end▁of▁sentence｜>",
))  # fmt: skip
_USER_DEFINED_TEXTS = _texts("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>")
# bos/eos llama.cpp assumes when a GGUF names none, by tokenizer.ggml.model (only
# the two kinds checked here; other kinds get -1).
_DEFAULT_IDS = {"llama": {"bos": 1, "eos": 2}, "gpt2": {"bos": 11, "eos": 11}}
# GGUF metadata keys of the ids the rules use, in llama.cpp's order (the deprecated
# prefix/suffix/middle keys come last and win).
_GGUF_ID_KEYS = (
    ("bos", "bos"), ("eos", "eos"), ("eot", "eot"), ("eom", "eom"), ("pad", "padding"),
    ("fim_pre", "fim_pre"), ("fim_suf", "fim_suf"), ("fim_mid", "fim_mid"),
    ("fim_pad", "fim_pad"), ("fim_rep", "fim_rep"), ("fim_sep", "fim_sep"),
    ("fim_pre", "prefix"), ("fim_suf", "suffix"), ("fim_mid", "middle"),
)  # fmt: skip
_HF_IDS = ("bos", "eos", "pad")
"""The special ids a Hugging Face source names (eot is found by text)."""
_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


@dataclass(frozen=True)
class LlamaVocab:
    """A vocabulary as llama.cpp describes it: each id's text and attribute bits,
    the special ids, and the ids that end a generation."""

    texts: tuple[bytes, ...]
    attrs: tuple[int, ...]
    """llama_token_attr bits of each id."""
    specials: Mapping[str, int]
    """bos, eos, eot, pad (-1 where the vocabulary has none)."""
    end_ids: frozenset[int]

    @property
    def size(self) -> int:
        return len(self.texts)

    @functools.cached_property
    def fingerprint(self) -> VocabFingerprint:
        """What the handshake compares (computed once)."""
        return fingerprint(zip(self.texts, self.attrs, strict=True), dict(self.specials))

    def with_specials(self, **ids: int) -> LlamaVocab:
        """The same vocabulary with some special ids set by hand (e.g. the EOT id a
        llama.cpp peer chose among several candidates); a new eos or eot also ends
        a generation, as in llama.cpp."""
        unknown = set(ids) - set(SPECIALS)
        if unknown:
            raise ConfigError(
                f"unknown special token name(s): {', '.join(sorted(unknown))}; "
                f"expected {', '.join(SPECIALS)}"
            )
        for name, value in ids.items():
            if not -1 <= int(value) < self.size:
                raise ConfigError(f"{name} id {value} is outside the vocabulary of {self.size}")
        ends = {int(ids[k]) for k in ("eos", "eot") if int(ids.get(k, -1)) >= 0}
        specials = {**self.specials, **{k: int(v) for k, v in ids.items()}}
        return dataclasses.replace(self, specials=specials, end_ids=self.end_ids | ends)

    @classmethod
    def from_entries(
        cls, texts: Iterable[bytes], attrs: Iterable[int], ids: Mapping[str, int]
    ) -> LlamaVocab:
        """The vocabulary llama.cpp loads from a GGUF holding these token texts,
        attribute bits (from the token types) and metadata ids: bos, eos, eot,
        eom, pad and fim_pre/suf/mid/pad/rep/sep (missing ones are found by text
        where llama.cpp does so). See the module docstring for the rules."""
        return _loaded(list(texts), list(attrs), dict(ids))

    @classmethod
    def from_gguf(cls, path: str | Path) -> LlamaVocab:
        """The vocabulary stored in a GGUF file, read as llama.cpp reads it."""
        path = Path(path)
        fields = _gguf_reader(path).fields
        if "tokenizer.ggml.tokens" not in fields:
            raise ConfigError(f"{path} has no tokenizer.ggml.tokens: not a language model GGUF?")
        tokens = fields["tokenizer.ggml.tokens"]
        texts = [bytes(tokens.parts[i]) for i in tokens.data]
        if "tokenizer.ggml.token_type" in fields:
            types = fields["tokenizer.ggml.token_type"]
            attrs = [_TYPE_ATTR.get(int(types.parts[i][0]), 0) for i in types.data]
        else:
            attrs = [ATTR_NORMAL] * len(texts)
        model = fields.get("tokenizer.ggml.model")
        kind = bytes(model.parts[model.data[0]]).decode() if model is not None else ""
        ids = {k: v for k, v in _DEFAULT_IDS.get(kind, {}).items() if v < len(texts)}
        for name, key in _GGUF_ID_KEYS:
            field = fields.get(f"tokenizer.ggml.{key}_token_id")
            value = int(field.parts[field.data[0]][0]) if field is not None else -1
            if 0 <= value < len(texts):  # llama.cpp ignores an id outside the vocabulary
                ids[name] = value
        return _loaded(texts, attrs, ids)

    @classmethod
    def from_folder(
        cls,
        folder: str | Path,
        vocab_size: int,
        *,
        fallback_ids: Mapping[str, Any] | None = None,
        eos_ids: Iterable[int] = (),
    ) -> LlamaVocab:
        """The vocabulary of folder/tokenizer.json over vocab_size model ids, as
        llama.cpp would load it after ``convert_hf_to_gguf.py``.

        bos/eos/pad: tokenizer_config.json's ``*_token`` looked up among the added
        tokens, else config.json's ``*_token_id`` (as gguf-py's SpecialVocab does),
        else fallback_ids' ints, else llama.cpp's defaults. eos_ids: further ids
        that end a generation (a generation config's eos list)."""
        folder = Path(folder)
        tok = _load_tokenizer(folder / "tokenizer.json")
        tok_config = _read_optional(folder / "tokenizer_config.json")
        config = _read_optional(folder / "config.json")
        added_items = sorted(tok.get_added_tokens_decoder().items(), reverse=True)
        added = {t.content: i for i, t in added_items}  # the first of equal contents wins
        for name, alias in (("bos", "cls"), ("eos", "sep")):
            if not tok_config.get(f"{name}_token") and tok_config.get(f"{alias}_token"):
                tok_config[f"{name}_token"] = tok_config[f"{alias}_token"]
        named = {}
        for name in _HF_IDS:
            entry = tok_config.get(f"{name}_token")
            content = entry.get("content") if isinstance(entry, dict) else entry
            found = added.get(content) if isinstance(content, str) else None
            if found is None:
                value = config.get(f"{name}_token_id")
                text_config = config.get("text_config")
                if value is None and isinstance(text_config, dict):  # multimodal models
                    value = text_config.get(f"{name}_token_id")
                found = _int(value)
            named[name] = found
        return _from_tokenizers(tok, vocab_size, named, fallback_ids or {}, eos_ids)

    @classmethod
    def from_tokenizer(
        cls,
        tokenizer: Any,
        vocab_size: int,
        *,
        fallback_ids: Mapping[str, Any] | None = None,
        eos_ids: Iterable[int] = (),
    ) -> LlamaVocab:
        """The vocabulary of a loaded transformers tokenizer (one backed by
        ``tokenizers``), as ``from_folder`` reads it; bos/eos/pad are the
        tokenizer's own, else fallback_ids' (a model config's), else llama.cpp's
        defaults."""
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise ConfigError(
                f"{type(tokenizer).__name__} is not backed by the tokenizers package; "
                "load the model's tokenizer.json (a fast tokenizer) instead"
            )
        named = {name: _int(getattr(tokenizer, f"{name}_token_id", None)) for name in _HF_IDS}
        return _from_tokenizers(backend, vocab_size, named, fallback_ids or {}, eos_ids)

    @classmethod
    def numbered(cls, size: int, *, end_ids: Iterable[int] = ()) -> LlamaVocab:
        """A placeholder vocabulary for models with no tokenizer (random weights):
        id i is the text "<i>"."""
        if size < 1:
            raise ConfigError(f"a vocabulary needs at least one token, got {size}")
        texts = tuple(f"<{i}>".encode() for i in range(size))
        specials = dict.fromkeys(SPECIALS, -1)
        return cls(texts, (ATTR_NORMAL,) * size, specials, frozenset(int(t) for t in end_ids))


def _loaded(texts: list[bytes], attrs: list[int], ids: dict[str, int]) -> LlamaVocab:
    """Apply llama.cpp's load-time rules by token text (llama-vocab.cpp)."""
    texts = [t or f"[EMPTY_{i}]".encode() for i, t in enumerate(texts)]
    n = len(texts)
    if n == 0:
        raise ConfigError("the vocabulary has no tokens")
    if len(attrs) != n:
        raise ConfigError(f"{n} token texts but {len(attrs)} attributes")
    index = {t: i for i, t in enumerate(texts)}  # a later duplicate wins, as in llama.cpp
    ids = {name: int(i) for name, i in ids.items() if 0 <= int(i) < n}
    for name, candidates in _FOUND_BY_TEXT.items():
        found = [index[t] for t in candidates if t in index]
        if name not in ids and found:
            ids[name] = min(found)  # llama.cpp: the first in hash-map order
            attrs[ids[name]] |= ATTR_CONTROL
    for t, i in index.items():
        if attrs[i] & ATTR_CONTROL and b"unused" in t:
            attrs[i] |= ATTR_UNUSED
    ends = {ids[k] for k in ("fim_pad", "fim_rep", "fim_sep") if k in ids}
    for t in _EOG_TEXTS & index.keys():
        ends.add(index[t])
        attrs[index[t]] |= ATTR_CONTROL
    for t in _USER_DEFINED_TEXTS:  # gpt-oss: rendered as text
        if t in index:
            attrs[index[t]] = ATTR_USER_DEFINED
    ends |= {ids[k] for k in ("eos", "eot", "eom") if k in ids}
    end_texts = {texts[i] for i in ends}

    def demote(text: bytes, attr: int) -> None:
        if text in index:
            ends.discard(index[text])
            attrs[index[text]] = attr

    if {b"<|return|>", b"<|call|>"} <= end_texts or {b"<|calls|>", b"<|flush|>"} <= end_texts:
        demote(b"<|end|>", ATTR_USER_DEFINED)  # gpt-oss, solar-open: an end of message only
    if end_texts & {b"<|tool_response>", b"<|plamo:eos|>"}:
        demote(b"</s>", ATTR_NORMAL)  # Gemma 4, PLaMo: plain text (a strikethrough tag)
    specials = {name: ids.get(name, -1) for name in SPECIALS}
    return LlamaVocab(tuple(texts), tuple(attrs), specials, frozenset(ends))


def _from_tokenizers(
    tok: Any,
    vocab_size: int,
    named: Mapping[str, int | None],
    fallback: Mapping[str, Any],
    eos_ids: Iterable[int],
) -> LlamaVocab:
    """A ``tokenizers.Tokenizer`` converted as convert_hf_to_gguf.py would, then loaded."""
    n = tok.get_vocab_size(with_added_tokens=True)
    if n > vocab_size:
        raise ConfigError(f"the tokenizer has {n} tokens but the model only {vocab_size}")
    spm, unk = _sentencepiece_like(tok)
    added = tok.get_added_tokens_decoder()
    texts, attrs = [], []
    for i in range(vocab_size):
        text, attr = _converted(tok, i, added.get(i), spm, unk)
        texts.append(text.encode())
        attrs.append(attr)
    defaults = _DEFAULT_IDS["llama" if spm else "gpt2"]
    ids = {}
    for name in _HF_IDS:
        value = named.get(name)
        if value is None:
            value = _int(fallback.get(name))
        if value is None:
            value = defaults.get(name)
        if value is not None and 0 <= value < vocab_size:
            ids[name] = value
    vocab = _loaded(texts, attrs, ids)
    extra = {int(t) for t in eos_ids if 0 <= int(t) < vocab_size}
    return dataclasses.replace(vocab, end_ids=vocab.end_ids | extra)


def _converted(tok: Any, i: int, added: Any, spm: bool, unk: int | None) -> tuple[str, int]:
    """(text, attribute bits) of id i as convert_hf_to_gguf.py writes it."""
    text = tok.id_to_token(i)
    if text is None:
        return f"[PAD{i}]", ATTR_UNUSED
    if added is not None:
        if not spm and not added.normalized:  # the BPE path re-normalises these
            ids = tok.encode(text, add_special_tokens=False).ids
            text = tok.decode(ids, skip_special_tokens=False)
        if added.special or _looks_special(text):
            return text, ATTR_CONTROL
        return text.replace("▁", " "), ATTR_USER_DEFINED
    if spm and _BYTE_TOKEN.fullmatch(text):
        return text, ATTR_BYTE
    if spm and i == unk:
        return text, ATTR_UNKNOWN
    return text, ATTR_NORMAL


def _sentencepiece_like(tok: Any) -> tuple[bool, int | None]:
    """Whether the converter would take the SentencePiece path, and the unknown id."""
    model = tok.model
    if type(model).__name__ == "Unigram":
        return True, _int(json.loads(tok.to_str()).get("model", {}).get("unk_id"))
    unk = getattr(model, "unk_token", None)
    unk_id = tok.token_to_id(unk) if isinstance(unk, str) else None
    return bool(getattr(model, "byte_fallback", False)), unk_id


def _looks_special(text: str) -> bool:
    """convert_hf_to_gguf.py's does_token_look_special."""
    return (
        text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
        or (text.startswith("<|") and text.endswith("|>"))
        or (text.startswith("<｜") and text.endswith("｜>"))
        or (text.startswith("<unused") and text.endswith(">"))
    )


def _load_tokenizer(path: Path) -> Any:
    try:
        from tokenizers import Tokenizer
    except ImportError as e:
        raise ConfigError(
            "reading tokenizer.json needs the tokenizers package; install it with "
            "`pip install tokenizers` (part of the ort and torch extras)"
        ) from e
    if not path.is_file():
        raise ConfigError(f"{path.name} not found in {path.parent}")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on bad files
        raise ConfigError(f"{path} is not a tokenizer that tokenizers can read: {e}") from None


def _gguf_reader(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"model file not found: {path}")
    try:
        import gguf
    except ImportError as e:
        raise ConfigError(
            "reading a GGUF needs the gguf package; install it with `pip install gguf` "
            "(part of the torch extra)"
        ) from e
    try:
        return gguf.GGUFReader(str(path))
    except (ValueError, OSError) as e:
        raise ConfigError(f"{path} is not a readable GGUF file: {e}") from None


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a model folder's file, or a ConfigError naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path.name} not found in {path.parent}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} does not hold a JSON object")
    return data


def _read_optional(path: Path) -> dict[str, Any]:
    return read_json(path) if path.is_file() else {}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
