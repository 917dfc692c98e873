/*
 * Keyed randomness (header: "KEYED RANDOMNESS"): stream keys and the uniforms
 * of a stream, each a pure function of its counter.
 */
#include "internal.h"

/* The key of the (seed, position, purpose) stream. */
uint64_t pico_key(uint64_t seed, uint64_t position, uint32_t purpose)
{
    return pico__mix(pico__mix(pico__mix(seed ^ 0x7069636F73706563u) ^ purpose) + position);
}

/* Uniforms first .. first + n - 1 of a stream. */
PICO_CLONES
void pico_uniforms(uint64_t key, uint64_t first, size_t n, double *out)
{
    size_t j;
    for (j = 0; j < n; j++)
        out[j] = pico__uniform(key, first + j);
}
