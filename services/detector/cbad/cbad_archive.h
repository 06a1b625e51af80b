/* SPDX-License-Identifier: Apache-2.0 */
/* cbad_archive: a long memory of recurring normal forms kept after they leave the novelty baseline (internal to cbad). */
#ifndef DL_CBAD_ARCHIVE_H
#define DL_CBAD_ARCHIVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "services/detector/cbad/cbad_ser.h"

#define CBAD_ARCHIVE_BYTES 8192   /* exemplars kept, oldest dropped first */
#define CBAD_ARCHIVE_MAX_EVENT 512 /* bytes kept of one exemplar */
#define CBAD_ARCHIVE_NORMALS 3    /* a form judged normal this many times is worth keeping (<= 3) */

typedef struct cbad_archive cbad_archive;

/* Creates an empty archive over template slots 0..slots-1 (1..65536). The exemplars' 8 KiB
 * are allocated with the first exemplar. Returns 0, -EINVAL or -ENOMEM (*ret untouched). */
int cbad_archive_new(uint32_t slots, cbad_archive **ret);
/* Accepts NULL. */
void cbad_archive_free(cbad_archive *a);

/* Notes one event of template slot: judged normal (not flagged as novel), or flagged. */
void cbad_archive_note(cbad_archive *a, uint32_t slot, bool normal);
/* Offers the last baseline copy of a template slot as it leaves the baseline. It is kept (the
 * oldest exemplars dropped to make room) when the form was judged normal at least
 * CBAD_ARCHIVE_NORMALS times and yet flagged as novel at least once (it was forgotten and came
 * back), and no exemplar of the slot is kept yet. Returns true when the archive changed. */
bool cbad_archive_offer(cbad_archive *a, uint32_t slot, const uint8_t *p, uint32_t len);
/* Bytes of the exemplars (each ended by a newline), and a linear copy of them into out
 * (cbad_archive_len bytes). */
uint32_t cbad_archive_len(const cbad_archive *a);
void cbad_archive_copy(const cbad_archive *a, uint8_t *out);
size_t cbad_archive_memory(const cbad_archive *a);

void cbad_archive_save(const cbad_archive *a, cbad_writer *w);
/* Restores a state written by cbad_archive_save into an archive made with the same slots.
 * Returns 0, -EINVAL or -ENOMEM. */
int cbad_archive_load(cbad_archive *a, cbad_reader *r);

#endif /* DL_CBAD_ARCHIVE_H */
