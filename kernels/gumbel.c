/*
 * Gumbel-max sampling over the transformed support S: the id maximising
 * x_i + gumbel(key, i), lowest id on equal scores.
 *
 * Two logarithms per id would dominate a 262k-token row, so a vectorised
 * filter first drops every id that provably cannot reach a known score b:
 * since -log(u) >= 1 - u, an id with 1 - u_i > 1.01 * exp(x_i - b) scores
 * below b - 0.0098, far outside any rounding error. Only the few survivors
 * are scored exactly.
 */
#include <math.h>

#include "internal.h"

#define PICO_GUMBEL_SEEDS 64
#define PICO_FILTER_BLOCK 64

/* The exact Gumbel score of one id. */
static double gumbel_score(const float *z, uint32_t id, double m, double t, uint64_t key)
{
    double x = ((double)z[id] - m) / t;
    return x + -log(-log(pico__uniform(key, id)));
}

/* Writes to out, in increasing order, the ids of S (rank key >= lowest) that
 * may score b or more; returns how many. */
PICO_CLONES
static size_t gumbel_candidates(const float *z, size_t n, double m, double t, uint64_t key,
                                double b, uint64_t lowest, uint32_t *out)
{
    unsigned char keep[PICO_FILTER_BLOCK];
    size_t i, count = 0;
    for (i = 0; i < n; i += PICO_FILTER_BLOCK) {
        size_t len = n - i < PICO_FILTER_BLOCK ? n - i : PICO_FILTER_BLOCK, j;
        int any = 0;
        for (j = 0; j < len; j++) {
            double d = ((double)z[i + j] - m) / t - b, reach, u;
            uint64_t bits;
            int in_s;
            memcpy(&bits, &d, sizeof bits);
            bits &= (uint64_t)0 - (bits >> 63); /* d > 0 becomes 0: exp(d) >= 1 anyway */
            memcpy(&d, &bits, sizeof d);
            reach = 1.01 * pico__exp(d);
            u = pico__uniform(key, i + j);
            in_s = pico__rank_key(z[i + j], (uint32_t)(i + j)) >= lowest;
            keep[j] = (unsigned char)(in_s & (1.0 - u <= reach));
            any |= keep[j];
        }
        if (!any)
            continue;
        for (j = 0; j < len; j++) {
            if (keep[j])
                out[count++] = (uint32_t)(i + j);
        }
    }
    return count;
}

/* Gumbel-max over S: seeds a score from the rank-first ids (all in S), then
 * scores exactly only the ids the filter keeps. */
int pico_gumbel_argmax(const float *logits, size_t vocab, const pico_sampling *params,
                       uint64_t key, void *work, size_t work_size, int32_t *out_token)
{
    pico_support s;
    int32_t seeds[PICO_GUMBEL_SEEDS];
    float vals[PICO_GUMBEL_SEEDS];
    uint64_t lowest = 0;
    uint32_t *cand, r, best_id;
    size_t n, j;
    double best;
    int st = pico__check_transform(logits, vocab, params, work, work_size);
    if (st == PICO_OK && !out_token)
        st = PICO_E_ARG;
    if (st != PICO_OK)
        return st;
    if (params->temperature == 0.0) {
        st = pico__scan_top(logits, vocab, 1, seeds, vals);
        if (st == PICO_OK)
            *out_token = seeds[0];
        return st;
    }
    st = pico__find_support(logits, vocab, params, work, NULL, &s);
    if (st != PICO_OK)
        return st;
    if (s.keys) {
        lowest = s.keys[0];
        for (j = 1; j < s.n_s; j++)
            lowest = s.keys[j] < lowest ? s.keys[j] : lowest;
    }
    r = s.n_s < PICO_GUMBEL_SEEDS ? (uint32_t)s.n_s : PICO_GUMBEL_SEEDS;
    pico__scan_top(logits, vocab, r, seeds, vals); /* S's r rank-first ids */
    best = -INFINITY;
    best_id = UINT32_MAX;
    for (j = 0; j < r + 0u; j++) {
        uint32_t id = (uint32_t)seeds[j];
        double score = gumbel_score(logits, id, s.m, s.t, key);
        if (score > best || (score == best && id < best_id)) {
            best = score;
            best_id = id;
        }
    }
    cand = (uint32_t *)pico__work_keys(work); /* the keys are no longer needed */
    n = gumbel_candidates(logits, vocab, s.m, s.t, key, best, lowest, cand);
    for (j = 0; j < n; j++) {
        double score = gumbel_score(logits, cand[j], s.m, s.t, key);
        if (score > best || (score == best && cand[j] < best_id)) {
            best = score;
            best_id = cand[j];
        }
    }
    *out_token = (int32_t)best_id;
    return PICO_OK;
}
