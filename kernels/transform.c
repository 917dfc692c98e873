/*
 * The sampling transform (header: "THE SAMPLING TRANSFORM"): parameter
 * checks, the support S, the drafter's quantised top-K and the dense
 * distribution.
 */
#include <float.h>
#include <math.h>

#include "internal.h"

/* Bytes of scratch memory: rank keys, a membership bitmap, alignment slack. */
size_t pico_work_size(size_t vocab)
{
    if (vocab == 0 || vocab > PICO_MAX_VOCAB)
        return 0;
    return 8 * vocab + 8 * ((vocab + 63) / 64) + 8;
}

/* Checks the parameters, the vocabulary size and the scratch buffer. */
int pico__check_transform(const float *logits, size_t vocab, const pico_sampling *p, void *work,
                          size_t work_size)
{
    if (!logits || !p || vocab == 0 || vocab > PICO_MAX_VOCAB)
        return PICO_E_ARG;
    if (!(p->temperature >= 0.0 && p->temperature <= DBL_MAX) || p->top_k < 0 ||
        !(p->top_p > 0.0 && p->top_p <= 1.0) || !(p->min_p >= 0.0 && p->min_p <= 1.0))
        return PICO_E_ARG;
    if (!work || work_size < pico_work_size(vocab))
        return PICO_E_SPACE;
    return PICO_OK;
}

/* |C|: the top-k size. */
static size_t top_k_size(const pico_sampling *p, size_t vocab)
{
    return (p->top_k == 0 || (size_t)p->top_k >= vocab) ? vocab : (size_t)p->top_k;
}

/* Z_k over C = the n_k rank-first ids (n_k < vocab), through the scratch
 * buffer: keys of every id, the n_k largest selected, a bitmap of them. On
 * return keys[0..n_k) are C's keys (unordered). */
static double z_k_subset(const float *z, size_t vocab, double m, double t, size_t n_k,
                         uint64_t *keys, double *w_out)
{
    uint64_t *member = keys + vocab;
    size_t i;
    for (i = 0; i < vocab; i++)
        keys[i] = pico__rank_key(z[i], (uint32_t)i);
    pico__partial_sort(keys, vocab, n_k, 0);
    memset(member, 0, 8 * ((vocab + 63) / 64));
    for (i = 0; i < n_k; i++) {
        uint32_t id = pico__key_id(keys[i]);
        member[id / 64] |= (uint64_t)1 << (id % 64);
    }
    return pico__striped_exp_subset(z, vocab, m, t, member, w_out);
}

/* Finds S (non-greedy) for the dense output and the Gumbel sample. With w_out
 * it also fills w_out with w_i for the ids of C (0 elsewhere) and sets z_s.
 * The rank order is sorted only as far as the top-p / min-p walk reaches. */
int pico__find_support(const float *z, size_t vocab, const pico_sampling *p, void *work,
                       double *w_out, pico_support *s)
{
    int32_t first_id;
    float first_val;
    int st = pico__scan_top(z, vocab, 1, &first_id, &first_val);
    int walk = p->top_p < 1.0 || p->min_p > 0.0;
    double z_k = 0.0, c = 0.0, target;
    size_t sorted = 0, chunk = 256, j;
    uint64_t *keys = pico__work_keys(work);
    if (st != PICO_OK)
        return st;
    s->m = (double)first_val;
    s->first = (uint32_t)first_id;
    s->t = p->temperature;
    s->n_k = top_k_size(p, vocab);
    s->n_s = s->n_k;
    s->keys = NULL;
    if (s->n_k < vocab) {
        z_k = z_k_subset(z, vocab, s->m, s->t, s->n_k, keys, w_out);
        s->keys = keys;
    } else if (w_out || p->top_p < 1.0) {
        z_k = pico__striped_exp(z, vocab, s->m, s->t, w_out);
    }
    s->z_s = z_k;
    if (!walk)
        return PICO_OK;
    if (!s->keys) {
        for (j = 0; j < vocab; j++)
            keys[j] = pico__rank_key(z[j], (uint32_t)j);
        s->keys = keys;
    }
    target = p->top_p * z_k;
    for (j = 0; j < s->n_k; j++) {
        uint32_t id;
        double w;
        if (j == sorted) {
            size_t want = s->n_k - sorted < chunk ? s->n_k : sorted + chunk;
            pico__partial_sort(keys + sorted, s->n_k - sorted, want - sorted, 1);
            sorted = want;
            chunk *= 4;
        }
        id = pico__key_id(keys[j]);
        w = w_out ? w_out[id] : pico__exp(((double)z[id] - s->m) / s->t);
        if (p->min_p > 0.0 && w < p->min_p)
            break;
        c += w;
        if (p->top_p < 1.0 && c >= target) {
            j++;
            break;
        }
    }
    if (j < s->n_k) {
        s->n_s = j;
        s->z_s = c;
    }
    return PICO_OK;
}

/* The dense transformed distribution. */
int pico_transform_dense(const float *logits, size_t vocab, const pico_sampling *params,
                         void *work, size_t work_size, double *out_probs)
{
    pico_support s;
    int st = pico__check_transform(logits, vocab, params, work, work_size);
    size_t i;
    if (st == PICO_OK && !out_probs)
        st = PICO_E_ARG;
    if (st != PICO_OK)
        return st;
    if (params->temperature == 0.0) {
        int32_t id;
        float v;
        st = pico__scan_top(logits, vocab, 1, &id, &v);
        if (st != PICO_OK)
            return st;
        memset(out_probs, 0, vocab * sizeof *out_probs);
        out_probs[id] = 1.0;
        return PICO_OK;
    }
    st = pico__find_support(logits, vocab, params, work, out_probs, &s);
    if (st != PICO_OK)
        return st;
    if (!s.keys) {
        for (i = 0; i < vocab; i++)
            out_probs[i] = out_probs[i] / s.z_s;
    } else {
        uint64_t lowest = s.keys[0];
        for (i = 1; i < s.n_s; i++)
            lowest = s.keys[i] < lowest ? s.keys[i] : lowest;
        for (i = 0; i < vocab; i++) {
            int in_s = pico__rank_key(logits[i], (uint32_t)i) >= lowest;
            out_probs[i] = in_s ? out_probs[i] / s.z_s : 0.0;
        }
    }
    return PICO_OK;
}

/* Sorts the first n (id, weight) pairs by increasing id (n <= PICO_MAX_K). */
static void sort_by_id(int32_t *ids, double *w, size_t n)
{
    size_t i;
    for (i = 1; i < n; i++) {
        int32_t id = ids[i];
        double v = w[i];
        size_t j = i;
        while (j > 0 && ids[j - 1] > id) {
            ids[j] = ids[j - 1];
            w[j] = w[j - 1];
            j--;
        }
        ids[j] = id;
        w[j] = v;
    }
}

/* Striped sum of the weights of n ids, any order (n <= PICO_MAX_K). */
static double striped_small(const int32_t *ids, const double *w, size_t n)
{
    int32_t sid[PICO_MAX_K];
    double sw[PICO_MAX_K];
    double lane[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
    size_t i;
    memcpy(sid, ids, n * sizeof *sid);
    memcpy(sw, w, n * sizeof *sw);
    sort_by_id(sid, sw, n);
    for (i = 0; i < n; i++)
        lane[sid[i] & 7] += sw[i];
    return pico__lanes_total(lane);
}

/* Quantises the weights w[0..n) (rank order) to counts summing to 65536,
 * drops zero counts and writes the result. */
static void quantise(const int32_t *ids, const double *w, uint32_t n, int32_t *out_ids,
                     uint32_t *out_counts, uint32_t *out_n)
{
    uint32_t counts[PICO_MAX_K];
    double zk = 0.0;
    uint32_t sum = 0, rest, j, kept = 0;
    for (j = 0; j < n; j++)
        zk += w[j];
    for (j = 0; j < n; j++) {
        counts[j] = (uint32_t)floor((w[j] / zk) * 65536.0);
        sum += counts[j];
    }
    rest = PICO_Q_ONE - sum;
    for (j = 0; j < n; j++) {
        uint32_t c = counts[j] + rest / n + (j < rest % n ? 1u : 0u);
        if (c > 0) {
            out_ids[kept] = ids[j];
            out_counts[kept] = c;
            kept++;
        }
    }
    *out_n = kept;
}

/* The drafter's hot path. With top_p == 1 it needs only the top min(k, n_k)
 * logits and their exps; top_p < 1 adds one vectorised pass for Z_k. */
int pico_transform_topk(const float *logits, size_t vocab, const pico_sampling *params,
                        uint32_t k, void *work, size_t work_size, int32_t *out_ids,
                        uint32_t *out_counts, uint32_t *out_n)
{
    int32_t ids[PICO_MAX_K];
    float vals[PICO_MAX_K];
    double w[PICO_MAX_K];
    size_t n_k;
    uint32_t r, scan, n, j;
    double m, t;
    int st = pico__check_transform(logits, vocab, params, work, work_size);
    if (st == PICO_OK && (k == 0 || k > PICO_MAX_K || !out_ids || !out_counts || !out_n))
        st = PICO_E_ARG;
    if (st != PICO_OK)
        return st;
    t = params->temperature;
    n_k = top_k_size(params, vocab);
    r = t == 0.0 ? 1 : (uint32_t)(n_k < k ? n_k : k);
    /* a small C is collected whole: its ids give Z_k without scratch memory */
    scan = (t > 0.0 && params->top_p < 1.0 && n_k < vocab && n_k <= PICO_MAX_K) ? (uint32_t)n_k
                                                                                : r;
    st = pico__scan_top(logits, vocab, scan, ids, vals);
    if (st != PICO_OK)
        return st;
    if (t == 0.0) {
        out_ids[0] = ids[0];
        out_counts[0] = PICO_Q_ONE;
        *out_n = 1;
        return PICO_OK;
    }
    m = (double)vals[0];
    for (j = 0; j < scan; j++)
        w[j] = pico__exp(((double)vals[j] - m) / t);
    n = r;
    if (params->min_p > 0.0) {
        for (j = 0; j < n; j++) {
            if (w[j] < params->min_p) {
                n = j;
                break;
            }
        }
    }
    if (params->top_p < 1.0) {
        double z_k, target, c = 0.0, c_n = 0.0;
        int exceeded = 0;
        for (j = 0; j < n; j++)
            c_n += w[j];
        if (n_k == vocab)
            z_k = pico__striped_exp_bounded(logits, vocab, m, t, params->top_p, c_n, &exceeded);
        else if (scan == n_k)
            z_k = striped_small(ids, w, n_k);
        else
            z_k = z_k_subset(logits, vocab, m, t, n_k, pico__work_keys(work), NULL);
        /* exceeded: the kept mass is below top_p * Z_k, no prefix is cut */
        target = exceeded ? INFINITY : params->top_p * z_k;
        for (j = 0; j < n; j++) {
            c += w[j];
            if (c >= target) {
                n = j + 1;
                break;
            }
        }
    }
    quantise(ids, w, n, out_ids, out_counts, out_n);
    return PICO_OK;
}
