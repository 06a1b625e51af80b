/* SPDX-License-Identifier: Apache-2.0 */
/* cbad_novelty: what an event costs in bits given a zstd dictionary digested from the baseline. */
#define ZSTD_STATIC_LINKING_ONLY
/* ZSTD_compress_usingCDict_advanced is marked deprecated in favour of compress2 + refCDict,
 * which gives the same frame but resolves every parameter again on each call. */
#define ZSTD_DISABLE_DEPRECATE_WARNINGS
#include "services/detector/cbad/cbad_novelty.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

/* Costs of recent canonical events under the current dictionary, by a 64-bit hash of their
 * bytes: logs repeat (after masking, most events of a stream are copies of a few hundred
 * forms), and an identical input under an identical dictionary costs the same, so a hit
 * skips the coder. The table is cleared whenever the dictionary changes. */
#define MEMO_SLOTS 512u
/* zstd sizes a context's workspace from each input's length (its tables and block buffers
 * follow the input's size, about 16 KiB more per doubling: 26 KiB for an empty input, 33 KiB
 * at 512 B, 74 KiB at 4 KiB) and keeps the largest it ever needed. The kept context codes
 * inputs up to this length into a scratch of their bound; a longer one is coded by a context
 * and into an output made for it, both freed at once, so one long event does not hold 40 KiB
 * more for the stream's life. The frame does not
 * depend on which context codes it (same parameters, same input, same dictionary). */
#define CCTX_KEEP_LEN 512u
#define COMPRESS_OOM SIZE_MAX /* compress(): out of memory, nothing to remember */

struct cbad_novelty {
	int level;
	size_t max_dict;
	ZSTD_CCtx *cctx;
	ZSTD_CDict *cdict;
	ZSTD_compressionParameters cp;
	ZSTD_frameParameters fp; /* of a frame coded with the dictionary */
	size_t overhead_dict, overhead_alone; /* compressed size of an empty input */
	size_t scratch_cap;
	unsigned char *scratch;
	/* Two arrays rather than 16-byte slots (12 B a slot instead of 16 with padding). */
	uint64_t memo_key[MEMO_SLOTS]; /* 0: empty */
	uint32_t memo_bytes[MEMO_SLOTS]; /* compressed size */
};

/* A word-at-a-time hash of src[0..len) mixed with its length; never 0. */
static uint64_t memo_hash(const void *src, size_t len)
{
	const unsigned char *p = src;
	uint64_t h = 0x9e3779b97f4a7c15ull ^ len, w;

	for (; len >= 8; p += 8, len -= 8) {
		memcpy(&w, p, 8);
		h = (h ^ w) * 0xff51afd7ed558ccdull;
		h ^= h >> 32;
	}
	w = 0;
	memcpy(&w, p, len);
	h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
	h ^= h >> 29;
	return h ? h : 1;
}

/* A context with the coder's parameters (those of compress_alone; a CDict brings its own).
 * NULL when out of memory. */
static ZSTD_CCtx *cctx_create(const ZSTD_compressionParameters *cp)
{
	ZSTD_CCtx *c = ZSTD_createCCtx();

	if (!c)
		return NULL;
	if (ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, 0)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 0)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_dictIDFlag, 0)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_windowLog, (int)cp->windowLog)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_hashLog, (int)cp->hashLog)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_chainLog, (int)cp->chainLog)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_searchLog, (int)cp->searchLog)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_minMatch, (int)cp->minMatch)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_targetLength, 0)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_strategy, (int)cp->strategy))) {
		ZSTD_freeCCtx(c);
		return NULL;
	}
	return c;
}

/* Compressed size of src[0..len), with the CDict when there is one. On a coder error,
 * len + 16 (as incompressible); out of memory, COMPRESS_OOM. */
static size_t compress(cbad_novelty *n, const void *src, size_t len, bool with_dict)
{
	ZSTD_CCtx *c = n->cctx;
	unsigned char *out = n->scratch;
	size_t cap = n->scratch_cap, r;

	if (len > CCTX_KEEP_LEN) {
		cap = ZSTD_compressBound(len);
		c = cctx_create(&n->cp);
		out = malloc(cap);
		if (!c || !out) {
			ZSTD_freeCCtx(c);
			free(out);
			return COMPRESS_OOM;
		}
	}
	/* The direct call skips compress2's per-call parameter resolution; the frame is the
	 * same: no content size, checksum or dict id, the CDict's parameters. */
	if (with_dict && n->cdict)
		r = ZSTD_compress_usingCDict_advanced(c, out, cap, src, len, n->cdict, n->fp);
	else
		r = ZSTD_compress2(c, out, cap, src, len);
	if (c != n->cctx) {
		ZSTD_freeCCtx(c);
		free(out);
	}
	return ZSTD_isError(r) ? len + 16 : r;
}

static size_t compress_alone(cbad_novelty *n, const void *src, size_t len)
{
	return compress(n, src, len, false);
}

static size_t compress_dict(cbad_novelty *n, const void *src, size_t len)
{
	return compress(n, src, len, true);
}

int cbad_novelty_new(int level, size_t max_dict, cbad_novelty **ret)
{
	cbad_novelty *n = calloc(1, sizeof(*n));

	if (!n)
		return -ENOMEM;
	n->level = level;
	n->max_dict = max_dict;
	/* Small explicit parameters keep the CDict cheap to rebuild every hop and small in memory. */
	n->cp = ZSTD_getCParams(level, 512, max_dict);
	n->cp.windowLog = 16;
	n->cp.hashLog = 12;
	n->cp.chainLog = 12;
	n->cp.searchLog = 1;
	n->cp.minMatch = 4;
	n->cp.strategy = level >= 3 ? ZSTD_dfast : ZSTD_fast;
	n->cp.targetLength = 0;
	n->fp = (ZSTD_frameParameters){.contentSizeFlag = 0, .checksumFlag = 0, .noDictIDFlag = 1};
	n->cctx = cctx_create(&n->cp);
	n->scratch_cap = ZSTD_compressBound(CCTX_KEEP_LEN);
	n->scratch = malloc(n->scratch_cap);
	if (!n->cctx || !n->scratch) {
		cbad_novelty_free(n);
		return -ENOMEM;
	}
	n->overhead_alone = compress_alone(n, "", 0);
	n->overhead_dict = n->overhead_alone;
	*ret = n;
	return 0;
}

int cbad_novelty_rebuild(cbad_novelty *n, const void *dict, size_t len)
{
	ZSTD_CDict *cd;

	if (len > n->max_dict)
		dict = (const char *)dict + (len - n->max_dict), len = n->max_dict;
	if (len == 0) {
		ZSTD_freeCDict(n->cdict);
		n->cdict = NULL;
		memset(n->memo_key, 0, sizeof(n->memo_key));
		n->overhead_dict = n->overhead_alone;
		return 0;
	}
	cd = ZSTD_createCDict_advanced(dict, len, ZSTD_dlm_byRef, ZSTD_dct_rawContent, n->cp,
				       ZSTD_defaultCMem);
	if (!cd)
		return -ENOMEM;
	ZSTD_freeCDict(n->cdict);
	n->cdict = cd;
	memset(n->memo_key, 0, sizeof(n->memo_key));
	n->overhead_dict = compress_dict(n, "", 0);
	return 0;
}

double cbad_novelty_bits(cbad_novelty *n, const void *src, size_t len)
{
	uint64_t key = memo_hash(src, len);
	uint32_t slot = (uint32_t)(key % MEMO_SLOTS);
	size_t c;

	if (n->memo_key[slot] == key) {
		c = n->memo_bytes[slot];
	} else {
		c = compress_dict(n, src, len);
		if (c == COMPRESS_OOM)
			return 8.0 * (double)len;
		n->memo_key[slot] = key;
		n->memo_bytes[slot] = (uint32_t)c;
	}
	return 8.0 * (double)(c > n->overhead_dict ? c - n->overhead_dict : 0);
}

double cbad_novelty_bits_alone(cbad_novelty *n, const void *src, size_t len)
{
	size_t c;

	c = compress_alone(n, src, len);
	if (c == COMPRESS_OOM)
		return 8.0 * (double)len;
	return 8.0 * (double)(c > n->overhead_alone ? c - n->overhead_alone : 0);
}

size_t cbad_novelty_memory(const cbad_novelty *n)
{
	return sizeof(*n) + n->scratch_cap + ZSTD_sizeof_CCtx(n->cctx) +
	       (n->cdict ? ZSTD_sizeof_CDict(n->cdict) : 0);
}

void cbad_novelty_free(cbad_novelty *n)
{
	if (!n)
		return;
	ZSTD_freeCDict(n->cdict);
	ZSTD_freeCCtx(n->cctx);
	free(n->scratch);
	free(n);
}
