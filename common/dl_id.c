/* SPDX-License-Identifier: Apache-2.0 */
/* dl_id: UUIDv7 generation, UUIDv8 derivation from SHA-256, id checks and random tokens. */
#include "common/dl_id.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#define DL_ID_TOKEN_RANDOM_MAX 64

/* The last UUIDv7 handed out: its millisecond and its 12-bit sequence (rand_a). */
static pthread_mutex_t dl_id_lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t dl_id_last_ms = -1;
static unsigned dl_id_last_seq;

static const char dl_id_hexdigits[] = "0123456789abcdef";

static void dl_id_format_uuid(const unsigned char b[16], char out[DL_ID_UUID_LEN + 1])
{
	size_t o = 0;

	for (size_t i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[o++] = '-';
		out[o++] = dl_id_hexdigits[b[i] >> 4];
		out[o++] = dl_id_hexdigits[b[i] & 0x0f];
	}
	out[o] = '\0';
}

static int dl_id_hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Random bytes for ids, drawn from OpenSSL's generator 4 KiB at a time per thread: RAND_bytes
 * takes the DRBG's lock on every call, which cost more than the rest of an id. A child
 * process never reuses its parent's bytes (the pool is dropped when the pid changes). */
#define DL_ID_POOL 4096
static __thread unsigned char dl_id_pool[DL_ID_POOL];
static __thread size_t dl_id_pool_left;
static __thread pid_t dl_id_pool_pid;

static int dl_id_random(unsigned char *out, size_t n)
{
	pid_t pid = getpid();

	if (dl_id_pool_left < n || dl_id_pool_pid != pid) {
		if (RAND_bytes(dl_id_pool, DL_ID_POOL) != 1)
			return -EIO;
		dl_id_pool_left = DL_ID_POOL;
		dl_id_pool_pid = pid;
	}
	memcpy(out, dl_id_pool + DL_ID_POOL - dl_id_pool_left, n);
	/* Used bytes are wiped so a memory dump does not show ids still to come. */
	memset(dl_id_pool + DL_ID_POOL - dl_id_pool_left, 0, n);
	dl_id_pool_left -= n;
	return 0;
}

int dl_id_new(char out[DL_ID_UUID_LEN + 1])
{
	unsigned char rnd[10];
	unsigned char b[16];
	struct timespec now;
	int64_t now_ms, ms;
	unsigned seq;

	if (dl_id_random(rnd, sizeof(rnd)) < 0)
		return -EIO;
	clock_gettime(CLOCK_REALTIME, &now);
	now_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;

	/* A fresh millisecond starts the sequence at a random value below 2048, so at least 2048
	 * ids fit in that millisecond while the sequence still leaks little about the rate. Within
	 * the same millisecond (or when the clock stepped back) the sequence counts up; once it is
	 * exhausted the timestamp moves one millisecond ahead of the clock. */
	pthread_mutex_lock(&dl_id_lock);
	if (now_ms > dl_id_last_ms) {
		ms = now_ms;
		seq = ((unsigned)rnd[0] << 8 | rnd[1]) & 0x7ff;
	} else if (dl_id_last_seq < 0xfff) {
		ms = dl_id_last_ms;
		seq = dl_id_last_seq + 1;
	} else {
		ms = dl_id_last_ms + 1;
		seq = ((unsigned)rnd[0] << 8 | rnd[1]) & 0x7ff;
	}
	dl_id_last_ms = ms;
	dl_id_last_seq = seq;
	pthread_mutex_unlock(&dl_id_lock);

	for (int i = 0; i < 6; i++)
		b[i] = (unsigned char)((uint64_t)ms >> (8 * (5 - i)));
	b[6] = (unsigned char)(0x70 | (seq >> 8));
	b[7] = (unsigned char)(seq & 0xff);
	memcpy(b + 8, rnd + 2, 8);
	b[8] = (unsigned char)(0x80 | (b[8] & 0x3f));
	dl_id_format_uuid(b, out);
	return 0;
}

void dl_id_derive(const char *ns, const void *data, size_t len, char out[DL_ID_UUID_LEN + 1])
{
	static const unsigned char sep = 0x00;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	EVP_MD_CTX *ctx;

	if (!ns)
		ns = "";
	ctx = EVP_MD_CTX_new();
	/* Only allocation can fail here; an id derived from nothing would silently merge
	 * unrelated records, so stopping is the lesser harm. */
	if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(ctx, ns, strlen(ns)) != 1 || EVP_DigestUpdate(ctx, &sep, 1) != 1 ||
	    (len > 0 && EVP_DigestUpdate(ctx, data, len) != 1) ||
	    EVP_DigestFinal_ex(ctx, md, &mdlen) != 1 || mdlen < 16)
		abort();
	EVP_MD_CTX_free(ctx);

	md[6] = (unsigned char)(0x80 | (md[6] & 0x0f));
	md[8] = (unsigned char)(0x80 | (md[8] & 0x3f));
	dl_id_format_uuid(md, out);
}

bool dl_id_is_uuid(const char *s)
{
	if (!s)
		return false;
	for (size_t i = 0; i < DL_ID_UUID_LEN; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return false;
		} else if (dl_id_hexval(s[i]) < 0) {
			return false;
		}
	}
	return s[DL_ID_UUID_LEN] == '\0';
}

int64_t dl_id_uuid7_ms(const char *s)
{
	int64_t ms = 0;

	if (!dl_id_is_uuid(s) || s[14] != '7')
		return -EINVAL;
	switch (s[19]) {
	case '8': case '9': case 'a': case 'b': case 'A': case 'B':
		break;
	default:
		return -EINVAL;
	}
	/* The first 12 hex digits (8 + 4, around the first dash) are the milliseconds. */
	for (size_t i = 0; i < 13; i++) {
		if (i == 8)
			continue;
		ms = ms << 4 | dl_id_hexval(s[i]);
	}
	return ms;
}

bool dl_id_is_valid_token(const char *s, size_t max)
{
	size_t n = 0;

	if (!s)
		return false;
	for (; s[n] != '\0'; n++) {
		char c = s[n];

		if (n >= max)
			return false;
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == ':' || c == '-'))
			return false;
	}
	return n > 0;
}

int dl_id_hex(const void *data, size_t len, char *out, size_t outlen)
{
	const unsigned char *p = data;

	if (!out || len > (SIZE_MAX - 1) / 2 || outlen < 2 * len + 1)
		return -ENOSPC;
	for (size_t i = 0; i < len; i++) {
		out[2 * i] = dl_id_hexdigits[p[i] >> 4];
		out[2 * i + 1] = dl_id_hexdigits[p[i] & 0x0f];
	}
	out[2 * len] = '\0';
	return 0;
}

size_t dl_id_random_token_len(size_t random_bytes)
{
	/* The smallest L with 62^L >= 256^n; n * 8 / log2(62) is never an integer, so the
	 * ceiling is exact for every n this module accepts. */
	return (size_t)ceil((double)random_bytes * 8.0 / log2(62.0));
}

int dl_id_random_token(const char *prefix, size_t random_bytes, char *out, size_t outlen)
{
	static const char alphabet[] =
		"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
	unsigned char num[DL_ID_TOKEN_RANDOM_MAX];
	size_t plen = prefix ? strlen(prefix) : 0;
	size_t width;

	if (random_bytes == 0 || random_bytes > DL_ID_TOKEN_RANDOM_MAX)
		return -EINVAL;
	width = dl_id_random_token_len(random_bytes);
	if (!out || outlen < plen + width + 1)
		return -ENOSPC;
	if (RAND_bytes(num, (int)random_bytes) != 1)
		return -EIO;

	/* Base conversion by repeated division of the big-endian number by 62; digits come out
	 * least significant first, so they are written from the right. */
	memcpy(out, prefix ? prefix : "", plen);
	for (size_t pos = plen + width; pos > plen; pos--) {
		unsigned rem = 0;

		for (size_t i = 0; i < random_bytes; i++) {
			unsigned cur = rem << 8 | num[i];

			num[i] = (unsigned char)(cur / 62);
			rem = cur % 62;
		}
		out[pos - 1] = alphabet[rem];
	}
	out[plen + width] = '\0';
	OPENSSL_cleanse(num, sizeof(num));
	return 0;
}
