/*
 * picospec kernels: the C99 hot loops of the codec.
 *
 * Owns: the sampling transform over one full-vocabulary logits row, the
 * exact top-K quantisation of the drafter's distribution, the sparse
 * distribution byte format, and the keyed (counter-based) random numbers.
 *
 * Rules: no Python.h, no allocation, no global state. Every function that can
 * fail returns a pico_status (0 = PICO_OK, negative = error; pico_strerror
 * names it). Callers size their buffers with the *_size query functions.
 *
 * codec/reference.py is a numpy implementation of the same definitions; the
 * two must agree bit for bit (tests/test_kernels.py). The
 * definitions below are therefore written as exact sequences of IEEE-754
 * double operations; compile with -ffp-contract=off (no fused multiply-add).
 *
 * ---------------------------------------------------------------------------
 * THE SAMPLING TRANSFORM (one definition, used by drafter and verifier)
 * ---------------------------------------------------------------------------
 * Input: z[0..V-1] float32 logits, params {temperature T, top_k, top_p, min_p}.
 *  - Invalid: V == 0 or V > 2^31, T < 0 or not finite, top_k < 0, top_p not
 *    in (0, 1], min_p not in [0, 1], k not in [1, PICO_MAX_K] -> PICO_E_ARG;
 *    work_size < pico_work_size(V) -> PICO_E_SPACE; NaN or +inf in z, every
 *    z == -inf -> PICO_E_NONFINITE (checked in that order). -inf logits are
 *    allowed (masked tokens, weight 0).
 *  - Rank order: i precedes j iff z[i] > z[j], or z[i] == z[j] and i < j.
 *  - Greedy (T == 0): S = {the rank-first id}; p = one-hot.
 *  - Otherwise, with m = max z (as double):
 *      x_i = ((double)z[i] - m) / T          (for z[i] == -inf: w_i = 0)
 *      w_i = pico_exp(x_i)                   (defined below; w = 1 at the max)
 *    1. top-k: candidates C = first top_k ids in rank order (all V if
 *       top_k == 0 or top_k >= V). n_k = |C|.
 *    2. top-p (only if top_p < 1): Z_k = striped sum of w over C (below).
 *       c_j = w_{r1} + w_{r2} + ... + w_{rj}, summed sequentially in rank order
 *       (r1 = rank-first). n_p = smallest j with c_j >= top_p * Z_k (n_p = n_k
 *       if none).  Otherwise n_p = n_k.
 *    3. min-p (only if min_p > 0): n_m = length of the longest prefix of the
 *       rank order whose every w >= min_p (at least 1, since w_{r1} = 1).
 *       Otherwise n_m = n_k.
 *    4. S = first n_S = min(n_k, n_p, n_m) ids in rank order.
 *  - Striped sum over a set A: eight lanes, lane l accumulates (sequentially,
 *    in increasing id order) w_i for the ids i in A with i % 8 == l, starting
 *    from 0.0; then Z = ((((((l0 + l1) + l2) + l3) + l4) + l5) + l6) + l7.
 *
 * Dense output (pico_transform_dense): p_i = w_i / Z_S for i in S, else 0,
 *   where Z_S = striped sum over C if n_S == n_k, else c_{n_S} (the
 *   sequential rank-order sum of the first n_S weights). Greedy: one-hot 1.0.
 *
 * Quantised top-K output (pico_transform_topk), the drafter's exact q:
 *   kept = first n = min(K, n_S) ids of S in rank order.
 *   Zk = sequential sum of their w in rank order.
 *   count_j = floor((w_j / Zk) * 65536.0)   (j in rank order)
 *   R = 65536 - sum count; while R > 0: add 1 to count_0, count_1, ... in rank
 *   order (cycling), R -= 1 each time. Entries whose count is 0 are dropped
 *   (order kept). Greedy: one entry, count 65536.
 *   Result: ids and counts in rank order, counts >= 1, sum exactly 65536;
 *   q(id) = count / 65536 exactly. This object is what the drafter samples
 *   from and what the verifier sees: compressing q is free (DESIGN.md 2).
 *
 * pico_exp(x), for x <= 0 (double):
 *   if !(x >= -700.0): return 0.0                  (also -inf, NaN)
 *   k  = (x * LOG2E + 0x1.8p52) - 0x1.8p52         (round to nearest, exact int)
 *   r  = (x - k * LN2_HI) - k * LN2_LO
 *   p  = Horner, degree 13, 1/n! coefficients:
 *        p = C13; p = p * r + C12; ... ; p = p * r + C1; p = p * r + C0
 *        with Cn = the double nearest 1/n! (literals PICO_C0..PICO_C13 in
 *        kernels/internal.h)
 *   result = p * 2^k  (2^k built from its exponent bits; k in [-1010, 0])
 *   LOG2E = 1.4426950408889634, LN2_HI = 6.93147180369123816490e-01,
 *   LN2_LO = 1.90821492927058770002e-10. pico_exp(0) == 1.0 exactly.
 *
 * ---------------------------------------------------------------------------
 * SPARSE DISTRIBUTION BYTE FORMAT (quantised, "q16")
 * ---------------------------------------------------------------------------
 *   byte 0: n - 1 (1 <= n <= 256 entries)
 *   then a little-endian bit stream (bit 0 of byte 1 first) of n pairs
 *   (id: B bits, count - 1: 16 bits), B = bit length of (V - 1), at least 1;
 *   padded with zero bits to a whole byte. Size: 1 + ceil(n * (B + 16) / 8).
 *   1 <= V <= 2^31. Decode rejects, in this order: n > capacity
 *   (PICO_E_SPACE), a buffer shorter than the record (PICO_E_TRUNCATED), then
 *   id >= V, a repeated id, counts not summing to exactly 65536, non-zero
 *   padding bits (all PICO_E_CORRUPT). Encode refuses with PICO_E_ARG what
 *   decode would refuse (n not in 1..256, id out of range or repeated, a count
 *   not in 1..65536, a sum other than 65536) and with PICO_E_SPACE an out_cap
 *   below the record's size. Entries keep their encoded order.
 *   decode(encode(x)) == x bit for bit.
 *
 * ---------------------------------------------------------------------------
 * KEYED RANDOMNESS (counter-based; never depends on call order)
 * ---------------------------------------------------------------------------
 *   mix(z): z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
 *           z = (z ^ (z >> 27)) * 0x94D049BB133111EB; return z ^ (z >> 31)
 *           (the SplitMix64 finaliser, arithmetic mod 2^64)
 *   pico_key(seed, position, purpose) =
 *           mix(mix(mix(seed ^ 0x7069636F73706563) ^ purpose) + position)
 *   bits(key, i) = mix(key + (i + 1) * 0x9E3779B97F4A7C15)
 *   uniform(key, i) = ((double)(bits >> 12) + 0.5) * 0x1p-52, in (0, 1)
 *           (every step exact: 2^-53 <= uniform <= 1 - 2^-53)
 *   gumbel(key, i) = -log(-log(uniform(key, i)))  (libm log: only the
 *           uniforms are bit-exact across implementations)
 */
#ifndef PICOSPEC_KERNELS_H
#define PICOSPEC_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* --- cdef begin: build.py feeds the text between the markers to cffi --- */

typedef enum {
    PICO_OK = 0,
    PICO_E_ARG = -1,        /* a parameter is out of range */
    PICO_E_NONFINITE = -2,  /* NaN or +inf logit, or every logit is -inf */
    PICO_E_SPACE = -3,      /* an output or work buffer is too small */
    PICO_E_TRUNCATED = -4,  /* input bytes end before the record does */
    PICO_E_CORRUPT = -5     /* bad id, repeated id, bad count sum, bad padding */
} pico_status;

typedef struct {
    double temperature;  /* 0 = greedy */
    int32_t top_k;       /* 0 = off */
    double top_p;        /* 1 = off */
    double min_p;        /* 0 = off */
} pico_sampling;

#define PICO_MAX_K 256
#define PICO_Q_ONE 65536

/* pico_exp as defined above (exposed for tests and the reference). */
double pico_exp(double x);

/* Human-readable name of a status code (never NULL). */
const char *pico_strerror(int status);

/* Bytes of scratch memory the transform functions need for this vocabulary
 * (any alignment; 0 for an invalid vocabulary). */
size_t pico_work_size(size_t vocab);

/* The drafter's hot path: logits -> transform -> quantised top-K (see above).
 * out_ids/out_counts hold at least k entries; *out_n receives n (1..k). */
int pico_transform_topk(const float *logits, size_t vocab,
                        const pico_sampling *params, uint32_t k,
                        void *work, size_t work_size,
                        int32_t *out_ids, uint32_t *out_counts, uint32_t *out_n);

/* The full transformed distribution p[0..vocab-1] (see "Dense output"). */
int pico_transform_dense(const float *logits, size_t vocab,
                         const pico_sampling *params,
                         void *work, size_t work_size, double *out_probs);

/* Encoded size of a record of n entries over this vocabulary (0 if n or
 * vocab is out of range). */
size_t pico_sparse_size(uint32_t n, size_t vocab);

int pico_sparse_encode(const int32_t *ids, const uint32_t *counts, uint32_t n,
                       size_t vocab, uint8_t *out, size_t out_cap,
                       size_t *out_len);

/* Decodes one record from the front of buf; *consumed = its size. */
int pico_sparse_decode(const uint8_t *buf, size_t len, size_t vocab,
                       int32_t *ids, uint32_t *counts, uint32_t cap,
                       uint32_t *out_n, size_t *consumed);

uint64_t pico_key(uint64_t seed, uint64_t position, uint32_t purpose);

/* out[j] = uniform(key, first + j) for j < n. */
void pico_uniforms(uint64_t key, uint64_t first, size_t n, double *out);

/* Gumbel-max sample of the transformed distribution: the id in S maximising
 * x_i + gumbel(key, i) (x_i as in the transform; greedy: the rank-first id;
 * equal scores: the lowest id). */
int pico_gumbel_argmax(const float *logits, size_t vocab,
                       const pico_sampling *params, uint64_t key,
                       void *work, size_t work_size, int32_t *out_token);

/* --- cdef end --- */

#ifdef __cplusplus
}
#endif

#endif /* PICOSPEC_KERNELS_H */
