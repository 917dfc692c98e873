/*
 * Internals shared by the kernel sources (not part of the API): the inline
 * pico_exp, the keyed uniform of one index, the rank-order keys and the
 * rank-order helpers. Definitions live in picospec_kernels.h.
 */
#ifndef PICOSPEC_INTERNAL_H
#define PICOSPEC_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "picospec_kernels.h"

/* Full-vocabulary loops get AVX-512 / AVX2 clones picked at load time on
 * x86-64 GCC; every clone performs the same IEEE-754 operations (no FMA, as
 * -ffp-contract=off forbids contraction), so the results are identical. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && \
    defined(__linux__) && !defined(PICO_NO_CLONES)
#define PICO_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define PICO_CLONES
#endif

#define PICO_MAX_VOCAB ((size_t)1 << 31)

/* 1/n!, n = 0..13, as the nearest doubles (codec/reference.py has the same). */
#define PICO_C0 1.0
#define PICO_C1 1.0
#define PICO_C2 0.5
#define PICO_C3 0.16666666666666666
#define PICO_C4 0.041666666666666664
#define PICO_C5 0.008333333333333333
#define PICO_C6 0.001388888888888889
#define PICO_C7 0.0001984126984126984
#define PICO_C8 2.48015873015873e-05
#define PICO_C9 2.7557319223985893e-06
#define PICO_C10 2.755731922398589e-07
#define PICO_C11 2.505210838544172e-08
#define PICO_C12 2.08767569878681e-09
#define PICO_C13 1.6059043836821613e-10

/* pico_exp (see the header) for x that is not NaN. Branch-free, so that loops
 * over it vectorise: it computes for every x, then clears the result's bits
 * when x < -700 (also -inf), a mask taken from the sign of x + 700. */
static inline double pico__exp(double x)
{
    const double shifter = 6755399441055744.0; /* 0x1.8p52 */
    const uint64_t shifter_bits = 0x4338000000000000u;
    double below = x + 700.0, t, k, r, p, scale;
    uint64_t bits, drop;
    memcpy(&drop, &below, sizeof drop);
    drop = (uint64_t)0 - (drop >> 63); /* all ones if x < -700, else 0 */
    t = x * 1.4426950408889634 + shifter;
    k = t - shifter;
    r = (x - k * 6.93147180369123816490e-01) - k * 1.90821492927058770002e-10;
    p = PICO_C13;
    p = p * r + PICO_C12;
    p = p * r + PICO_C11;
    p = p * r + PICO_C10;
    p = p * r + PICO_C9;
    p = p * r + PICO_C8;
    p = p * r + PICO_C7;
    p = p * r + PICO_C6;
    p = p * r + PICO_C5;
    p = p * r + PICO_C4;
    p = p * r + PICO_C3;
    p = p * r + PICO_C2;
    p = p * r + PICO_C1;
    p = p * r + PICO_C0;
    memcpy(&bits, &t, sizeof bits);
    bits = (bits - shifter_bits + 1023u) << 52; /* k + 1023 in the exponent */
    memcpy(&scale, &bits, sizeof scale);
    p = p * scale;
    memcpy(&bits, &p, sizeof bits);
    bits &= ~drop;
    memcpy(&p, &bits, sizeof p);
    return p;
}

/* Index of the lowest set bit of a non-zero word. */
static inline unsigned pico__ctz64(uint64_t x)
{
#if defined(__GNUC__)
    return (unsigned)__builtin_ctzll(x);
#else
    unsigned n = 0;
    while (!(x & 1u)) {
        x >>= 1;
        n++;
    }
    return n;
#endif
}

/* The SplitMix64 finaliser. */
static inline uint64_t pico__mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}

/* uniform(key, i) in (0, 1). The 52-bit integer becomes a double through
 * its bits (2^52 + v, minus 2^52: exact), which vectorises. */
static inline double pico__uniform(uint64_t key, uint64_t i)
{
    uint64_t bits = (pico__mix(key + (i + 1) * 0x9E3779B97F4A7C15u) >> 12) | 0x4330000000000000u;
    double v;
    memcpy(&v, &bits, sizeof v);
    return ((v - 4503599627370496.0) + 0.5) * 0x1p-52;
}

/* A 64-bit key whose decreasing order is the rank order: the logit's bits
 * made monotone (-0.0 counts as +0.0) above the complemented id. */
static inline uint64_t pico__rank_key(float z, uint32_t id)
{
    float zz = z + 0.0f;
    uint32_t u;
    memcpy(&u, &zz, sizeof u);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return ((uint64_t)u << 32) | (uint32_t)~id;
}

/* The id a rank key was built from. */
static inline uint32_t pico__key_id(uint64_t key)
{
    return ~(uint32_t)key;
}

/* Validates z[0..n) (no NaN or +inf, not all -inf) while collecting its r
 * rank-first ids (1 <= r <= min(n, PICO_MAX_K)) into ids/vals in rank order. */
int pico__scan_top(const float *z, size_t n, uint32_t r, int32_t *ids, float *vals);

/* Rearranges a[0..n) so that a[0..m) holds its m largest keys, in decreasing
 * order if sorted is non-zero; a[m..n) keeps the rest (keys are distinct). */
void pico__partial_sort(uint64_t *a, size_t n, size_t m, int sorted);

/* Striped sum (header: "Striped sum") of w_i = pico_exp((z_i - m) / t) over
 * all of z[0..n); w_out, if not NULL, receives every w_i. */
double pico__striped_exp(const float *z, size_t n, double m, double t, double *w_out);

/* pico__striped_exp without w_out, stopping early (and setting *exceeded)
 * once top_p * (the sum so far) > c_max, which proves top_p * Z > c_max. */
double pico__striped_exp_bounded(const float *z, size_t n, double m, double t, double top_p,
                                 double c_max, int *exceeded);

/* Striped sum of w over the ids i < n whose bit is set in member; w_out, if
 * not NULL, receives w_i for members and 0.0 for the others. */
double pico__striped_exp_subset(const float *z, size_t n, double m, double t,
                                const uint64_t *member, double *w_out);

/* What the transform keeps of a row (non-greedy). */
typedef struct {
    double m;        /* the largest logit */
    uint32_t first;  /* the rank-first id */
    double t;        /* temperature */
    size_t n_k;      /* |C| */
    size_t n_s;      /* |S| */
    double z_s;      /* Z_S (only when asked for) */
    uint64_t *keys;  /* NULL when S is every id; else keys[0..n_s) are S's rank keys */
} pico_support;

/* Checks the transform's parameters, vocabulary size and scratch buffer. */
int pico__check_transform(const float *logits, size_t vocab, const pico_sampling *p, void *work,
                          size_t work_size);

/* Finds S (non-greedy); with w_out it also fills w_out with w_i for the ids
 * of C (0 elsewhere) and sets z_s. Validates the logits. */
int pico__find_support(const float *z, size_t vocab, const pico_sampling *p, void *work,
                       double *w_out, pico_support *s);

/* The scratch buffer's 8-byte aligned start. */
static inline uint64_t *pico__work_keys(void *work)
{
    uintptr_t a = ((uintptr_t)work + 7) & ~(uintptr_t)7;
    return (uint64_t *)a;
}

/* ((((((l0 + l1) + l2) + l3) + l4) + l5) + l6) + l7. */
static inline double pico__lanes_total(const double *lane)
{
    return ((((((lane[0] + lane[1]) + lane[2]) + lane[3]) + lane[4]) + lane[5]) + lane[6]) +
           lane[7];
}

#endif /* PICOSPEC_INTERNAL_H */
