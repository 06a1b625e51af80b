/* SPDX-License-Identifier: Apache-2.0 */
/* ingest_sse_frame: the wire format of GET /v1/stream/anomalies: resumable cursors, Server-Sent
 * Events frames and the per-client buffer policy. */
#include "services/ingest/ingest_sse_frame.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/dl_id.h"

int ingest_sse_key_cmp(const ingest_sse_key *a, const ingest_sse_key *b)
{
	if (a->ms != b->ms)
		return a->ms < b->ms ? -1 : 1;
	return strcmp(a->id, b->id);
}

int ingest_sse_cursor_format(const ingest_sse_key *k, char *out, size_t outlen)
{
	int n;

	if (k->ms < 0 || !dl_id_is_valid_token(k->id, PROTO_ID_MAX))
		return -EINVAL;
	n = snprintf(out, outlen, "%" PRId64 ".%s", k->ms, k->id);
	return n < 0 || (size_t)n >= outlen ? -EINVAL : 0;
}

int ingest_sse_cursor_parse(const char *s, ingest_sse_key *ret)
{
	uint64_t ms = 0;
	size_t digits = 0;

	if (s == NULL)
		return -EINVAL;
	for (; s[digits] >= '0' && s[digits] <= '9'; digits++) {
		if (digits == 19)
			return -EINVAL;
		ms = ms * 10 + (uint64_t)(s[digits] - '0');
	}
	if (digits == 0 || s[digits] != '.' || ms > (uint64_t)INT64_MAX)
		return -EINVAL;
	s += digits + 1;
	if (!dl_id_is_valid_token(s, PROTO_ID_MAX))
		return -EINVAL;
	ret->ms = (int64_t)ms;
	snprintf(ret->id, sizeof(ret->id), "%s", s);
	return 0;
}

static bool has_newline(const char *s)
{
	return s != NULL && strpbrk(s, "\r\n") != NULL;
}

int ingest_sse_frame_format(const char *id, const char *event, const char *data, size_t len,
			    char **ret, size_t *ret_len)
{
	size_t lines = 1, cap, off = 0;
	char *out;

	if (has_newline(id) || has_newline(event) || (data == NULL && len > 0))
		return -EINVAL;
	for (size_t i = 0; i < len; i++)
		if (data[i] == '\n' || (data[i] == '\r' && (i + 1 == len || data[i + 1] != '\n')))
			lines++;
	/* Every line costs "data: " and "\n"; a CRLF pair shrinks to "\n". */
	cap = (id ? strlen(id) + 5 : 0) + (event ? strlen(event) + 8 : 0) + len + lines * 7 + 2;
	out = malloc(cap);
	if (out == NULL)
		return -ENOMEM;
	if (id != NULL)
		off += (size_t)sprintf(out + off, "id: %s\n", id);
	if (event != NULL)
		off += (size_t)sprintf(out + off, "event: %s\n", event);
	memcpy(out + off, "data: ", 6);
	off += 6;
	for (size_t i = 0; i < len; i++) {
		if (data[i] != '\r' && data[i] != '\n') {
			out[off++] = data[i];
			continue;
		}
		if (data[i] == '\r' && i + 1 < len && data[i + 1] == '\n')
			i++;
		memcpy(out + off, "\ndata: ", 7);
		off += 7;
	}
	out[off++] = '\n';
	out[off++] = '\n';
	out[off] = '\0';
	*ret = out;
	*ret_len = off;
	return 0;
}

bool ingest_sse_over_budget(size_t queued, size_t held, size_t add, size_t max)
{
	return queued > max || held > max - queued || add > max - queued - held;
}
