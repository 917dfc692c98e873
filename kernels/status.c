/*
 * Status codes: the names of pico_status values.
 */
#include "picospec_kernels.h"

/* Human-readable name of a status code. */
const char *pico_strerror(int status)
{
    switch (status) {
    case PICO_OK:
        return "ok";
    case PICO_E_ARG:
        return "invalid argument";
    case PICO_E_NONFINITE:
        return "non-finite logits (NaN or +inf, or every logit -inf)";
    case PICO_E_SPACE:
        return "buffer too small";
    case PICO_E_TRUNCATED:
        return "truncated record";
    case PICO_E_CORRUPT:
        return "corrupt record";
    default:
        return "unknown status";
    }
}
