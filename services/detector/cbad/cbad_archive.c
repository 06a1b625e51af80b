/* SPDX-License-Identifier: Apache-2.0 */
/* cbad_archive: a long memory of recurring normal forms kept after they leave the novelty baseline. */
#include "services/detector/cbad/cbad_archive.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define ARCHIVE_EVENTS 256 /* exemplars at most (8 KiB of 32-byte events) */
#define NORMALS 3u         /* the mask of the saturating count of normal sightings */
#define FLAGGED 4u
#define KEPT 8u
_Static_assert(CBAD_ARCHIVE_NORMALS <= NORMALS, "the count saturates below the threshold");

/* Why: the baseline holds the last 48 KiB of forms, so a form that comes back every few
 * thousand events (a crawler's visits, a familiar upstream error) has left it by the time it
 * returns, and is novel on every visit. A form that was judged normal several times is not
 * news when it returns; one that was only ever flagged (an attack that repeats) never
 * qualifies, so it stays novel. The exemplars sit before the baseline in the dictionary. */
struct cbad_archive {
	uint32_t slots;
	/* per template slot: events judged normal (bits 0-1, saturating at 3), flagged at least
	 * once (bit 2), an exemplar is in the archive (bit 3) */
	uint8_t *slot;
	uint32_t head, used; /* the byte ring */
	uint32_t ehead, ne;  /* the exemplar ring: lengths and slots */
	uint16_t elen[ARCHIVE_EVENTS];  /* <= CBAD_ARCHIVE_MAX_EVENT + 1 */
	uint16_t eslot[ARCHIVE_EVENTS]; /* < slots <= 65536 */
	/* CBAD_ARCHIVE_BYTES, allocated with the first exemplar: a stream whose rare forms never
	 * recur (or that has none) does not pay for it. */
	uint8_t *ring;
};
_Static_assert(CBAD_ARCHIVE_MAX_EVENT + 1 <= UINT16_MAX, "an exemplar's length fits elen");

int cbad_archive_new(uint32_t slots, cbad_archive **ret)
{
	cbad_archive *a;

	if (slots == 0 || slots > 65536)
		return -EINVAL;
	a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->slots = slots;
	a->slot = calloc(slots, 1);
	if (!a->slot) {
		cbad_archive_free(a);
		return -ENOMEM;
	}
	*ret = a;
	return 0;
}

void cbad_archive_free(cbad_archive *a)
{
	if (!a)
		return;
	free(a->slot);
	free(a->ring);
	free(a);
}

void cbad_archive_note(cbad_archive *a, uint32_t slot, bool normal)
{
	if (slot >= a->slots)
		return;
	if (!normal)
		a->slot[slot] |= FLAGGED;
	else if ((a->slot[slot] & NORMALS) < NORMALS)
		a->slot[slot]++;
}

static void drop_oldest(cbad_archive *a)
{
	a->head = (a->head + a->elen[a->ehead]) % CBAD_ARCHIVE_BYTES;
	a->used -= a->elen[a->ehead];
	a->slot[a->eslot[a->ehead]] &= (uint8_t)~KEPT;
	a->ehead = (a->ehead + 1) % ARCHIVE_EVENTS;
	a->ne--;
}

bool cbad_archive_offer(cbad_archive *a, uint32_t slot, const uint8_t *p, uint32_t len)
{
	uint32_t n, at, i;

	if (slot >= a->slots || (a->slot[slot] & (KEPT | FLAGGED)) != FLAGGED ||
	    (a->slot[slot] & NORMALS) < CBAD_ARCHIVE_NORMALS || len == 0)
		return false;
	if (len > CBAD_ARCHIVE_MAX_EVENT)
		len = CBAD_ARCHIVE_MAX_EVENT;
	if (!a->ring && !(a->ring = malloc(CBAD_ARCHIVE_BYTES)))
		return false; /* out of memory: not kept */
	n = len + 1;
	while (a->ne > 0 && (a->used + n > CBAD_ARCHIVE_BYTES || a->ne == ARCHIVE_EVENTS))
		drop_oldest(a);
	at = (a->head + a->used) % CBAD_ARCHIVE_BYTES;
	for (uint32_t k = 0; k < n; k++) {
		a->ring[at] = k < len ? p[k] : '\n';
		at = at + 1 == CBAD_ARCHIVE_BYTES ? 0 : at + 1;
	}
	a->used += n;
	i = (a->ehead + a->ne++) % ARCHIVE_EVENTS;
	a->elen[i] = (uint16_t)n;
	a->eslot[i] = (uint16_t)slot;
	a->slot[slot] |= KEPT;
	return true;
}

uint32_t cbad_archive_len(const cbad_archive *a)
{
	return a->used;
}

void cbad_archive_copy(const cbad_archive *a, uint8_t *out)
{
	uint32_t first = CBAD_ARCHIVE_BYTES - a->head < a->used ? CBAD_ARCHIVE_BYTES - a->head : a->used;

	if (!a->used)
		return;
	memcpy(out, a->ring + a->head, first);
	memcpy(out + first, a->ring, a->used - first);
}

size_t cbad_archive_memory(const cbad_archive *a)
{
	return a ? sizeof(*a) + (size_t)a->slots + (a->ring ? CBAD_ARCHIVE_BYTES : 0) : 0;
}

void cbad_archive_save(const cbad_archive *a, cbad_writer *w)
{
	uint8_t lin[CBAD_ARCHIVE_BYTES];

	for (uint32_t k = 0; k < a->slots; k++)
		cbad_w_u8(w, a->slot[k] & (NORMALS | FLAGGED));
	cbad_w_u32(w, a->ne);
	for (uint32_t k = 0; k < a->ne; k++) {
		cbad_w_u32(w, a->elen[(a->ehead + k) % ARCHIVE_EVENTS]);
		cbad_w_u32(w, a->eslot[(a->ehead + k) % ARCHIVE_EVENTS]);
	}
	cbad_archive_copy(a, lin);
	cbad_w_bytes(w, lin, a->used);
}

int cbad_archive_load(cbad_archive *a, cbad_reader *r)
{
	uint32_t total = 0;

	a->head = a->ehead = a->used = 0;
	for (uint32_t k = 0; k < a->slots; k++) {
		a->slot[k] = cbad_r_u8(r);
		if (a->slot[k] & ~(NORMALS | FLAGGED))
			return -EINVAL;
	}
	a->ne = cbad_r_count(r, ARCHIVE_EVENTS);
	for (uint32_t k = 0; k < a->ne && !r->failed; k++) {
		uint32_t len = cbad_r_u32(r), slot = cbad_r_u32(r);

		total += len;
		if (len < 2 || len > CBAD_ARCHIVE_MAX_EVENT + 1 || total > CBAD_ARCHIVE_BYTES ||
		    slot >= a->slots || (a->slot[slot] & KEPT))
			return -EINVAL;
		a->elen[k] = (uint16_t)len;
		a->eslot[k] = (uint16_t)slot;
		a->slot[slot] |= KEPT;
	}
	if (total && !a->ring && !(a->ring = malloc(CBAD_ARCHIVE_BYTES)))
		return -ENOMEM;
	if (r->failed || !cbad_r_bytes(r, a->ring, total))
		return -EINVAL;
	a->used = total;
	return 0;
}
