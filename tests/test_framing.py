"""Framing: messages survive any chunking; broken streams raise ProtocolError, in bounded memory."""

from __future__ import annotations

import dataclasses
import itertools
import struct

import numpy as np
import pytest
from builders import fingerprint_of
from hypothesis import given, settings
from hypothesis import strategies as st

from picospec.codec.errors import ConfigError, ProtocolError
from picospec.codec.framing import HELLO_MAX_FRAME, PROTOCOL_VERSION, FrameParser, encode_frame
from picospec.codec.messages import (
    Bye,
    Cancel,
    DraftBlock,
    Error,
    ErrorCode,
    Hello,
    Message,
    Start,
    Verdict,
    Welcome,
)
from picospec.codec.sampling import SamplingParams
from picospec.codec.scheme import Mode, Scheme
from picospec.codec.sparse import SparseDist

VOCAB = 1000
HEAD = {"session": 3, "epoch": 1, "start": 12}
HEADER_SIZE = 14


def q_dist(ids: list[int]) -> SparseDist:
    counts = np.full(len(ids), 65536 // len(ids))
    counts[0] += 65536 - counts.sum()
    return SparseDist.from_counts(np.array(ids), counts)


MESSAGES: list[Message] = [
    Hello(**HEAD, vocab_fingerprint=fingerprint_of(VOCAB)),
    Welcome(
        **HEAD,
        server_name="cloud",
        max_block=8,
        max_depth=3,
        max_prompt_tokens=100,
        max_new_tokens=64,
        context_size=164,
    ),
    Start(
        session=3,
        epoch=0,
        start=3,
        seed=42,
        max_new_tokens=64,
        mode=Mode.SYNC,
        scheme=Scheme.SPARSE_Q,
        params=SamplingParams(temperature=0.8, top_k=20),
        k=4,
        prompt=(1, 2, 3),
    ),
    DraftBlock(
        **HEAD,
        scheme=Scheme.SPARSE_Q,
        bonus=False,
        tokens=(4, 5),
        q=(q_dist([4, 9]), q_dist([5, 6, 7])),
    ),
    DraftBlock(**HEAD, scheme=Scheme.SPLIT, bonus=True, tokens=(8,), q_counts=(30000,)),
    Verdict(
        **HEAD,
        accepted=1,
        token=None,
        target_forwards=1,
        p=SparseDist(np.array([2, 3]), np.array([0.6, 0.3])),
        p_exact=False,
    ),
    Cancel(**HEAD),
    Error(**HEAD, code=ErrorCode.BUSY, message="try later"),
    Bye(**HEAD, reason="done"),
]
FRAMES = [encode_frame(m, VOCAB) for m in MESSAGES]
STREAM = b"".join(FRAMES)


def frame(body: bytes) -> bytes:
    return struct.pack("<I", len(body)) + body


def header(msg_type: int, version: int = PROTOCOL_VERSION) -> bytes:
    return struct.pack("<BBIII", version, msg_type, 3, 1, 12)


def feed_all(parser: FrameParser, chunks: list[bytes]) -> list[Message]:
    return [m for chunk in chunks for m in parser.feed(chunk)]


# --- round trips -----------------------------------------------------------------


def test_frame_layout_is_length_then_header_then_payload() -> None:
    msg = Bye(session=1, epoch=2, start=3, reason="ok")
    body = struct.pack("<BBIII", PROTOCOL_VERSION, Bye.TYPE, 1, 2, 3) + msg.payload()
    assert encode_frame(msg) == frame(body)


def test_concatenated_frames_decode_in_one_feed() -> None:
    assert FrameParser(vocab=VOCAB).feed(STREAM) == MESSAGES


def test_split_at_every_byte_boundary_gives_the_same_messages() -> None:
    for cut in range(len(STREAM) + 1):
        parser = FrameParser(vocab=VOCAB)
        assert feed_all(parser, [STREAM[:cut], STREAM[cut:]]) == MESSAGES
        assert parser.buffered == 0


def test_one_byte_at_a_time_gives_the_same_messages() -> None:
    parser = FrameParser(vocab=VOCAB)
    assert feed_all(parser, [STREAM[i : i + 1] for i in range(len(STREAM))]) == MESSAGES


@given(st.lists(st.integers(0, len(STREAM)), max_size=20))
def test_any_chunking_gives_the_same_messages(cuts: list[int]) -> None:
    edges = [0, *sorted(cuts), len(STREAM)]
    chunks = [STREAM[a:b] for a, b in itertools.pairwise(edges)]
    assert feed_all(FrameParser(vocab=VOCAB), chunks) == MESSAGES


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_header_fields_round_trip(session: int, epoch: int, start: int) -> None:
    msg = Cancel(session=session, epoch=epoch, start=start)
    assert FrameParser().feed(encode_frame(msg)) == [msg]


def test_partial_frame_returns_nothing_and_is_buffered() -> None:
    parser = FrameParser(vocab=VOCAB)
    assert parser.feed(FRAMES[0][:-1]) == []
    assert parser.buffered == len(FRAMES[0]) - 4 - 1
    assert parser.feed(FRAMES[0][-1:]) == [MESSAGES[0]]


def test_vocab_set_after_the_handshake_decodes_draft_blocks() -> None:
    parser = FrameParser()
    assert parser.feed(FRAMES[0]) == [MESSAGES[0]]
    parser.vocab = MESSAGES[0].vocab_size
    assert parser.feed(FRAMES[3]) == [MESSAGES[3]]


# --- refusals ----------------------------------------------------------------------


def test_oversized_length_is_refused_before_the_body_arrives() -> None:
    parser = FrameParser(max_frame=100)
    with pytest.raises(ProtocolError, match="length 101 is over the limit of 100"):
        parser.feed(struct.pack("<I", 101))
    assert parser.buffered == 0


def test_oversized_length_is_refused_when_its_last_byte_arrives() -> None:
    parser = FrameParser(max_frame=100)
    assert parser.feed(b"\xff\xff\xff") == []
    with pytest.raises(ProtocolError, match="over the limit"):
        parser.feed(b"\x7f")


@pytest.mark.parametrize("length", [0, 1, HEADER_SIZE - 1])
def test_length_shorter_than_a_header_is_refused(length: int) -> None:
    with pytest.raises(ProtocolError, match=f"length {length} is shorter than its 14-byte header"):
        FrameParser().feed(struct.pack("<I", length))


def test_bad_version_names_both_versions() -> None:
    data = frame(header(Cancel.TYPE, version=1))
    with pytest.raises(ProtocolError, match="version 1 received; this side speaks version 2"):
        FrameParser().feed(data)


def test_unknown_message_type_is_refused() -> None:
    with pytest.raises(ProtocolError, match="unknown message type 200"):
        FrameParser().feed(frame(header(200)))


def test_truncated_payload_is_refused() -> None:
    body = FRAMES[2][4:-2]  # a Start cut inside its prompt, framed as complete
    with pytest.raises(ProtocolError, match=r"Start\.prompt: truncated"):
        FrameParser().feed(frame(body))


def test_trailing_bytes_after_the_payload_are_refused() -> None:
    with pytest.raises(ProtocolError, match="Bye: 2 trailing byte"):
        FrameParser().feed(frame(FRAMES[-1][4:] + b"\0\0"))


def test_draft_block_before_the_handshake_is_refused() -> None:
    with pytest.raises(ProtocolError, match="no handshake"):
        FrameParser().feed(FRAMES[3])


def test_parser_refuses_input_after_an_error() -> None:
    parser = FrameParser()
    with pytest.raises(ProtocolError):
        parser.feed(struct.pack("<I", 0))
    with pytest.raises(ProtocolError, match="closed after an earlier error"):
        parser.feed(FRAMES[-1])


def test_encoding_a_frame_over_the_limit_is_refused() -> None:
    msg = dataclasses.replace(MESSAGES[2], start=100, prompt=tuple(range(100)))
    with pytest.raises(ProtocolError, match="over the limit of 64 bytes"):
        encode_frame(msg, VOCAB, max_frame=64)


def test_parser_limits_are_validated() -> None:
    with pytest.raises(ConfigError):
        FrameParser(max_frame=HEADER_SIZE - 1)
    with pytest.raises(ConfigError):
        FrameParser(vocab=0)


def test_a_hello_only_parser_refuses_any_other_type_from_its_header() -> None:
    parser = FrameParser.hello_only()
    start = encode_frame(MESSAGES[2], VOCAB)
    with pytest.raises(ProtocolError, match="a Start where only Hello is accepted"):
        parser.feed(start)


def test_a_hello_only_parser_takes_the_largest_hello_and_nothing_larger() -> None:
    big = Hello(
        **HEAD,
        vocab_fingerprint=fingerprint_of(((0xFFFF - 20) // 4) * 64),  # the largest that fits
        auth_token=b"t" * 256,
        client_name="n" * 64,
    )
    data = encode_frame(big)
    assert len(data) - 4 <= HELLO_MAX_FRAME
    assert FrameParser.hello_only().feed(data) == [big]
    too_big = struct.pack("<I", HELLO_MAX_FRAME + 1)
    with pytest.raises(ProtocolError, match="over the limit"):
        FrameParser.hello_only().feed(too_big)


def test_frame_of_exactly_max_frame_is_accepted() -> None:
    msg = Bye(**HEAD, reason="x" * 10)
    data = encode_frame(msg)
    assert FrameParser(max_frame=len(data) - 4).feed(data) == [msg]


# --- hostile input --------------------------------------------------------------------


@given(st.binary(max_size=300), st.sampled_from([None, 1, VOCAB]))
@settings(max_examples=500)
def test_random_bytes_raise_only_protocol_error(data: bytes, vocab: int | None) -> None:
    try:
        FrameParser(max_frame=256, vocab=vocab).feed(data)
    except ProtocolError:
        pass


@given(st.binary(min_size=HEADER_SIZE, max_size=300), st.sampled_from([None, VOCAB]))
@settings(max_examples=500)
def test_random_bodies_behind_a_valid_length_raise_only_protocol_error(
    body: bytes, vocab: int | None
) -> None:
    body = bytes([PROTOCOL_VERSION, body[1] % 10]) + body[2:]  # reach the payload decoders
    try:
        FrameParser(vocab=vocab).feed(frame(body))
    except ProtocolError:
        pass


@st.composite
def mutated_streams(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(FRAMES)) * draw(st.integers(1, 2)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "insert", "delete"]))
        if action == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "insert":
            data.insert(at, draw(st.integers(0, 255)))
        else:
            del data[at]
    return bytes(data)


@given(mutated_streams())
@settings(max_examples=1000)
def test_mutated_frames_raise_only_protocol_error(data: bytes) -> None:
    try:
        FrameParser(vocab=VOCAB).feed(data)
    except ProtocolError:
        pass


@given(st.lists(st.binary(min_size=1, max_size=80), max_size=30), st.integers(HEADER_SIZE, 120))
@settings(max_examples=300)
def test_buffered_never_exceeds_max_frame_plus_4(chunks: list[bytes], max_frame: int) -> None:
    parser = FrameParser(max_frame=max_frame, vocab=VOCAB)
    stream = [c for f in FRAMES for c in (f[:5], f[5:])] + chunks
    for chunk in stream:
        try:
            parser.feed(chunk)
        except ProtocolError:
            return
        assert parser.buffered <= max_frame + 4


def test_a_frame_of_max_frame_bytes_fed_slowly_stays_within_the_bound() -> None:
    data = encode_frame(Bye(**HEAD, reason="y" * 200))
    parser = FrameParser(max_frame=len(data) - 4)
    for i in range(len(data) - 1):
        assert parser.feed(data[i : i + 1]) == []
        assert parser.buffered <= len(data)
    assert parser.feed(data[-1:]) != []
    assert parser.buffered == 0
