/* SPDX-License-Identifier: Apache-2.0 */
/* dl_test_http: a blocking HTTP GET on loopback for the test suites (libcurl). */
#ifndef DL_TESTS_SUPPORT_HTTP_H
#define DL_TESTS_SUPPORT_HTTP_H

#include <stdio.h>
#include <string.h>

#include <curl/curl.h>

typedef struct dl_test_body {
	char *buf;
	size_t cap;
} dl_test_body;

static inline size_t dl_test_http_collect(char *data, size_t size, size_t nmemb, void *opaque)
{
	dl_test_body *b = opaque;
	size_t have = strlen(b->buf), add = size * nmemb;

	if (have + add >= b->cap)
		add = b->cap - 1 - have;
	memcpy(b->buf + have, data, add);
	b->buf[have + add] = '\0';
	return size * nmemb;
}

/* GET http://127.0.0.1:port/path within 5 s. Returns the status (0 when there was no answer)
 * and the body, truncated to cap - 1 bytes, NUL-terminated, in body. */
static inline long dl_test_http_get(int port, const char *path, char *body, size_t cap)
{
	dl_test_body b = { body, cap };
	char url[256];
	long status = 0;
	CURL *c = curl_easy_init();

	body[0] = '\0';
	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, dl_test_http_collect);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
	if (curl_easy_perform(c) == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(c);
	return status;
}

#endif /* DL_TESTS_SUPPORT_HTTP_H */
