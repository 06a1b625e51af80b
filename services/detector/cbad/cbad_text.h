/* SPDX-License-Identifier: Apache-2.0 */
/* cbad_text: the text channel, how unusual the prose of an event's long free-text fields reads (internal to cbad). */
#ifndef DL_CBAD_TEXT_H
#define DL_CBAD_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "services/detector/cbad/cbad_ser.h"
#include "services/detector/cbad/cbad_signal.h"

#define CBAD_TEXT_MAX_FIELDS 2      /* prose fields modelled per stream */
#define CBAD_TEXT_HEURISTIC 512     /* events watched before the prose fields are chosen */

typedef struct cbad_text cbad_text;

/* Creates an empty text channel. Returns 0, or -ENOMEM (*ret untouched). */
int cbad_text_new(cbad_text **ret);
/* Accepts NULL. */
void cbad_text_free(cbad_text *t);

/* Judges one event (raw JSON bytes; anything else is ignored): for each chosen prose field, the
 * mean bits per byte of its text under the field's own byte model (order 2, hashed), as a
 * conformal p-value against the field's recent texts. Writes at most one signal (kind event,
 * "text:<field>", the smallest p times the number of fields, times 2 for the novelty
 * channel that shares the event kind) into out when max > 0 and returns
 * how many it wrote. The texts are learned unless they were strange (p < learn_alpha), or when
 * strange texts have become common (a new normal). Deterministic; not thread-safe. */
size_t cbad_text_observe(cbad_text *t, const char *raw, size_t len, double learn_alpha,
			 cbad_chan_signal *out, size_t max);

/* Bytes held by the channel. */
size_t cbad_text_memory(const cbad_text *t);

void cbad_text_save(const cbad_text *t, cbad_writer *w);
/* Restores a state written by cbad_text_save into a fresh channel. Returns 0 or -EINVAL. */
int cbad_text_load(cbad_text *t, cbad_reader *r);

#endif /* DL_CBAD_TEXT_H */
