/*
 * The q16 sparse distribution byte format (header: "SPARSE DISTRIBUTION BYTE
 * FORMAT"): size query, encoder and validating decoder.
 */
#include "internal.h"

/* B: the bit length of vocab - 1, at least 1; 0 for an invalid vocabulary. */
static unsigned id_bits(size_t vocab)
{
    unsigned b = 1;
    if (vocab == 0 || vocab > PICO_MAX_VOCAB)
        return 0;
    while (b < 32 && ((size_t)1 << b) < vocab)
        b++;
    return b;
}

/* Encoded size of n entries; 0 if n or vocab is out of range. */
size_t pico_sparse_size(uint32_t n, size_t vocab)
{
    unsigned b = id_bits(vocab);
    if (b == 0 || n == 0 || n > PICO_MAX_K)
        return 0;
    return 1 + ((size_t)n * (b + 16) + 7) / 8;
}

/* Non-zero if two of ids[0..n) are equal (n <= PICO_MAX_K). */
static int has_repeat(const int32_t *ids, uint32_t n)
{
    int32_t s[PICO_MAX_K];
    uint32_t i;
    for (i = 0; i < n; i++) {
        int32_t v = ids[i];
        uint32_t j = i;
        while (j > 0 && s[j - 1] > v) {
            s[j] = s[j - 1];
            j--;
        }
        if (j > 0 && s[j - 1] == v)
            return 1;
        s[j] = v;
    }
    return 0;
}

/* Encodes one record; rejects (PICO_E_ARG) anything decode would reject. */
int pico_sparse_encode(const int32_t *ids, const uint32_t *counts, uint32_t n, size_t vocab,
                       uint8_t *out, size_t out_cap, size_t *out_len)
{
    unsigned b = id_bits(vocab);
    size_t size = pico_sparse_size(n, vocab), pos = 1;
    uint64_t acc = 0, sum = 0;
    unsigned nacc = 0;
    uint32_t i;
    if (size == 0 || !ids || !counts || !out_len || (out_cap > 0 && !out))
        return PICO_E_ARG;
    for (i = 0; i < n; i++) {
        if (ids[i] < 0 || (size_t)ids[i] >= vocab || counts[i] == 0 || counts[i] > PICO_Q_ONE)
            return PICO_E_ARG;
        sum += counts[i];
    }
    if (sum != PICO_Q_ONE || has_repeat(ids, n))
        return PICO_E_ARG;
    if (out_cap < size)
        return PICO_E_SPACE;
    out[0] = (uint8_t)(n - 1);
    for (i = 0; i < n; i++) {
        acc |= ((uint64_t)(uint32_t)ids[i] | ((uint64_t)(counts[i] - 1) << b)) << nacc;
        nacc += b + 16;
        while (nacc >= 8) {
            out[pos++] = (uint8_t)acc;
            acc >>= 8;
            nacc -= 8;
        }
    }
    if (nacc > 0)
        out[pos++] = (uint8_t)acc;
    *out_len = pos;
    return PICO_OK;
}

/* Decodes and validates one record from the front of buf. */
int pico_sparse_decode(const uint8_t *buf, size_t len, size_t vocab, int32_t *ids,
                       uint32_t *counts, uint32_t cap, uint32_t *out_n, size_t *consumed)
{
    unsigned b = id_bits(vocab), width = b + 16, nacc = 0;
    uint64_t acc = 0, sum = 0, id_mask = ((uint64_t)1 << b) - 1;
    size_t size, pos = 1;
    uint32_t n, i;
    if (b == 0 || !ids || !counts || !out_n || !consumed || (len > 0 && !buf))
        return PICO_E_ARG;
    if (len == 0)
        return PICO_E_TRUNCATED;
    n = (uint32_t)buf[0] + 1;
    if (n > cap)
        return PICO_E_SPACE;
    size = pico_sparse_size(n, vocab);
    if (len < size)
        return PICO_E_TRUNCATED;
    for (i = 0; i < n; i++) {
        uint64_t field;
        while (nacc < width) {
            acc |= (uint64_t)buf[pos++] << nacc;
            nacc += 8;
        }
        field = acc & (id_mask | ((uint64_t)0xFFFF << b));
        acc >>= width;
        nacc -= width;
        if ((field & id_mask) >= vocab)
            return PICO_E_CORRUPT;
        ids[i] = (int32_t)(field & id_mask);
        counts[i] = (uint32_t)(field >> b) + 1;
        sum += counts[i];
    }
    if (acc != 0 || sum != PICO_Q_ONE || has_repeat(ids, n))
        return PICO_E_CORRUPT;
    *out_n = n;
    *consumed = size;
    return PICO_OK;
}
