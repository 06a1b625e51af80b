/* SPDX-License-Identifier: Apache-2.0 */
/* cbad_novelty: what an event costs in bits given a zstd dictionary digested from the baseline (internal to cbad). */
#ifndef DL_CBAD_NOVELTY_H
#define DL_CBAD_NOVELTY_H

#include <stddef.h>

typedef struct cbad_novelty cbad_novelty;

/* Creates a coder for baselines of up to max_dict bytes at zstd level (small explicit
 * parameters: window 2^16, hash 2^12, strategy fast). Returns 0 or -ENOMEM. */
int cbad_novelty_new(int level, size_t max_dict, cbad_novelty **ret);

/* Digests dict[0..len) (the baseline's canonical bytes, newest last; only the last max_dict
 * bytes are used) into a new CDict that refers to dict: the caller keeps those bytes valid and
 * unchanged until the next rebuild or free. len 0 clears it. Returns 0 or -ENOMEM (the old
 * dictionary is kept then). */
int cbad_novelty_rebuild(cbad_novelty *n, const void *dict, size_t len);

/* The cost in bits of src[0..len) given the dictionary: 8 x (compressed size minus the fixed
 * frame overhead of an empty input). Without a dictionary the standalone cost. Deterministic. */
double cbad_novelty_bits(cbad_novelty *n, const void *src, size_t len);

/* The standalone cost in bits (no dictionary), same overhead rule. */
double cbad_novelty_bits_alone(cbad_novelty *n, const void *src, size_t len);

/* Bytes held (CDict, CCtx, scratch). */
size_t cbad_novelty_memory(const cbad_novelty *n);

void cbad_novelty_free(cbad_novelty *n);

#endif /* DL_CBAD_NOVELTY_H */
