/* SPDX-License-Identifier: Apache-2.0 */
/* proto_topics: validation of org ids, streams and ids, and the "org_id:stream" message key. */
#include "proto/proto_topics.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static void set_err(char *errbuf, size_t errlen, const char *msg)
{
	if (errbuf != NULL && errlen > 0)
		snprintf(errbuf, errlen, "%s", msg);
}

static bool id_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == ':' || c == '-';
}

static int check_idchars(const char *s, size_t len, size_t max, const char *rule, char *errbuf,
			 size_t errlen)
{
	size_t i;

	if (s == NULL || len == 0 || len > max)
		goto out_invalid;
	for (i = 0; i < len; i++)
		if (!id_char(s[i]))
			goto out_invalid;
	return 0;

out_invalid:
	set_err(errbuf, errlen, rule);
	return -EINVAL;
}

int proto_topics_check_org_id(const char *s, size_t len, char *errbuf, size_t errlen)
{
	size_t i;

	if (s == NULL || len != PROTO_ORG_ID_LEN)
		goto out_invalid;
	for (i = 0; i < len; i++) {
		bool dash = i == 8 || i == 13 || i == 18 || i == 23;

		if (dash ? s[i] != '-' : !((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			goto out_invalid;
	}
	return 0;

out_invalid:
	set_err(errbuf, errlen, "must be a lowercase UUID (8-4-4-4-12 hex digits)");
	return -EINVAL;
}

int proto_topics_check_stream(const char *s, size_t len, char *errbuf, size_t errlen)
{
	return check_idchars(s, len, PROTO_STREAM_MAX, "must be 1-128 characters of A-Za-z0-9._:-",
			     errbuf, errlen);
}

int proto_topics_check_id(const char *s, size_t len, char *errbuf, size_t errlen)
{
	return check_idchars(s, len, PROTO_ID_MAX, "must be 1-128 characters of A-Za-z0-9._:-",
			     errbuf, errlen);
}

int proto_topics_stream_key(const char *org_id, const char *stream, char *buf, size_t buflen,
			    size_t *ret_len, char *errbuf, size_t errlen)
{
	char why[96];
	size_t olen = org_id ? strlen(org_id) : 0, slen = stream ? strlen(stream) : 0;

	if (proto_topics_check_org_id(org_id, olen, why, sizeof(why)) < 0) {
		if (errbuf != NULL && errlen > 0)
			snprintf(errbuf, errlen, "org_id: %s", why);
		return -EINVAL;
	}
	if (proto_topics_check_stream(stream, slen, why, sizeof(why)) < 0) {
		if (errbuf != NULL && errlen > 0)
			snprintf(errbuf, errlen, "stream: %s", why);
		return -EINVAL;
	}
	if (buf == NULL || buflen <= olen + 1 + slen) {
		set_err(errbuf, errlen, "key buffer too small");
		return -ENOSPC;
	}
	memcpy(buf, org_id, olen);
	buf[olen] = ':';
	memcpy(buf + olen + 1, stream, slen);
	buf[olen + 1 + slen] = '\0';
	if (ret_len != NULL)
		*ret_len = olen + 1 + slen;
	return 0;
}

int proto_topics_split_stream_key(const char *key, size_t len, char ret_org[PROTO_ORG_ID_LEN + 1],
				  char ret_stream[PROTO_STREAM_MAX + 1], char *errbuf, size_t errlen)
{
	if (key == NULL || len < PROTO_ORG_ID_LEN + 2 || key[PROTO_ORG_ID_LEN] != ':' ||
	    proto_topics_check_org_id(key, PROTO_ORG_ID_LEN, NULL, 0) < 0 ||
	    proto_topics_check_stream(key + PROTO_ORG_ID_LEN + 1, len - PROTO_ORG_ID_LEN - 1, NULL,
				      0) < 0) {
		set_err(errbuf, errlen, "key: must be \"<org uuid>:<stream>\"");
		return -EINVAL;
	}
	memcpy(ret_org, key, PROTO_ORG_ID_LEN);
	ret_org[PROTO_ORG_ID_LEN] = '\0';
	memcpy(ret_stream, key + PROTO_ORG_ID_LEN + 1, len - PROTO_ORG_ID_LEN - 1);
	ret_stream[len - PROTO_ORG_ID_LEN - 1] = '\0';
	return 0;
}
