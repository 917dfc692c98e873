"""The verifier backend contract, checked the same way for every backend.

A backend's test module subclasses ``BackendContract`` and provides two
fixtures: ``backend`` (a ready ``Backend``) and ``prompt`` (a few token ids in
its vocabulary). Every check is behavioural: what ``forward`` returns for a
sequence must not depend on how the sequence was split into calls, on a
rollback in between, or on another session's traffic. Logits are compared with
``ATOL`` (in logit units): model libraries may compute a batch of five tokens
with slightly different numerics than five single-token steps.
"""

from __future__ import annotations

import numpy as np
import pytest

from picospec.cloud.backend import Backend
from picospec.cloud.target import TargetSequence
from picospec.codec import ops
from picospec.codec.errors import ConfigError
from picospec.codec.sampling import Sampling, SamplingParams
from picospec.codec.scheme import Scheme
from picospec.codec.vocab import VocabFingerprint

ATOL = 5e-3


def _drafted(backend: Backend, n: int, salt: int = 0) -> list[int]:
    """n token ids spread over the vocabulary (deterministic, no model needed)."""
    return [(7919 * (i + 1) + 104729 * salt) % backend.vocab_size for i in range(n)]


class BackendContract:
    """Subclass in a test module that defines the ``backend`` and ``prompt`` fixtures."""

    atol = ATOL

    def test_forward_returns_float32_rows_of_the_vocabulary(self, backend, prompt):
        backend.open(101)
        try:
            out = backend.forward(101, 0, prompt)
            assert out.dtype == np.float32 and out.shape == (len(prompt), backend.vocab_size)
            assert np.isfinite(out).all()
            last = backend.forward(101, len(prompt), _drafted(backend, 3), n_out=1)
            assert last.shape == (1, backend.vocab_size)
        finally:
            backend.close(101)

    def test_split_evaluation_equals_one_pass(self, backend, prompt):
        tail = _drafted(backend, 4)
        backend.open(102)
        backend.open(103)
        try:
            whole = backend.forward(102, 0, prompt + tail)
            backend.forward(103, 0, prompt, n_out=1)
            parts = np.concatenate(
                [
                    backend.forward(103, len(prompt), tail[:1]),
                    backend.forward(103, len(prompt) + 1, tail[1:]),
                ]
            )
            np.testing.assert_allclose(parts, whole[len(prompt) :], atol=self.atol, rtol=0)
        finally:
            backend.close(102)
            backend.close(103)

    def test_truncate_then_forward_reproduces_the_rows(self, backend, prompt):
        backend.open(104)
        try:
            backend.forward(104, 0, prompt, n_out=1)
            block = _drafted(backend, 5)
            first = backend.forward(104, len(prompt), block)
            backend.truncate(104, len(prompt) + 2)  # keep two drafts, drop three
            again = backend.forward(104, len(prompt) + 2, block[2:])
            np.testing.assert_allclose(again, first[2:], atol=self.atol, rtol=0)
            backend.truncate(104, len(prompt))
            other = _drafted(backend, 5, salt=1)
            fresh = backend.forward(104, len(prompt), other)
            assert not np.allclose(fresh, first, atol=self.atol)  # the old tail is gone
        finally:
            backend.close(104)

    def test_sessions_do_not_disturb_each_other(self, backend, prompt):
        block_a, block_b = _drafted(backend, 4), _drafted(backend, 4, salt=2)
        backend.open(105)
        try:
            backend.forward(105, 0, prompt, n_out=1)
            alone = backend.forward(105, len(prompt), block_a)
        finally:
            backend.close(105)
        backend.open(106)
        backend.open(107)
        try:
            backend.forward(106, 0, prompt, n_out=1)
            backend.forward(107, 0, list(reversed(prompt)), n_out=1)
            backend.forward(107, len(prompt), block_b)
            backend.truncate(107, 1)
            mixed = backend.forward(106, len(prompt), block_a)
            np.testing.assert_allclose(mixed, alone, atol=self.atol, rtol=0)
        finally:
            backend.close(106)
            backend.close(107)

    def test_session_misuse_is_a_config_error(self, backend, prompt):
        backend.open(108)
        try:
            with pytest.raises(ConfigError):
                backend.open(108)
            with pytest.raises(ConfigError):
                backend.forward(108, 0, prompt, n_out=len(prompt) + 1)
            with pytest.raises(ConfigError):
                backend.forward(108, 0, prompt, n_out=0)
        finally:
            backend.close(108)
        with pytest.raises(ConfigError):
            backend.forward(108, 0, prompt)
        backend.close(108)  # closing twice is harmless

    def test_a_forward_must_continue_the_sequence_with_known_tokens(self, backend, prompt):
        backend.open(112)
        try:
            backend.forward(112, 0, prompt, n_out=1)
            with pytest.raises(ConfigError, match=f"holds {len(prompt)} tokens"):
                backend.forward(112, len(prompt) + 1, prompt[:1])
            with pytest.raises(ConfigError, match="outside the vocabulary"):
                backend.forward(112, len(prompt), [backend.vocab_size])
            with pytest.raises(ConfigError, match="at least one token"):
                backend.forward(112, len(prompt), [])
            backend.truncate(112, 2)
            assert backend.forward(112, 2, prompt[2:3]).shape == (1, backend.vocab_size)
        finally:
            backend.close(112)

    def test_fingerprint_describes_the_vocabulary(self, backend, prompt):
        fp = backend.fingerprint()
        assert isinstance(fp, VocabFingerprint) and fp.size == backend.vocab_size
        assert fp.difference(VocabFingerprint.from_bytes(fp.to_bytes())) is None
        assert isinstance(backend.is_end(0), bool)

    @pytest.mark.parametrize(
        "params",
        [SamplingParams(temperature=0.7), SamplingParams(temperature=1.0, top_k=20, top_p=0.9)],
    )
    def test_distributions_follow_the_shared_transform(self, backend, prompt, params):
        backend.open(109)
        try:
            logits = backend.forward(109, 0, prompt)
        finally:
            backend.close(109)
        got = backend.distributions(logits, params)
        want = np.stack([ops.transform_dense(row, params) for row in logits])
        assert got.shape == want.shape and got.dtype == np.float64
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
        np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-9)

    def test_greedy_target_sequence_matches_stepwise_argmax(self, backend, prompt):
        """TargetSequence over this backend: verifying a block of the target's own
        greedy tokens accepts all of them."""
        greedy = Sampling(SamplingParams(temperature=0.0), Scheme.GREEDY)
        backend.open(110)
        try:
            seq = TargetSequence(backend, 110, greedy, seed=0)
            first = seq.prefill(prompt)
            own = [first]
            pos = len(prompt)
            for _ in range(4):  # the target's greedy continuation, one step at a time
                probe = TargetSequence(backend, 111, greedy, seed=0)
                backend.open(111)
                try:
                    own.append(probe.prefill(prompt + own))
                finally:
                    backend.close(111)
            out = seq.verify(pos + 1, own[1:], bonus=False)
            assert out.accepted == 4
        finally:
            backend.close(110)
