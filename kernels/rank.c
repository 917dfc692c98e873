/*
 * The rank order (header: "Rank order"): the streaming top-r scan used by the
 * drafter's hot path, and an in-place partial sort of rank keys used when a
 * longer prefix of the order is needed (top-p, min-p, large top-k).
 */
#include <float.h>
#include <math.h>

#include "internal.h"

#define PICO_SCAN_BLOCK 64
#define PICO_SAMPLE 512

/* Inserts (id, v) into the sorted top list of length len (< cap) or, when the
 * list is full, in place of its last entry. Equal values keep earlier ids
 * first because ids arrive in increasing order. */
static void top_insert(int32_t *ids, float *vals, uint32_t len, uint32_t cap, int32_t id, float v)
{
    uint32_t pos = len < cap ? len : cap - 1;
    while (pos > 0 && vals[pos - 1] < v) {
        vals[pos] = vals[pos - 1];
        ids[pos] = ids[pos - 1];
        pos--;
    }
    vals[pos] = v;
    ids[pos] = id;
}

/* Non-zero if z[0..len) holds NaN or +inf. */
static inline int block_bad(const float *z, size_t len)
{
    int bad = 0;
    size_t j;
    for (j = 0; j < len; j++)
        bad |= !(z[j] <= FLT_MAX);
    return bad;
}

/* Validation and the r rank-first ids in one pass over the logits. A block is
 * looked at element by element only if one of its logits beats the current
 * r-th best, which after a short warm-up almost never happens. */
PICO_CLONES
int pico__scan_top(const float *z, size_t n, uint32_t r, int32_t *ids, float *vals)
{
    size_t i;
    for (i = 0; i < r; i++) {
        if (!(z[i] <= FLT_MAX) && z[i] != -INFINITY)
            return PICO_E_NONFINITE;
        top_insert(ids, vals, (uint32_t)i, r, (int32_t)i, z[i]);
    }
    while (i < n) {
        size_t len = n - i < PICO_SCAN_BLOCK ? n - i : PICO_SCAN_BLOCK;
        float thr = vals[r - 1];
        int hit = 0, bad = 0;
        size_t j;
        for (j = 0; j < len; j++) {
            hit |= z[i + j] > thr;
            bad |= !(z[i + j] <= FLT_MAX) && z[i + j] != -INFINITY;
        }
        if (bad)
            return PICO_E_NONFINITE;
        if (hit) {
            for (j = 0; j < len; j++) {
                if (z[i + j] > vals[r - 1])
                    top_insert(ids, vals, r, r, (int32_t)(i + j), z[i + j]);
            }
        }
        i += len;
    }
    if (vals[0] == -INFINITY)
        return PICO_E_NONFINITE;
    return PICO_OK;
}

/* Exchanges two keys. */
static inline void swap_keys(uint64_t *a, uint64_t *b)
{
    uint64_t t = *a;
    *a = *b;
    *b = t;
}

/* Sorts a[0..n) into decreasing order by insertion (small n). */
static void insertion_desc(uint64_t *a, size_t n)
{
    size_t i;
    for (i = 1; i < n; i++) {
        uint64_t v = a[i];
        size_t j = i;
        while (j > 0 && a[j - 1] < v) {
            a[j] = a[j - 1];
            j--;
        }
        a[j] = v;
    }
}

/* Restores the min-heap property below node i of a[0..n). */
static void sift_down(uint64_t *a, size_t n, size_t i)
{
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            return;
        if (c + 1 < n && a[c + 1] < a[c])
            c++;
        if (a[i] <= a[c])
            return;
        swap_keys(&a[i], &a[c]);
        i = c;
    }
}

/* Sorts a[0..n) into decreasing order by heapsort (the guaranteed fallback). */
static void heapsort_desc(uint64_t *a, size_t n)
{
    size_t i;
    for (i = n / 2; i-- > 0;)
        sift_down(a, n, i);
    for (i = n; i-- > 1;) {
        swap_keys(&a[0], &a[i]);
        sift_down(a, i, 0);
    }
}

/* Next word of a xorshift generator that picks pivots (fixed seed: any
 * pivot gives the same result; randomness only keeps partitions balanced). */
static size_t next_pick(uint64_t *state, size_t n)
{
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return (size_t)(*state % n);
}

/* Partitions a[0..n) (n >= 3) around the median of three random keys, keys
 * greater than the pivot first (Hoare's scheme). Returns the pivot's index. */
static size_t partition_desc(uint64_t *a, size_t n, uint64_t *state)
{
    size_t p0 = next_pick(state, n), p1 = next_pick(state, n), p2 = next_pick(state, n);
    size_t i = 0, j = n, mid;
    uint64_t pivot;
    if ((a[p0] < a[p1]) != (a[p0] < a[p2]))
        mid = p0;
    else if ((a[p1] < a[p0]) != (a[p1] < a[p2]))
        mid = p1;
    else
        mid = p2;
    swap_keys(&a[0], &a[mid]);
    pivot = a[0];
    for (;;) {
        while (a[++i] > pivot)
            if (i == n - 1)
                break;
        while (a[--j] < pivot)
            ;
        if (i >= j)
            break;
        swap_keys(&a[i], &a[j]);
    }
    swap_keys(&a[0], &a[j]);
    return j;
}

/* Quickselect / partial quicksort with a depth limit (introselect). */
static void partial_sort_rec(uint64_t *a, size_t n, size_t m, int sorted, int depth,
                             uint64_t *state)
{
    while (n > 16 && m > 0) {
        size_t p;
        if (depth-- <= 0) {
            heapsort_desc(a, n);
            return;
        }
        p = partition_desc(a, n, state);
        if (m <= p) {
            if (m == p && !sorted)
                return;
            n = p;
            continue;
        }
        if (sorted)
            partial_sort_rec(a, p, p, 1, depth, state);
        a += p + 1;
        n -= p + 1;
        m -= p + 1;
    }
    if (m > 0)
        insertion_desc(a, n);
}

/* The m largest keys to the front (sorted if asked). When m is small next
 * to n, a threshold taken from a sorted random sample first moves the keys
 * above it to the front in one pass whose branch is almost never taken;
 * the selection then runs on those few. */
void pico__partial_sort(uint64_t *a, size_t n, size_t m, int sorted)
{
    uint64_t state = 0x9E3779B97F4A7C15u, sample[PICO_SAMPLE];
    size_t depth_n, q, i, front = 0;
    int depth = 0;
    if (m > n)
        m = n;
    if (n >= 16 * PICO_SAMPLE && m <= n / 16) {
        for (i = 0; i < PICO_SAMPLE; i++)
            sample[i] = a[next_pick(&state, n)];
        heapsort_desc(sample, PICO_SAMPLE);
        q = (size_t)((double)m / (double)n * 2.0 * PICO_SAMPLE) + 8;
        if (q < PICO_SAMPLE) {
            for (i = 0; i < n; i++) {
                if (a[i] >= sample[q])
                    swap_keys(&a[i], &a[front++]);
            }
            if (front >= m)
                n = front; /* the m largest are all in a[0..front) */
        }
    }
    for (depth_n = n; depth_n > 1; depth_n >>= 1)
        depth += 2;
    partial_sort_rec(a, n, m, sorted, depth, &state);
}
