/*
 * Unit tests of the C kernels, run by ctest (one ctest per test function:
 * `test_kernels NAME`; with no argument every test runs). Known answers come
 * from codec/reference.py; the Python tests compare the two in bulk.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "picospec_kernels.h"

static int failures;

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
            failures++;                                                        \
        }                                                                      \
    } while (0)

/* A deterministic pseudo-random generator for test data (xorshift64). */
static uint64_t rng_state = 0x9E3779B97F4A7C15u;

/* Next pseudo-random 64-bit word. */
static uint64_t next_u64(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* A pseudo-random double in [0, 1). */
static double next_unit(void)
{
    return (double)(next_u64() >> 11) * 0x1p-53;
}

/* A sampling parameter set. */
static pico_sampling params(double t, int32_t top_k, double top_p, double min_p)
{
    pico_sampling p;
    p.temperature = t;
    p.top_k = top_k;
    p.top_p = top_p;
    p.min_p = min_p;
    return p;
}

/* pico_exp: exact at 0, the reference's values, close to libm, 0 off-domain. */
static void test_exp_values(void)
{
    int i;
    double worst = 0.0;
    CHECK(pico_exp(0.0) == 1.0);
    CHECK(pico_exp(-0.0) == 1.0);
    CHECK(pico_exp(-1.0) == 0.36787944117144233);
    CHECK(pico_exp(-0.5) == 0.6065306597126334);
    CHECK(pico_exp(-10.0) == 4.539992976248485e-05);
    CHECK(pico_exp(-699.5) == 1.6255858439919858e-304);
    CHECK(pico_exp(-700.0) > 0.0);
    CHECK(pico_exp(-700.0000001) == 0.0);
    CHECK(pico_exp(-INFINITY) == 0.0);
    CHECK(pico_exp(NAN) == 0.0);
    for (i = 0; i < 200000; i++) {
        double x = -700.0 * next_unit();
        double rel = fabs(pico_exp(x) / exp(x) - 1.0);
        worst = rel > worst ? rel : worst;
    }
    CHECK(worst < 1e-15);
}

/* Every status has a name, unknown codes too. */
static void test_strerror(void)
{
    int s;
    for (s = -7; s <= 1; s++)
        CHECK(pico_strerror(s) != NULL && strlen(pico_strerror(s)) > 0);
    CHECK(strcmp(pico_strerror(PICO_E_CORRUPT), "corrupt record") == 0);
}

/* Keys and uniforms equal the reference's and depend only on the counter. */
static void test_keyed_values(void)
{
    double u[9], one;
    size_t i;
    uint64_t k = pico_key(1, 2, 3);
    CHECK(k == 0x29b8940f969e33b4u);
    CHECK(pico_key(0, 0, 0) == 0xef3a6a52052fb9ffu);
    CHECK(pico_key(1, 2, 4) != k && pico_key(1, 3, 3) != k && pico_key(2, 2, 3) != k);
    pico_uniforms(k, 0, 9, u);
    CHECK(u[0] == 0.7242802594324654);
    CHECK(u[1] == 0.15315147774596938);
    CHECK(u[2] == 0.8270631051342311);
    CHECK(u[7] == 0.37520100087641783);
    pico_uniforms(k, 7, 1, &one);
    CHECK(one == u[7]);
    for (i = 0; i < 9; i++)
        CHECK(u[i] > 0.0 && u[i] < 1.0);
}

/* The q16 bytes of a small record equal the reference's. */
static void test_sparse_known_bytes(void)
{
    const int32_t ids[3] = {5, 3, 0};
    const uint32_t counts[3] = {60000, 5000, 536};
    const uint8_t want[9] = {2, 253, 82, 223, 225, 4, 46, 4, 0};
    uint8_t out[16];
    size_t len = 0;
    CHECK(pico_sparse_size(3, 7) == 9);
    CHECK(pico_sparse_encode(ids, counts, 3, 7, out, sizeof out, &len) == PICO_OK);
    CHECK(len == 9 && memcmp(out, want, 9) == 0);
    CHECK(pico_sparse_size(0, 7) == 0 && pico_sparse_size(257, 7) == 0);
    CHECK(pico_sparse_size(1, 0) == 0);
    CHECK(pico_sparse_size(1, 1) == 1 + 3); /* B = 1: 17 bits */
}

/* Fills a random valid record of n distinct ids below vocab. */
static void random_record(uint32_t n, size_t vocab, int32_t *ids, uint32_t *counts)
{
    uint32_t i, j, left = PICO_Q_ONE - n;
    for (i = 0; i < n; i++) {
        int fresh;
        do {
            ids[i] = (int32_t)(next_u64() % vocab);
            fresh = 1;
            for (j = 0; j < i; j++)
                fresh &= ids[j] != ids[i];
        } while (!fresh);
        counts[i] = 1;
    }
    for (i = 0; i + 1 < n; i++) {
        uint32_t extra = (uint32_t)(next_u64() % (left + 1));
        counts[i] += extra;
        left -= extra;
    }
    counts[n - 1] += left;
}

/* decode(encode(x)) == x for many vocabularies and sizes. */
static void test_sparse_round_trip(void)
{
    static const size_t vocabs[] = {1, 2, 7, 8, 9, 255, 256, 257, 50000, 262144, (size_t)1 << 31};
    static const uint32_t sizes[] = {1, 2, 3, 7, 8, 64, 255, 256};
    size_t v, s;
    for (v = 0; v < sizeof vocabs / sizeof *vocabs; v++) {
        for (s = 0; s < sizeof sizes / sizeof *sizes; s++) {
            int32_t ids[PICO_MAX_K], dids[PICO_MAX_K];
            uint32_t counts[PICO_MAX_K], dcounts[PICO_MAX_K], n = sizes[s], dn = 0;
            uint8_t buf[2048];
            size_t len = 0, used = 0;
            if (n > vocabs[v])
                continue;
            random_record(n, vocabs[v], ids, counts);
            CHECK(pico_sparse_encode(ids, counts, n, vocabs[v], buf, sizeof buf, &len) == PICO_OK);
            CHECK(len == pico_sparse_size(n, vocabs[v]));
            CHECK(pico_sparse_decode(buf, len + 5, vocabs[v], dids, dcounts, PICO_MAX_K, &dn,
                                     &used) == PICO_OK);
            CHECK(dn == n && used == len);
            CHECK(memcmp(ids, dids, n * sizeof *ids) == 0);
            CHECK(memcmp(counts, dcounts, n * sizeof *counts) == 0);
        }
    }
}

/* The encoder refuses what the decoder would refuse, and small buffers. */
static void test_sparse_encode_rejects(void)
{
    int32_t ids[2] = {1, 2};
    uint32_t counts[2] = {65535, 1};
    uint8_t out[64];
    size_t len;
    CHECK(pico_sparse_encode(ids, counts, 2, 3, out, sizeof out, &len) == PICO_OK);
    CHECK(pico_sparse_encode(ids, counts, 2, 3, out, 3, &len) == PICO_E_SPACE);
    CHECK(pico_sparse_encode(ids, counts, 0, 3, out, sizeof out, &len) == PICO_E_ARG);
    CHECK(pico_sparse_encode(ids, counts, 2, 2, out, sizeof out, &len) == PICO_E_ARG);
    CHECK(pico_sparse_encode(ids, counts, 2, 0, out, sizeof out, &len) == PICO_E_ARG);
    ids[1] = 1;
    CHECK(pico_sparse_encode(ids, counts, 2, 3, out, sizeof out, &len) == PICO_E_ARG);
    ids[1] = -1;
    CHECK(pico_sparse_encode(ids, counts, 2, 3, out, sizeof out, &len) == PICO_E_ARG);
    ids[1] = 2;
    counts[1] = 0;
    CHECK(pico_sparse_encode(ids, counts, 2, 3, out, sizeof out, &len) == PICO_E_ARG);
    counts[1] = 2;
    CHECK(pico_sparse_encode(ids, counts, 2, 3, out, sizeof out, &len) == PICO_E_ARG);
    counts[0] = 65537;
    counts[1] = 1;
    CHECK(pico_sparse_encode(ids, counts, 2, 3, out, sizeof out, &len) == PICO_E_ARG);
}

/* The decoder reports short buffers, small capacity and each corruption. */
static void test_sparse_decode_rejects(void)
{
    const int32_t ids[3] = {5, 3, 0};
    const uint32_t counts[3] = {60000, 5000, 536};
    int32_t dids[PICO_MAX_K];
    uint32_t dcounts[PICO_MAX_K], dn;
    uint8_t buf[16], bad[16];
    size_t len, used, cut;
    CHECK(pico_sparse_encode(ids, counts, 3, 7, buf, sizeof buf, &len) == PICO_OK);
    for (cut = 0; cut < len; cut++)
        CHECK(pico_sparse_decode(buf, cut, 7, dids, dcounts, PICO_MAX_K, &dn, &used) ==
              PICO_E_TRUNCATED);
    CHECK(pico_sparse_decode(buf, len, 7, dids, dcounts, 2, &dn, &used) == PICO_E_SPACE);
    CHECK(pico_sparse_decode(buf, len, 5, dids, dcounts, PICO_MAX_K, &dn, &used) ==
          PICO_E_CORRUPT); /* same B, but id 5 is outside a vocabulary of 5 */
    CHECK(pico_sparse_decode(buf, len, 0, dids, dcounts, PICO_MAX_K, &dn, &used) == PICO_E_ARG);
    memcpy(bad, buf, len);
    bad[len - 1] |= 0x80; /* a padding bit */
    CHECK(pico_sparse_decode(bad, len, 7, dids, dcounts, PICO_MAX_K, &dn, &used) ==
          PICO_E_CORRUPT);
    memcpy(bad, buf, len);
    bad[1] = (uint8_t)((bad[1] & ~7u) | 7u); /* first id 5 -> 7 >= vocab */
    CHECK(pico_sparse_decode(bad, len, 7, dids, dcounts, PICO_MAX_K, &dn, &used) ==
          PICO_E_CORRUPT);
    memcpy(bad, buf, len);
    bad[1] = (uint8_t)((bad[1] & ~7u) | 3u); /* first id 5 -> 3, a repeat */
    CHECK(pico_sparse_decode(bad, len, 7, dids, dcounts, PICO_MAX_K, &dn, &used) ==
          PICO_E_CORRUPT);
    memcpy(bad, buf, len);
    bad[2] ^= 0x01; /* a count bit: the sum is off */
    CHECK(pico_sparse_decode(bad, len, 7, dids, dcounts, PICO_MAX_K, &dn, &used) ==
          PICO_E_CORRUPT);
}

/* Any single bit flip of a record decodes to a valid record or an error. */
static void test_sparse_bit_flips(void)
{
    int32_t ids[40], dids[PICO_MAX_K];
    uint32_t counts[40], dcounts[PICO_MAX_K], dn;
    uint8_t buf[256];
    size_t len, used, bit;
    random_record(40, 1000, ids, counts);
    CHECK(pico_sparse_encode(ids, counts, 40, 1000, buf, sizeof buf, &len) == PICO_OK);
    for (bit = 0; bit < 8 * len; bit++) {
        int st;
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        st = pico_sparse_decode(buf, len, 1000, dids, dcounts, PICO_MAX_K, &dn, &used);
        if (st == PICO_OK) {
            uint32_t i, sum = 0;
            for (i = 0; i < dn; i++)
                sum += dcounts[i];
            CHECK(sum == PICO_Q_ONE && used <= len);
        } else {
            CHECK(st == PICO_E_CORRUPT || st == PICO_E_TRUNCATED);
        }
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
}

/* Runs pico_transform_topk with a private work buffer. */
static int topk(const float *z, size_t vocab, pico_sampling p, uint32_t k, int32_t *ids,
                uint32_t *counts, uint32_t *n)
{
    size_t ws = pico_work_size(vocab);
    void *work = malloc(ws);
    int st = pico_transform_topk(z, vocab, &p, k, work, ws, ids, counts, n);
    free(work);
    return st;
}

/* Runs pico_transform_dense with a private work buffer. */
static int dense(const float *z, size_t vocab, pico_sampling p, double *out)
{
    size_t ws = pico_work_size(vocab);
    void *work = malloc(ws);
    int st = pico_transform_dense(z, vocab, &p, work, ws, out);
    free(work);
    return st;
}

/* Runs pico_gumbel_argmax with a private work buffer. */
static int gumbel(const float *z, size_t vocab, pico_sampling p, uint64_t key, int32_t *token)
{
    size_t ws = pico_work_size(vocab);
    void *work = malloc(ws);
    int st = pico_gumbel_argmax(z, vocab, &p, key, work, ws, token);
    free(work);
    return st;
}

static const float small_row[7] = {1.0f, 3.0f, 3.0f, -INFINITY, 0.5f, 2.0f, -1.0f};

/* The quantised top-K of a small row equals the reference's. */
static void test_topk_known_values(void)
{
    int32_t ids[PICO_MAX_K];
    uint32_t counts[PICO_MAX_K], n;
    CHECK(topk(small_row, 7, params(1.0, 0, 1.0, 0.0), 4, ids, counts, &n) == PICO_OK);
    CHECK(n == 4 && ids[0] == 1 && ids[1] == 2 && ids[2] == 5 && ids[3] == 0);
    CHECK(counts[0] == 26181 && counts[1] == 26181 && counts[2] == 9631 && counts[3] == 3543);
    CHECK(topk(small_row, 7, params(0.7, 0, 0.6, 0.0), 8, ids, counts, &n) == PICO_OK);
    CHECK(n == 2 && ids[0] == 1 && ids[1] == 2 && counts[0] == 32768 && counts[1] == 32768);
    CHECK(topk(small_row, 7, params(1.0, 0, 1.0, 0.3), 8, ids, counts, &n) == PICO_OK);
    CHECK(n == 3 && ids[2] == 5 && counts[0] == 27678 && counts[1] == 27677 && counts[2] == 10181);
}

/* Greedy and top_k = 1 keep the rank-first id (lowest id among equal maxima). */
static void test_topk_greedy(void)
{
    int32_t ids[PICO_MAX_K], token;
    uint32_t counts[PICO_MAX_K], n;
    CHECK(topk(small_row, 7, params(0.0, 0, 1.0, 0.0), 8, ids, counts, &n) == PICO_OK);
    CHECK(n == 1 && ids[0] == 1 && counts[0] == PICO_Q_ONE);
    CHECK(topk(small_row, 7, params(1.5, 1, 0.9, 0.1), 8, ids, counts, &n) == PICO_OK);
    CHECK(n == 1 && ids[0] == 1 && counts[0] == PICO_Q_ONE);
    CHECK(gumbel(small_row, 7, params(0.0, 0, 1.0, 0.0), 99, &token) == PICO_OK && token == 1);
    CHECK(gumbel(small_row, 7, params(1.0, 1, 1.0, 0.0), 99, &token) == PICO_OK && token == 1);
}

/* Random rows: counts >= 1 summing to 65536, distinct ids in rank order, and
 * the support equals the dense output's largest entries. */
static void test_topk_properties(void)
{
    static const size_t vocabs[] = {1, 2, 7, 8, 9, 1000, 50000};
    size_t v;
    int trial;
    for (v = 0; v < sizeof vocabs / sizeof *vocabs; v++) {
        size_t vocab = vocabs[v], i;
        float *z = malloc(vocab * sizeof *z);
        double *p = malloc(vocab * sizeof *p);
        for (trial = 0; trial < 8; trial++) {
            pico_sampling sp = params(0.25 + 2.0 * next_unit(), trial % 3 == 0 ? 5 : 0,
                                      trial % 2 ? 0.9 : 1.0, trial % 4 == 3 ? 0.05 : 0.0);
            int32_t ids[PICO_MAX_K];
            uint32_t counts[PICO_MAX_K], n, j, sum = 0;
            double total = 0.0;
            for (i = 0; i < vocab; i++)
                z[i] = (float)(8.0 * next_unit() - 4.0);
            if (trial == 5)
                for (i = 0; i < vocab; i++)
                    z[i] = (float)floor(z[i]); /* many ties */
            CHECK(topk(z, vocab, sp, 16, ids, counts, &n) == PICO_OK);
            CHECK(n >= 1 && n <= 16);
            for (j = 0; j < n; j++) {
                CHECK(counts[j] >= 1);
                sum += counts[j];
                if (j > 0)
                    CHECK(z[ids[j - 1]] > z[ids[j]] ||
                          (z[ids[j - 1]] == z[ids[j]] && ids[j - 1] < ids[j]));
            }
            CHECK(sum == PICO_Q_ONE);
            CHECK(dense(z, vocab, sp, p) == PICO_OK);
            for (i = 0; i < vocab; i++)
                total += p[i];
            CHECK(fabs(total - 1.0) < 1e-12);
            for (j = 0; j < n; j++)
                CHECK(p[ids[j]] > 0.0);
        }
        free(z);
        free(p);
    }
}

/* Bad parameters, bad logits and a small work buffer are refused. */
static void test_transform_rejects(void)
{
    float z[4] = {0.0f, 1.0f, 2.0f, 3.0f};
    int32_t ids[PICO_MAX_K];
    uint32_t counts[PICO_MAX_K], n;
    double p[4];
    pico_sampling ok = params(1.0, 0, 1.0, 0.0);
    char work[256];
    CHECK(topk(z, 4, params(-1.0, 0, 1.0, 0.0), 8, ids, counts, &n) == PICO_E_ARG);
    CHECK(topk(z, 4, params(INFINITY, 0, 1.0, 0.0), 8, ids, counts, &n) == PICO_E_ARG);
    CHECK(topk(z, 4, params(NAN, 0, 1.0, 0.0), 8, ids, counts, &n) == PICO_E_ARG);
    CHECK(topk(z, 4, params(1.0, -1, 1.0, 0.0), 8, ids, counts, &n) == PICO_E_ARG);
    CHECK(topk(z, 4, params(1.0, 0, 0.0, 0.0), 8, ids, counts, &n) == PICO_E_ARG);
    CHECK(topk(z, 4, params(1.0, 0, 1.5, 0.0), 8, ids, counts, &n) == PICO_E_ARG);
    CHECK(topk(z, 4, params(1.0, 0, 1.0, -0.1), 8, ids, counts, &n) == PICO_E_ARG);
    CHECK(topk(z, 4, params(1.0, 0, 1.0, 1.1), 8, ids, counts, &n) == PICO_E_ARG);
    CHECK(topk(z, 4, ok, 0, ids, counts, &n) == PICO_E_ARG);
    CHECK(topk(z, 4, ok, PICO_MAX_K + 1, ids, counts, &n) == PICO_E_ARG);
    CHECK(pico_transform_topk(z, 0, &ok, 8, work, sizeof work, ids, counts, &n) == PICO_E_ARG);
    CHECK(pico_transform_topk(z, 4, &ok, 8, work, 1, ids, counts, &n) == PICO_E_SPACE);
    CHECK(pico_transform_dense(z, 4, &ok, NULL, 0, p) == PICO_E_SPACE);
    z[2] = NAN;
    CHECK(topk(z, 4, ok, 8, ids, counts, &n) == PICO_E_NONFINITE);
    CHECK(dense(z, 4, ok, p) == PICO_E_NONFINITE);
    z[2] = INFINITY;
    CHECK(topk(z, 4, params(0.0, 0, 1.0, 0.0), 8, ids, counts, &n) == PICO_E_NONFINITE);
    z[0] = z[1] = z[2] = z[3] = -INFINITY;
    CHECK(topk(z, 4, ok, 8, ids, counts, &n) == PICO_E_NONFINITE);
    CHECK(dense(z, 4, ok, p) == PICO_E_NONFINITE);
}

/* A long row with NaN past the first scan block is still refused. */
static void test_transform_finds_late_nan(void)
{
    size_t vocab = 5000, i;
    float *z = malloc(vocab * sizeof *z);
    int32_t ids[PICO_MAX_K], token;
    uint32_t counts[PICO_MAX_K], n;
    for (i = 0; i < vocab; i++)
        z[i] = (float)i;
    z[4321] = NAN;
    CHECK(topk(z, vocab, params(1.0, 0, 1.0, 0.0), 8, ids, counts, &n) == PICO_E_NONFINITE);
    CHECK(gumbel(z, vocab, params(1.0, 0, 1.0, 0.0), 1, &token) == PICO_E_NONFINITE);
    free(z);
}

/* Dense output: one-hot when greedy, zero outside S, -inf ids get 0. */
static void test_dense_support(void)
{
    double p[7];
    CHECK(dense(small_row, 7, params(0.0, 0, 1.0, 0.0), p) == PICO_OK);
    CHECK(p[1] == 1.0 && p[0] == 0.0 && p[2] == 0.0);
    CHECK(dense(small_row, 7, params(1.0, 3, 1.0, 0.0), p) == PICO_OK);
    CHECK(p[1] > 0.0 && p[2] == p[1] && p[5] > 0.0 && p[0] == 0.0 && p[4] == 0.0);
    CHECK(dense(small_row, 7, params(1.0, 0, 1.0, 0.0), p) == PICO_OK);
    CHECK(p[3] == 0.0 && p[6] > 0.0);
}

/* Gumbel-max samples follow the dense distribution (a loose frequency check). */
static void test_gumbel_frequencies(void)
{
    const float z[5] = {0.0f, 1.0f, -1.0f, 0.5f, -INFINITY};
    pico_sampling sp = params(1.0, 0, 1.0, 0.0);
    double p[5];
    int hits[5] = {0, 0, 0, 0, 0}, i, trials = 40000;
    for (i = 0; i < trials; i++) {
        int32_t token = -1;
        CHECK(gumbel(z, 5, sp, pico_key(7, (uint64_t)i, 5), &token) == PICO_OK);
        if (token >= 0 && token < 5)
            hits[token]++;
    }
    CHECK(dense(z, 5, sp, p) == PICO_OK);
    for (i = 0; i < 5; i++) {
        double sd = sqrt(p[i] * (1.0 - p[i]) / trials);
        CHECK(fabs((double)hits[i] / trials - p[i]) <= 5.0 * sd + 1e-12);
    }
    CHECK(hits[4] == 0);
}

/* Gumbel-max stays inside S when top-p / min-p cut the row. */
static void test_gumbel_inside_support(void)
{
    size_t vocab = 3000, i;
    float *z = malloc(vocab * sizeof *z);
    double *p = malloc(vocab * sizeof *p);
    pico_sampling sp = params(0.7, 0, 0.5, 0.01);
    uint64_t trial;
    for (i = 0; i < vocab; i++)
        z[i] = (float)(6.0 * next_unit());
    CHECK(dense(z, vocab, sp, p) == PICO_OK);
    for (trial = 0; trial < 200; trial++) {
        int32_t token = -1;
        CHECK(gumbel(z, vocab, sp, pico_key(3, trial, 5), &token) == PICO_OK);
        CHECK(token >= 0 && (size_t)token < vocab && p[token] > 0.0);
    }
    free(z);
    free(p);
}

/* Compares two keys for qsort, decreasing. */
static int by_key_desc(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return a < b ? 1 : a > b ? -1 : 0;
}

/* The internal partial sort puts the m largest keys first, in order, and
 * keeps the rest, on random, increasing and decreasing inputs. */
static void test_partial_sort(void)
{
    static const size_t sizes[][2] = {{1, 1},        {17, 5},       {1000, 1000},  {20000, 10},
                                      {20000, 5000}, {100000, 256}, {100000, 1},   {100000, 0},
                                      {65536, 4096}};
    size_t c, i;
    int order;
    for (c = 0; c < sizeof sizes / sizeof *sizes; c++) {
        for (order = 0; order < 3; order++) {
            size_t n = sizes[c][0], m = sizes[c][1];
            uint64_t *a = malloc(n * sizeof *a), *want = malloc(n * sizeof *a);
            for (i = 0; i < n; i++)
                a[i] = order == 0 ? (next_u64() << 20) | i : order == 1 ? i : n - i;
            memcpy(want, a, n * sizeof *a);
            qsort(want, n, sizeof *want, by_key_desc);
            pico__partial_sort(a, n, m, 1);
            CHECK(memcmp(a, want, m * sizeof *a) == 0);
            qsort(a, n, sizeof *a, by_key_desc);
            CHECK(memcmp(a, want, n * sizeof *a) == 0);
            free(a);
            free(want);
        }
    }
}

typedef struct {
    const char *name;
    void (*run)(void);
} test_case;

static const test_case tests[] = {
    {"exp_values", test_exp_values},
    {"strerror", test_strerror},
    {"keyed_values", test_keyed_values},
    {"sparse_known_bytes", test_sparse_known_bytes},
    {"sparse_round_trip", test_sparse_round_trip},
    {"sparse_encode_rejects", test_sparse_encode_rejects},
    {"sparse_decode_rejects", test_sparse_decode_rejects},
    {"sparse_bit_flips", test_sparse_bit_flips},
    {"topk_known_values", test_topk_known_values},
    {"topk_greedy", test_topk_greedy},
    {"topk_properties", test_topk_properties},
    {"transform_rejects", test_transform_rejects},
    {"transform_finds_late_nan", test_transform_finds_late_nan},
    {"dense_support", test_dense_support},
    {"gumbel_frequencies", test_gumbel_frequencies},
    {"gumbel_inside_support", test_gumbel_inside_support},
    {"partial_sort", test_partial_sort},
};

/* Runs the named test, or all of them; exit status 1 on any failure. */
int main(int argc, char **argv)
{
    size_t i, ran = 0;
    for (i = 0; i < sizeof tests / sizeof *tests; i++) {
        if (argc > 1 && strcmp(argv[1], tests[i].name) != 0)
            continue;
        tests[i].run();
        ran++;
    }
    if (ran == 0) {
        fprintf(stderr, "no test named %s\n", argc > 1 ? argv[1] : "(none)");
        return 2;
    }
    if (failures)
        fprintf(stderr, "%d check(s) failed\n", failures);
    return failures ? 1 : 0;
}
