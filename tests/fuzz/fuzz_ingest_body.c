/* SPDX-License-Identifier: Apache-2.0 */
/* fuzz_ingest_body: libFuzzer target over the POST /v1/events body parser (formats, encodings,
 * limits), checking its contract on every input and that every event it accepts is JSON the
 * proto decoders accept as an event payload. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <zlib.h>
#include <zstd.h>

#include "common/dl_id.h"
#include "proto/proto_json.h"
#include "services/ingest/ingest_body.h"

#define NOW INT64_C(1795715707123)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The first input byte picks the request around the rest:
 *   bits 0-1  Content-Type: json, x-ndjson, json; charset=utf-8, text/plain
 *   bits 2-3  Content-Encoding: identity, gzip, zstd (the bytes as sent), or compressed here
 *   bit 4     when compressed here: gzip (0) or zstd (1)
 *   bit 5     a ?stream= default
 *   bit 6     small limits (so that every limit is reached by short inputs) */
static const char *const content_types[] = {
	"application/json", "application/x-ndjson", "application/json; charset=utf-8",
	"text/plain",
};

static char *compress_here(const uint8_t *in, size_t len, int zstd, size_t *ret_len)
{
	size_t cap = (zstd ? ZSTD_compressBound(len) : compressBound(len)) + 32;
	char *out = malloc(cap);

	if (out == NULL)
		return NULL;
	if (zstd) {
		*ret_len = ZSTD_compress(out, cap, in, len, 1);
		if (ZSTD_isError(*ret_len)) {
			free(out);
			return NULL;
		}
	} else {
		z_stream zs;

		memset(&zs, 0, sizeof(zs));
		if (deflateInit2(&zs, 1, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
			free(out);
			return NULL;
		}
		zs.next_in = (Bytef *)in;
		zs.avail_in = (uInt)len;
		zs.next_out = (Bytef *)out;
		zs.avail_out = (uInt)cap;
		if (deflate(&zs, Z_FINISH) != Z_STREAM_END) {
			deflateEnd(&zs);
			free(out);
			return NULL;
		}
		*ret_len = cap - zs.avail_out;
		deflateEnd(&zs);
	}
	return out;
}

/* Checks the contract of a successful parse (plain: the decoded body expected, or NULL);
 * aborts on any breach. */
static void check_batch(const ingest_body_batch *b, const ingest_body_limits *lim,
			const char *def, const uint8_t *plain, size_t plain_len)
{
	size_t i, prev = 0, ev = 0, rj = 0;

	if (b->decoded == NULL || b->decoded_len > lim->max_body_bytes ||
	    b->decoded[b->decoded_len] != '\0')
		abort();
	if (plain != NULL && (b->decoded_len != plain_len ||
			      memcmp(b->decoded, plain, plain_len) != 0))
		abort();
	if (b->nevents + b->nrejects == 0 || b->nevents + b->nrejects > lim->max_events)
		abort();
	/* Events and rejects, merged by index, are strictly increasing. */
	for (i = 0; i < b->nevents + b->nrejects; i++) {
		size_t idx;

		if (ev < b->nevents &&
		    (rj >= b->nrejects || b->events[ev].index < b->rejects[rj].index))
			idx = b->events[ev++].index;
		else
			idx = b->rejects[rj++].index;
		if (i > 0 && idx <= prev)
			abort();
		prev = idx;
	}
	for (i = 0; i < b->nevents; i++) {
		const ingest_body_event *e = &b->events[i];
		cJSON *root = NULL;

		if (e->payload < b->decoded || e->payload + e->payload_len > b->decoded + b->decoded_len)
			abort();
		if (e->payload_len < 2 || e->payload_len > lim->max_event_bytes ||
		    e->payload[0] != '{' || e->payload[e->payload_len - 1] != '}')
			abort();
		if (!dl_id_is_valid_token(e->stream, 128))
			abort();
		if (def == NULL && strcmp(e->stream, "") == 0)
			abort();
		if (e->client_id[0] != '\0' && !dl_id_is_valid_token(e->client_id, 128))
			abort();
		if (e->ts_ms < INGEST_BODY_TS_MIN_MS || e->ts_ms > NOW + INGEST_BODY_TS_MAX_AHEAD_MS)
			abort();
		/* What the parser accepts, the envelope's codec accepts as a payload. */
		if (proto_json_parse(e->payload, e->payload_len, "event", lim->max_event_bytes,
				     INGEST_BODY_MAX_DEPTH_CAP, true, &root, NULL, 0) != 0)
			abort();
		cJSON_Delete(root);
	}
	for (i = 0; i < b->nrejects; i++) {
		const ingest_body_reject *r = &b->rejects[i];
		int known = 0;

		for (size_t k = 0; ingest_body_reject_codes[k] != NULL; k++)
			known |= strcmp(r->code, ingest_body_reject_codes[k]) == 0;
		if (!known || r->message[0] == '\0')
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const encodings[] = { NULL, "gzip", "zstd" };
	ingest_body_limits lim = {
		.max_event_bytes = INGEST_BODY_DEFAULT_MAX_EVENT_BYTES,
		.max_body_bytes = INGEST_BODY_DEFAULT_MAX_BODY_BYTES,
		.max_events = INGEST_BODY_DEFAULT_MAX_EVENTS,
		.max_depth = INGEST_BODY_DEFAULT_MAX_DEPTH,
	};
	ingest_body_batch b;
	const char *ce, *def;
	char code[64], err[256], *body;
	size_t len;
	int status = 0, rc, enc;
	uint8_t mode;

	if (size < 1)
		return 0;
	mode = data[0];
	data++;
	size--;
	enc = (mode >> 2) & 3;
	def = (mode & 0x20) ? "fuzz.stream" : NULL;
	if (mode & 0x40) {
		lim.max_event_bytes = 256;
		lim.max_body_bytes = 2048;
		lim.max_events = 8;
		lim.max_depth = 4;
	}
	if (enc == 3) {
		body = compress_here(data, size, mode & 0x10, &len);
		if (body == NULL)
			return 0;
		ce = (mode & 0x10) ? "zstd" : "gzip";
	} else {
		/* An exact-size heap copy: any read past the end is caught by AddressSanitizer. */
		body = malloc(size ? size : 1);
		if (body == NULL)
			return 0;
		memcpy(body, data, size);
		len = size;
		ce = encodings[enc];
	}
	rc = ingest_body_parse(content_types[mode & 3], ce, body, len, def, NOW, &lim, &b, &status,
			       code, sizeof(code), err, sizeof(err));
	if (rc == 0) {
		/* Identity and compressed-here bodies are known: decoded must equal them. */
		check_batch(&b, &lim, def, enc == 0 || enc == 3 ? data : NULL, size);
		ingest_body_batch_free(&b);
		if (b.decoded != NULL || b.events != NULL || b.nevents != 0)
			abort();
	} else {
		if (b.decoded != NULL || b.events != NULL || b.rejects != NULL || b.nevents != 0)
			abort();
		if (status != 400 && status != 413 && status != 415 && status != 500)
			abort();
		if (code[0] == '\0' || err[0] == '\0')
			abort();
		if ((mode & 3) == 3 && status != 415)
			abort();
	}
	free(body);
	return 0;
}
