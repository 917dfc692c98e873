/*
 * pico_exp and the full-vocabulary weight sums built on it: the only loops
 * that touch every logit with floating-point work, written to vectorise.
 */
#include "internal.h"

#define PICO_BLOCK 256

/* pico_exp as defined in the header. */
double pico_exp(double x)
{
    return x == x ? pico__exp(x) : 0.0; /* NaN -> 0 */
}

/* Weights of one block: w[j] = pico_exp((z[j] - m) / t), j < len. */
static inline void block_weights(const float *z, size_t len, double m, double t, double *w)
{
    size_t j;
    for (j = 0; j < len; j++)
        w[j] = pico__exp(((double)z[j] - m) / t);
}

/* Adds w[0..len) of a block starting at a multiple of 8 into the eight lanes. */
static inline void block_lanes(const double *w, size_t len, double *lane)
{
    size_t j = 0, l;
    for (; j + 8 <= len; j += 8)
        for (l = 0; l < 8; l++)
            lane[l] += w[j + l];
    for (; j < len; j++)
        lane[j & 7] += w[j];
}

/* Striped weight sum over all ids, optionally storing the weights. */
PICO_CLONES
double pico__striped_exp(const float *z, size_t n, double m, double t, double *w_out)
{
    double lane[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
    double buf[PICO_BLOCK];
    size_t i;
    for (i = 0; i < n; i += PICO_BLOCK) {
        size_t len = n - i < PICO_BLOCK ? n - i : PICO_BLOCK;
        double *w = w_out ? w_out + i : buf;
        block_weights(z + i, len, m, t, w);
        block_lanes(w, len, lane);
    }
    return pico__lanes_total(lane);
}

/* Striped weight sum over all ids that gives up early, setting *exceeded, as
 * soon as top_p times the sum so far is above c_max. Weights are >= 0 and
 * IEEE addition and multiplication are monotone, so a partial sum bounds the
 * final Z from below: every top-p prefix sum <= c_max then falls short of
 * top_p * Z, whatever the rest of the row holds. */
PICO_CLONES
double pico__striped_exp_bounded(const float *z, size_t n, double m, double t, double top_p,
                                 double c_max, int *exceeded)
{
    double lane[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
    double buf[PICO_BLOCK];
    size_t i;
    *exceeded = 0;
    for (i = 0; i < n; i += PICO_BLOCK) {
        size_t len = n - i < PICO_BLOCK ? n - i : PICO_BLOCK;
        block_weights(z + i, len, m, t, buf);
        block_lanes(buf, len, lane);
        if (top_p * pico__lanes_total(lane) > c_max) {
            *exceeded = 1;
            break;
        }
    }
    return pico__lanes_total(lane);
}

/* Striped weight sum over the member ids, walking the bitmap a word at a time. */
double pico__striped_exp_subset(const float *z, size_t n, double m, double t,
                                const uint64_t *member, double *w_out)
{
    double lane[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
    size_t word;
    if (w_out)
        memset(w_out, 0, n * sizeof *w_out);
    for (word = 0; word < (n + 63) / 64; word++) {
        uint64_t bits = member[word];
        while (bits) {
            size_t i = word * 64 + pico__ctz64(bits);
            double w = pico__exp(((double)z[i] - m) / t);
            lane[i & 7] += w;
            if (w_out)
                w_out[i] = w;
            bits &= bits - 1;
        }
    }
    return pico__lanes_total(lane);
}
