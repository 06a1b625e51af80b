/* SPDX-License-Identifier: Apache-2.0 */
/* dl_apikey: the API key format, its keyed hash (HMAC-SHA-256) and the request headers that carry it. */
#include "common/dl_apikey.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "common/dl_id.h"

#define PREFIX_LEN (sizeof(DL_APIKEY_PREFIX) - 1)

struct dl_apikey_hasher {
	EVP_MAC *mac;
	EVP_MAC_CTX *ctx; /* keyed once; re-initialised per hash with the same key */
};

int dl_apikey_new(char *out, size_t outlen)
{
	if (outlen < DL_APIKEY_LEN + 1)
		return -ENOSPC;
	return dl_id_random_token(DL_APIKEY_PREFIX, DL_APIKEY_RANDOM_BYTES, out, outlen);
}

static bool is_base62(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static bool well_formed_n(const char *key, size_t len)
{
	size_t i;

	if (len != DL_APIKEY_LEN || memcmp(key, DL_APIKEY_PREFIX, PREFIX_LEN) != 0)
		return false;
	for (i = PREFIX_LEN; i < len; i++)
		if (!is_base62(key[i]))
			return false;
	return true;
}

bool dl_apikey_well_formed(const char *key)
{
	return key && well_formed_n(key, strlen(key));
}

/* Trims spaces and tabs around [*s, *s + *len). */
static void trim(const char **s, size_t *len)
{
	while (*len > 0 && (**s == ' ' || **s == '\t')) {
		(*s)++;
		(*len)--;
	}
	while (*len > 0 && ((*s)[*len - 1] == ' ' || (*s)[*len - 1] == '\t'))
		(*len)--;
}

int dl_apikey_from_headers(const char *authorization, const char *x_api_key, char *out,
			       size_t outlen)
{
	const char *v = NULL;
	size_t len = 0;

	if (authorization) {
		v = authorization;
		len = strlen(v);
		trim(&v, &len);
		if (len == 0) {
			v = NULL;
		} else if (len > 7 && strncasecmp(v, "Bearer", 6) == 0 &&
			   (v[6] == ' ' || v[6] == '\t')) {
			v += 7;
			len -= 7;
			trim(&v, &len);
		} else {
			/* Another scheme (Basic, ...) is a credential we do not accept. */
			return -EINVAL;
		}
	}
	if (!v && x_api_key) {
		v = x_api_key;
		len = strlen(v);
		trim(&v, &len);
		if (len == 0)
			v = NULL;
	}
	if (!v)
		return -ENOENT;
	if (len + 1 > outlen || !well_formed_n(v, len))
		return -EINVAL;
	memcpy(out, v, len);
	out[len] = '\0';
	return 0;
}

int dl_apikey_display_prefix(const char *key, char *out, size_t outlen)
{
	if (!dl_apikey_well_formed(key))
		return -EINVAL;
	if (outlen < DL_APIKEY_DISPLAY_LEN + 1)
		return -ENOSPC;
	memcpy(out, key, DL_APIKEY_DISPLAY_LEN);
	out[DL_APIKEY_DISPLAY_LEN] = '\0';
	return 0;
}

int dl_apikey_hasher_new(const void *secret, size_t secret_len, char *errbuf, size_t errlen,
			     dl_apikey_hasher **ret)
{
	char digest[] = "SHA256";
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
		OSSL_PARAM_construct_end(),
	};
	dl_apikey_hasher *h;
	int r;

	if (!secret || secret_len < DL_APIKEY_SECRET_MIN) {
		snprintf(errbuf, errlen, "the API key secret must be at least %d bytes long",
			 DL_APIKEY_SECRET_MIN);
		return -EINVAL;
	}
	h = calloc(1, sizeof(*h));
	if (!h) {
		snprintf(errbuf, errlen, "out of memory");
		return -ENOMEM;
	}
	r = -EIO;
	h->mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	if (!h->mac) {
		snprintf(errbuf, errlen, "libcrypto has no HMAC");
		goto out_free;
	}
	h->ctx = EVP_MAC_CTX_new(h->mac);
	if (!h->ctx) {
		snprintf(errbuf, errlen, "libcrypto cannot make an HMAC context");
		goto out_free;
	}
	/* The context keeps its own copy of the key; ours never outlives this call. */
	if (!EVP_MAC_init(h->ctx, secret, secret_len, params)) {
		snprintf(errbuf, errlen, "libcrypto refused the HMAC-SHA-256 key");
		goto out_free;
	}
	*ret = h;
	return 0;

out_free:
	dl_apikey_hasher_free(h);
	return r;
}

int dl_apikey_hash(dl_apikey_hasher *h, const char *key, size_t len,
		       uint8_t out[DL_APIKEY_HASH_LEN])
{
	uint8_t md[EVP_MAX_MD_SIZE];
	size_t mdlen = 0;

	/* A NULL key re-initialises with the key given at creation. */
	if (!EVP_MAC_init(h->ctx, NULL, 0, NULL) ||
	    !EVP_MAC_update(h->ctx, (const unsigned char *)key, len) ||
	    !EVP_MAC_final(h->ctx, md, &mdlen, sizeof(md)) || mdlen != DL_APIKEY_HASH_LEN)
		return -EIO;
	memcpy(out, md, DL_APIKEY_HASH_LEN);
	OPENSSL_cleanse(md, sizeof(md));
	return 0;
}

void dl_apikey_hasher_free(dl_apikey_hasher *h)
{
	if (!h)
		return;
	EVP_MAC_CTX_free(h->ctx); /* cleanses the key it holds */
	EVP_MAC_free(h->mac);
	free(h);
}

bool dl_apikey_hash_equal(const uint8_t a[DL_APIKEY_HASH_LEN],
			      const uint8_t b[DL_APIKEY_HASH_LEN])
{
	return CRYPTO_memcmp(a, b, DL_APIKEY_HASH_LEN) == 0;
}

void dl_apikey_hash_bytea(const uint8_t h[DL_APIKEY_HASH_LEN], char out[67])
{
	out[0] = '\\';
	out[1] = 'x';
	dl_id_hex(h, DL_APIKEY_HASH_LEN, out + 2, 65);
}
