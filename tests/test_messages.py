"""Wire messages: every message round-trips, and bad payloads raise ProtocolError."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from builders import fingerprint_of
from hypothesis import given, settings
from hypothesis import strategies as st

from picospec.codec import ops
from picospec.codec.errors import ProtocolError
from picospec.codec.messages import (
    MAX_BLOCK,
    MAX_K,
    MESSAGE_TYPES,
    Bye,
    Cancel,
    DraftBlock,
    Error,
    ErrorCode,
    Hello,
    Message,
    Progress,
    Start,
    Verdict,
    Welcome,
)
from picospec.codec.sampling import SamplingParams
from picospec.codec.scheme import Mode, Scheme
from picospec.codec.sparse import Q_ONE, SparseDist

VOCAB = 1000
HEAD = {"session": 7, "epoch": 2, "start": 40}

# --- builders -------------------------------------------------------------------


def q_dist(ids: list[int], counts: list[int] | None = None) -> SparseDist:
    """A quantised q over ids (counts default: as even as 65536 allows)."""
    if counts is None:
        counts = [Q_ONE // len(ids)] * len(ids)
        counts[0] += Q_ONE - sum(counts)
    return SparseDist.from_counts(np.array(ids), np.array(counts))


def hello(**kw: object) -> Hello:
    fields = dict(
        HEAD,
        vocab_fingerprint=fingerprint_of(VOCAB),
        auth_token=b"secret",
        client_name="robot-arm",
    )
    return Hello(**(fields | kw))  # type: ignore[arg-type]


def start(prompt: tuple[int, ...] = (1, 2, 999), **kw: object) -> Start:
    """A Start of prompt (its header's start is the prompt's length, as it must be)."""
    fields = dict(
        session=7,
        epoch=0,
        start=len(prompt),
        seed=2**64 - 1,
        max_new_tokens=256,
        mode=Mode.PIPELINE,
        scheme=Scheme.SPARSE_Q,
        params=SamplingParams(temperature=0.7, top_k=40, top_p=0.9, min_p=0.05),
        k=8,
        prompt=prompt,
    )
    return Start(**(fields | kw))  # type: ignore[arg-type]


def examples() -> list[Message]:
    """One valid message of each type (and each DraftBlock scheme), over VOCAB."""
    return [
        hello(),
        Welcome(
            **HEAD,
            server_name="cloud-1",
            max_block=16,
            max_depth=4,
            max_k=64,
            max_prompt_tokens=2047,
            max_new_tokens=1024,
            context_size=2048,
            max_generations=4,
        ),
        start(),
        start(mode=Mode.CLOUD_ONLY, scheme=Scheme.SPLIT, allow_inexact=True, k=256),
        DraftBlock(
            **HEAD,
            scheme=Scheme.SPARSE_Q,
            bonus=False,
            tokens=(5, 6),
            q=(q_dist([5, 9]), q_dist([6])),
        ),
        DraftBlock(**HEAD, scheme=Scheme.SPLIT, bonus=True, tokens=(5, 6), q_counts=(1, Q_ONE)),
        DraftBlock(**HEAD, scheme=Scheme.GUMBEL, bonus=False, tokens=(0,)),
        DraftBlock(**HEAD, scheme=Scheme.GREEDY, bonus=True, tokens=tuple(range(MAX_BLOCK))),
        Verdict(**HEAD, accepted=3, token=17, target_forwards=1),
        Verdict(
            **HEAD,
            accepted=0,
            token=None,
            target_forwards=2,
            p=SparseDist(np.array([3, 1]), np.array([0.5, 0.25])),
            p_exact=False,
        ),
        Cancel(**HEAD, reason="deadline"),
        Error(**HEAD, code=ErrorCode.VOCAB_MISMATCH, message="vocabulary size 1000 vs 1001"),
        Bye(**HEAD, reason="done"),
        Progress(**HEAD),
    ]


def decode(msg_type: type[Message], payload: bytes, vocab: int | None = VOCAB) -> Message:
    return msg_type.from_payload(payload, **HEAD, vocab=vocab)


# --- strategies -------------------------------------------------------------------

u32 = st.integers(0, 2**32 - 1)
vocabs = st.one_of(st.integers(1, 300), st.sampled_from([32000, 128256, 262144, 2**31]))
texts = st.text(max_size=16)


@st.composite
def headers(draw: st.DrawFn) -> dict[str, int]:
    return {"session": draw(u32), "epoch": draw(u32), "start": draw(u32)}


@st.composite
def ids(draw: st.DrawFn, vocab: int, min_size: int, max_size: int) -> list[int]:
    n = draw(st.integers(min_size, min(max_size, vocab)))
    return draw(st.lists(st.integers(0, vocab - 1), min_size=n, max_size=n, unique=True))


@st.composite
def quantised(draw: st.DrawFn, vocab: int) -> SparseDist:
    support = draw(ids(vocab, 1, 12))
    cuts = draw(
        st.lists(
            st.integers(1, Q_ONE - 1),
            min_size=len(support) - 1,
            max_size=len(support) - 1,
            unique=True,
        )
    )
    edges = [0, *sorted(cuts), Q_ONE]
    return q_dist(support, np.diff(edges).tolist())


@st.composite
def float_dists(draw: st.DrawFn, vocab: int) -> SparseDist:
    support = draw(ids(vocab, 1, 12))
    prob = st.floats(min_value=0.0, max_value=1.0 / len(support), exclude_min=True)
    probs = draw(st.lists(prob, min_size=len(support), max_size=len(support)))
    return SparseDist(np.array(support), np.array(probs))


params = st.builds(
    SamplingParams,
    temperature=st.floats(0.0, 100.0),
    top_k=st.integers(0, 2**31 - 1),
    top_p=st.floats(0.0, 1.0, exclude_min=True),
    min_p=st.floats(0.0, 1.0),
)


@st.composite
def draft_blocks(draw: st.DrawFn, head: dict[str, int], vocab: int) -> DraftBlock:
    scheme = draw(st.sampled_from(Scheme))
    n = draw(st.integers(1, 8))
    extra: dict[str, object] = {}
    if scheme is Scheme.SPARSE_Q:
        q = draw(st.lists(quantised(vocab), min_size=n, max_size=n))
        tokens = [int(draw(st.sampled_from(d.ids.tolist()))) for d in q]
        extra["q"] = q
    else:
        tokens = draw(st.lists(st.integers(0, vocab - 1), min_size=n, max_size=n))
    if scheme is Scheme.SPLIT:
        extra["q_counts"] = draw(st.lists(st.integers(1, Q_ONE), min_size=n, max_size=n))
    return DraftBlock(**head, scheme=scheme, bonus=draw(st.booleans()), tokens=tokens, **extra)


@st.composite
def verdicts(draw: st.DrawFn, head: dict[str, int], vocab: int) -> Verdict:
    p = draw(st.none() | float_dists(vocab))
    token = None if p is not None else draw(st.none() | st.integers(0, vocab - 1))
    return Verdict(
        **head,
        accepted=draw(st.integers(0, MAX_BLOCK)),
        token=token,
        target_forwards=draw(u32),
        p=p,
        p_exact=True if p is None else draw(st.booleans()),
    )


@st.composite
def messages(draw: st.DrawFn) -> tuple[Message, int]:
    """Any message with any valid fields, and the vocabulary it is valid for."""
    vocab, head = draw(vocabs), draw(headers())
    options = [
        st.builds(
            Hello,
            **{k: st.just(v) for k, v in head.items()},
            vocab_fingerprint=st.integers(1, 3000).map(fingerprint_of),
            auth_token=st.binary(max_size=256),
            client_name=texts,
        ),
        st.builds(
            Welcome,
            **{k: st.just(v) for k, v in head.items()},
            server_name=texts,
            max_block=st.integers(1, MAX_BLOCK),
            max_depth=st.integers(1, 2**16 - 1),
            max_k=st.integers(1, MAX_K),
            max_prompt_tokens=u32,
            max_new_tokens=u32,
            context_size=u32,
            max_generations=st.integers(1, 2**16 - 1),
        ),
        st.lists(st.integers(0, vocab - 1), min_size=1, max_size=50).flatmap(
            lambda prompt: st.builds(
                Start,
                session=st.just(head["session"]),
                epoch=st.just(head["epoch"]),
                start=st.just(len(prompt)),
                seed=st.integers(0, 2**64 - 1),
                max_new_tokens=u32,
                mode=st.sampled_from(Mode),
                scheme=st.sampled_from(Scheme),
                params=params,
                k=st.integers(1, MAX_K),
                allow_inexact=st.booleans(),
                prompt=st.just(prompt),
            )
        ),
        draft_blocks(head, vocab),
        verdicts(head, vocab),
        st.builds(Cancel, **{k: st.just(v) for k, v in head.items()}, reason=texts),
        st.builds(
            Error,
            **{k: st.just(v) for k, v in head.items()},
            code=st.sampled_from(ErrorCode),
            message=texts,
        ),
        st.builds(Bye, **{k: st.just(v) for k, v in head.items()}, reason=texts),
        st.just(Progress(**head)),
    ]
    return draw(st.one_of(options)), vocab


# --- round trips -------------------------------------------------------------------


@given(messages())
@settings(max_examples=400)
def test_every_message_round_trips(case: tuple[Message, int]) -> None:
    msg, vocab = case
    header = {"session": msg.session, "epoch": msg.epoch, "start": msg.start}
    back = type(msg).from_payload(msg.payload(vocab), **header, vocab=vocab)
    assert back == msg


@pytest.mark.parametrize("msg", examples(), ids=lambda m: type(m).__name__)
def test_example_round_trips(msg: Message) -> None:
    header = {"session": msg.session, "epoch": msg.epoch, "start": msg.start}
    assert type(msg).from_payload(msg.payload(VOCAB), **header, vocab=VOCAB) == msg


def test_type_codes_are_distinct_single_bytes() -> None:
    assert sorted(MESSAGE_TYPES) == list(range(1, 10))


def test_hello_payload_layout() -> None:
    msg = hello(auth_token=b"ab", client_name="é")
    fp = fingerprint_of(VOCAB).to_bytes()
    expect = (
        struct.pack("<H", len(fp))
        + fp
        + struct.pack("<H", 2)
        + b"ab"
        + struct.pack("<H", 2)
        + "é".encode()
    )
    assert msg.payload() == expect


def test_split_counts_travel_as_count_minus_one() -> None:
    msg = DraftBlock(**HEAD, scheme=Scheme.SPLIT, bonus=False, tokens=(5, 6), q_counts=(1, Q_ONE))
    assert msg.payload(VOCAB).endswith(struct.pack("<HH", 0, Q_ONE - 1))


def test_verdict_without_token_sends_minus_one() -> None:
    msg = Verdict(**HEAD, accepted=4, token=None, target_forwards=1)
    assert msg.payload()[2:6] == struct.pack("<i", -1)


def test_start_payload_layout() -> None:
    msg = start(prompt=(3, 4), seed=9, max_new_tokens=5, allow_inexact=True)
    expect = (
        struct.pack("<QI", 9, 5)
        + bytes([Mode.PIPELINE.code, Scheme.SPARSE_Q.code])
        + struct.pack("<dIdd", 0.7, 40, 0.9, 0.05)
        + struct.pack("<HB", 8, 1)
        + struct.pack("<III", 2, 3, 4)
    )
    assert msg.payload() == expect


def test_tokens_accept_numpy_arrays() -> None:
    msg = start(prompt=np.array([3, 4], dtype=np.int32))  # type: ignore[arg-type]
    assert msg.prompt == (3, 4)
    back = Start.from_payload(msg.payload(VOCAB), session=7, epoch=0, start=2, vocab=VOCAB)
    assert back == msg


def test_start_header_must_point_after_the_prompt() -> None:
    with pytest.raises(ProtocolError, match=r"Start\.start: .* prompt's length 3, got 40"):
        start(start=40)
    payload = start().payload(VOCAB)
    with pytest.raises(ProtocolError, match=r"Start\.start"):
        Start.from_payload(payload, session=7, epoch=0, start=2, vocab=VOCAB)


def test_a_long_prompt_decodes_as_one_array_check() -> None:
    prompt = tuple(range(50_000))
    msg = start(prompt=prompt)
    back = Start.from_payload(msg.payload(60_000), session=7, epoch=0, start=50_000, vocab=60_000)
    assert back.prompt == prompt
    with pytest.raises(ProtocolError, match=r"Start\.prompt\[40000\]: token id 40000 is outside"):
        Start.from_payload(msg.payload(), session=7, epoch=0, start=50_000, vocab=40_000)


# --- refusals on construction -------------------------------------------------------


def test_out_of_range_header_names_message_and_field() -> None:
    with pytest.raises(ProtocolError, match=r"Bye\.session"):
        Bye(session=2**32, epoch=0, start=0)


def test_hello_fingerprint_must_be_a_fingerprint() -> None:
    with pytest.raises(ProtocolError, match=r"Hello\.vocab_fingerprint"):
        hello(vocab_fingerprint=b"short")


def test_start_k_over_256_is_refused() -> None:
    with pytest.raises(ProtocolError, match=r"Start\.k"):
        start(k=MAX_K + 1)


def test_overlong_text_is_refused() -> None:
    with pytest.raises(ProtocolError, match=r"Hello\.client_name.*over the limit of 64"):
        hello(client_name="é" * 33)


def test_empty_draft_block_is_refused() -> None:
    with pytest.raises(ProtocolError, match=r"DraftBlock\.tokens"):
        DraftBlock(**HEAD, scheme=Scheme.GREEDY, bonus=False, tokens=())


def test_draft_block_over_max_block_is_refused() -> None:
    with pytest.raises(ProtocolError, match=r"DraftBlock\.tokens"):
        DraftBlock(**HEAD, scheme=Scheme.GREEDY, bonus=False, tokens=range(MAX_BLOCK + 1))


def test_sparse_q_block_needs_one_q_per_token() -> None:
    with pytest.raises(ProtocolError, match=r"DraftBlock\.q: the sparse-q scheme sends 2"):
        DraftBlock(**HEAD, scheme=Scheme.SPARSE_Q, bonus=False, tokens=(5, 6), q=(q_dist([5]),))


def test_greedy_block_carries_no_q() -> None:
    with pytest.raises(ProtocolError, match=r"DraftBlock\.q_counts"):
        DraftBlock(**HEAD, scheme=Scheme.GREEDY, bonus=False, tokens=(5,), q_counts=(9,))


def test_split_count_zero_is_refused() -> None:
    with pytest.raises(ProtocolError, match=r"DraftBlock\.q_counts\[1\]"):
        DraftBlock(**HEAD, scheme=Scheme.SPLIT, bonus=False, tokens=(5, 6), q_counts=(9, 0))


def test_drafted_token_missing_from_its_q_is_refused() -> None:
    with pytest.raises(ProtocolError, match=r"q\[1\] \(position 41\).*token 7 is not in"):
        DraftBlock(
            **HEAD, scheme=Scheme.SPARSE_Q, bonus=False, tokens=(5, 7), q=(q_dist([5]), q_dist([6]))
        )


def test_unquantised_q_is_refused() -> None:
    with pytest.raises(ProtocolError, match=r"q\[0\].*not quantised"):
        DraftBlock(
            **HEAD,
            scheme=Scheme.SPARSE_Q,
            bonus=False,
            tokens=(5,),
            q=(SparseDist(np.array([5, 6]), np.array([0.3, 0.7])),),
        )


def test_verdict_with_both_p_and_token_is_refused() -> None:
    with pytest.raises(ProtocolError, match=r"Verdict\.p"):
        Verdict(
            **HEAD,
            accepted=0,
            token=3,
            target_forwards=1,
            p=SparseDist(np.array([3]), np.array([1.0])),
        )


def test_encoding_a_token_outside_the_vocabulary_is_refused() -> None:
    msg = start(prompt=(3, VOCAB))
    with pytest.raises(ProtocolError, match=r"Start\.prompt\[1\]: token id 1000 is outside"):
        msg.payload(VOCAB)


# --- refusals on decode ---------------------------------------------------------------


def block_payload(tokens: list[int], records: bytes, scheme: Scheme = Scheme.SPARSE_Q) -> bytes:
    """Raw DraftBlock payload bytes, bypassing the checks of construction."""
    head = bytes([scheme.code, 0]) + struct.pack("<i", -1)  # scheme, bonus, no correction
    head += bytes([len(tokens)]) + struct.pack(f"<{len(tokens)}I", *tokens)
    return head + records


def q16(ids: list[int]) -> bytes:
    return q_dist(ids).to_q16(VOCAB)


def test_decoded_token_missing_from_its_q_record_names_the_position() -> None:
    payload = block_payload([5, 7], q16([5]) + q16([6, 8]))
    with pytest.raises(ProtocolError, match=r"position 41.*drafted token 7 is not in its own q"):
        decode(DraftBlock, payload)


def test_decoded_draft_token_outside_the_vocabulary_is_refused() -> None:
    payload = block_payload([VOCAB], b"", Scheme.GREEDY)
    with pytest.raises(ProtocolError, match=r"DraftBlock\.tokens\[0\].*outside a vocabulary"):
        decode(DraftBlock, payload)


def test_draft_block_before_the_handshake_is_refused() -> None:
    payload = examples()[5].payload(VOCAB)
    with pytest.raises(ProtocolError, match="no handshake"):
        decode(DraftBlock, payload, vocab=None)


def test_corrupt_q16_record_names_the_record() -> None:
    record = bytearray(q16([5, 6]))
    record[-1] ^= 0x80  # a padding or count bit: either way corrupt
    with pytest.raises(ProtocolError, match=r"DraftBlock\.q\[0\]"):
        decode(DraftBlock, block_payload([5], bytes(record)))


def test_draft_block_token_count_zero_is_refused() -> None:
    with pytest.raises(ProtocolError, match=r"DraftBlock\.tokens"):
        decode(DraftBlock, block_payload([], b"", Scheme.GREEDY))


@pytest.mark.parametrize("msg", examples(), ids=lambda m: type(m).__name__)
def test_trailing_bytes_are_refused(msg: Message) -> None:
    with pytest.raises(ProtocolError, match="trailing"):
        decode(type(msg), msg.payload(VOCAB) + b"\0")


@pytest.mark.parametrize("msg", examples(), ids=lambda m: type(m).__name__)
def test_every_truncation_is_refused(msg: Message) -> None:
    payload = msg.payload(VOCAB)
    for cut in range(len(payload)):
        with pytest.raises(ProtocolError, match=type(msg).__name__):
            decode(type(msg), payload[:cut])


def test_flag_other_than_0_or_1_is_refused() -> None:
    with pytest.raises(ProtocolError, match=r"DraftBlock\.bonus: a flag must be 0 or 1"):
        decode(DraftBlock, bytes([Scheme.GREEDY.code, 2, 1]) + struct.pack("<I", 5))


def test_unknown_scheme_code_is_refused() -> None:
    with pytest.raises(ProtocolError, match=r"DraftBlock\.scheme: unknown scheme code 9"):
        decode(DraftBlock, bytes([9, 0, 1]) + struct.pack("<I", 5))


def test_invalid_utf8_is_refused() -> None:
    with pytest.raises(ProtocolError, match=r"Bye\.reason: is not valid UTF-8"):
        decode(Bye, struct.pack("<H", 2) + b"\xc3\x28")


def test_unknown_error_code_is_refused() -> None:
    with pytest.raises(ProtocolError, match=r"Error\.code: unknown error code 999"):
        decode(Error, struct.pack("<HH", 999, 0))


def test_sampling_params_out_of_range_are_refused() -> None:
    payload = bytearray(start().payload())
    at = 8 + 4 + 2 + 12  # seed, max_new_tokens, mode, scheme; then temperature, top_k
    payload[at : at + 8] = struct.pack("<d", 2.0)  # top_p
    with pytest.raises(ProtocolError, match=r"Start\.params: top_p must be in"):
        Start.from_payload(bytes(payload), session=7, epoch=0, start=3, vocab=VOCAB)


def test_verdict_token_below_minus_one_is_refused() -> None:
    payload = struct.pack("<HiIBB", 0, -2, 1, 0, 1)
    with pytest.raises(ProtocolError, match=r"Verdict\.token"):
        decode(Verdict, payload)


def test_verdict_p_with_repeated_id_is_refused() -> None:
    payload = struct.pack("<HiIBH2I2dB", 0, -1, 1, 1, 2, 4, 4, 0.25, 0.25, 1)
    with pytest.raises(ProtocolError, match=r"Verdict\.p: .*repeated"):
        decode(Verdict, payload)


def test_verdict_p_id_outside_the_vocabulary_is_refused() -> None:
    payload = struct.pack("<HiIBHIdB", 0, -1, 1, 1, 1, VOCAB, 0.5, 1)
    with pytest.raises(ProtocolError, match=r"Verdict\.p\[0\]: token id 1000 is outside"):
        decode(Verdict, payload)


def test_prompt_count_larger_than_payload_is_refused_without_allocating() -> None:
    params = struct.pack("<dIdd", 1.0, 0, 1.0, 0.0)
    payload = struct.pack("<QIBB", 1, 5, 1, 1) + params + struct.pack("<HBI", 8, 0, 2**32 - 1)
    with pytest.raises(ProtocolError, match=r"Start\.prompt: truncated"):
        decode(Start, payload)


@given(
    st.sampled_from(sorted(MESSAGE_TYPES)),
    st.binary(max_size=200),
    st.sampled_from([None, 1, 2, VOCAB, 2**31]),
)
@settings(max_examples=1000)
def test_random_payloads_raise_only_protocol_error(
    code: int, payload: bytes, vocab: int | None
) -> None:
    try:
        decode(MESSAGE_TYPES[code], payload, vocab)
    except ProtocolError:
        pass


def test_q16_bytes_are_the_kernels_format() -> None:
    q = q_dist([5, 9])
    msg = DraftBlock(**HEAD, scheme=Scheme.SPARSE_Q, bonus=False, tokens=(9,), q=(q,))
    assert msg.payload(VOCAB).endswith(ops.sparse_encode(q.ids, q.counts, VOCAB))


def test_split_block_carries_the_edge_correction() -> None:
    msg = DraftBlock(
        **HEAD, scheme=Scheme.SPLIT, bonus=False, correction=9, tokens=(5,), q_counts=(100,)
    )
    assert decode(DraftBlock, msg.payload(VOCAB)) == msg
    assert decode(DraftBlock, msg.payload(VOCAB)).correction == 9


def test_correction_outside_the_vocabulary_is_refused() -> None:
    msg = DraftBlock(**HEAD, scheme=Scheme.GREEDY, bonus=False, correction=VOCAB, tokens=(5,))
    with pytest.raises(ProtocolError, match=r"DraftBlock\.correction"):
        msg.payload(VOCAB)
