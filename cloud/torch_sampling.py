"""The shared sampling transform in torch ops, on the device that holds the logits.

Owns: turning a batch of logits rows that live on a GPU (or CPU) into the
target distributions p the verifier needs, with only the *support* of p
crossing to the host. It computes the definition of kernels/picospec_kernels.h
(as codec/reference.py does with numpy):

1. greedy (temperature 0 or top_k 1): p is one-hot at the argmax (lowest id on ties);
2. otherwise, rank the ids by logit, descending, ties by ascending id (a stable
   sort of -z); x = (z - max z) / T in float64; w = exp(x);
3. top-k keeps the first k ranks; top-p the shortest rank prefix whose running
   sum of w reaches top_p times the sum over the top-k set; min-p the longest
   prefix whose w >= min_p (w of the first rank is 1); the support S is the
   shortest of the three prefixes;
4. p = w / (sum of w over S) on S, 0 elsewhere.

Numerics: float64 throughout, like the reference, but ``torch.exp`` instead of
the reference's ``pico_exp`` and torch's own summation order, so probabilities
agree with ``transform_dense`` to about 1e-15 relative, not bit for bit (the
tests hold them to 1e-6). A top-p cut that falls within rounding of a running
sum could therefore land one rank apart; ties in the logits cannot move it (they
give identical w and are ordered by id on both sides).

Transfer: after the transform only the support travels to the host (ids and
probabilities, padded to the widest row of the batch), and the host scatters it
into float64 rows. When the widest support is so large that the pairs would cost
more than dense float64 rows (more than 2/3 of the vocabulary, since a pair is
4 + 8 bytes), the dense rows travel instead.

Imported only by cloud/torch_backend.py, after it has checked that torch is
installed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from picospec.codec.errors import ConfigError, KernelError
from picospec.codec.reference import E_NONFINITE
from picospec.codec.sampling import SamplingParams


@dataclass(frozen=True)
class Support:
    """The supports of a batch of transformed rows, still on the device."""

    ids: torch.Tensor
    """int64[n, S]: token ids in rank order; entries past a row's size are padding."""
    probs: torch.Tensor
    """float64[n, S]: p of those ids; 0 on padding."""
    sizes: torch.Tensor
    """int64[n]: how many ids of each row are in its support."""


def check_logits(z: torch.Tensor) -> None:
    """Refuse rows the kernels refuse: NaN or +inf anywhere, or every logit -inf."""
    if z.dtype != torch.float32 or z.dim() != 2 or z.shape[1] == 0:
        raise ConfigError(
            f"logits must be float32[n, V] with V >= 1, got {z.dtype} of shape {tuple(z.shape)}"
        )
    bad = torch.isnan(z).any(dim=1) | torch.isposinf(z).any(dim=1) | torch.isneginf(z).all(dim=1)
    rows = torch.nonzero(bad).flatten().tolist()
    if rows:
        raise KernelError(
            E_NONFINITE,
            f"non-finite logits: NaN, +inf or all -inf in row(s) {rows} of {z.shape[1]}",
        )


def support(z: torch.Tensor, params: SamplingParams) -> Support:
    """The support of p for each row of float32[n, V] logits (on z's device)."""
    check_logits(z)
    if params.greedy:
        ids = torch.argmax(z, dim=1, keepdim=True)  # the first maximal index: lowest id on ties
        probs = torch.ones(ids.shape, dtype=torch.float64, device=z.device)
        return Support(ids, probs, torch.ones(z.shape[0], dtype=torch.int64, device=z.device))
    n, vocab = z.shape
    _, order = torch.sort(-z, dim=1, stable=True)  # descending logits, ties by ascending id
    m = z.max(dim=1, keepdim=True).values.double()
    w = torch.exp((z.double() - m) / params.temperature)
    n_k = vocab if params.top_k == 0 or params.top_k >= vocab else params.top_k
    order = order[:, :n_k]
    ranked = torch.gather(w, 1, order)  # w in rank order, non-increasing
    cum = torch.cumsum(ranked, dim=1)
    z_k = ranked.sum(dim=1)
    size = torch.full((n,), n_k, dtype=torch.int64, device=z.device)
    if params.top_p < 1.0:
        short = cum < (params.top_p * z_k)[:, None]  # True before the first rank that reaches it
        size = torch.minimum(size, short.sum(dim=1) + 1)
    if params.min_p > 0.0:
        size = torch.minimum(size, (ranked >= params.min_p).sum(dim=1))
    width = int(size.max())  # one small device-to-host copy
    ranks = torch.arange(width, device=z.device)[None, :]
    kept = ranks < size[:, None]
    z_s = torch.where(size == n_k, z_k, torch.gather(cum, 1, (size - 1)[:, None])[:, 0])
    probs = torch.where(kept, ranked[:, :width] / z_s[:, None], 0.0)
    return Support(order[:, :width], probs, size)


def dense_on_host(s: Support, vocab: int) -> np.ndarray:
    """float64[n, V] host rows from a support: the pairs travel when they are the
    smaller transfer, else the rows are scattered on the device and copied whole."""
    n, width = s.ids.shape
    if width * 12 <= vocab * 8:
        ids = s.ids.to(torch.int32).cpu().numpy()
        probs = s.probs.cpu().numpy()
        out = np.zeros((n, vocab), dtype=np.float64)
        np.put_along_axis(out, ids.astype(np.intp), probs, axis=1)
        return out
    rows = torch.zeros((n, vocab), dtype=torch.float64, device=s.ids.device)
    rows.scatter_(1, s.ids, s.probs)
    return rows.cpu().numpy()


def distributions(z: torch.Tensor, params: SamplingParams) -> np.ndarray:
    """float64[n, V] host distributions p from float32[n, V] logits on any device."""
    return dense_on_host(support(z, params), z.shape[1])
