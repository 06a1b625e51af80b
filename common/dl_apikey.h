/* SPDX-License-Identifier: Apache-2.0 */
/* dl_apikey: the API key format, its keyed hash and where a request carries it (pure, no I/O;
 * shared by ingest_auth, driftlock-admin and the detector's direct producers). */
#ifndef DL_COMMON_APIKEY_H
#define DL_COMMON_APIKEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A key is "dlk_" followed by base62 of 32 random bytes (256 bits), 43 characters. */
#define DL_APIKEY_PREFIX "dlk_"
#define DL_APIKEY_RANDOM_BYTES 32
#define DL_APIKEY_LEN 47
/* The part of a key shown in listings and logs: "dlk_" and the next 8 characters. */
#define DL_APIKEY_DISPLAY_LEN 12
/* HMAC-SHA-256 output. */
#define DL_APIKEY_HASH_LEN 32
/* Shortest server key secret accepted (bytes). */
#define DL_APIKEY_SECRET_MIN 32

/* Writes a new key (DL_APIKEY_LEN characters and a NUL) into out. Returns 0, -ENOSPC when
 * outlen is too small, -EIO when the random generator failed; out untouched on failure.
 * Thread-safe. */
int dl_apikey_new(char *out, size_t outlen);

/* True when key has exactly the shape of a key: the prefix and 43 base62 characters. Checked
 * before anything is hashed or looked up, so garbage never reaches the database. */
bool dl_apikey_well_formed(const char *key);

/* The key in a request: "Authorization: Bearer <key>" (scheme case-insensitive, spaces around
 * the key ignored) or else "X-Api-Key: <key>" (surrounding spaces ignored). Either may be NULL.
 * Returns 0 with the key copied into out (NUL-terminated); -ENOENT when neither header carries
 * anything (missing); -EINVAL when a value is there but not a well-formed key (also when it is
 * longer than outlen - 1). out untouched on failure. */
int dl_apikey_from_headers(const char *authorization, const char *x_api_key, char *out,
			       size_t outlen);

/* The display prefix of a well-formed key (DL_APIKEY_DISPLAY_LEN characters and a NUL; it
 * matches api_keys.prefix's CHECK). Returns 0 or -EINVAL (not a key) / -ENOSPC. */
int dl_apikey_display_prefix(const char *key, char *out, size_t outlen);

/* A hasher keyed with the server's key secret: HMAC-SHA-256(secret, key). */
typedef struct dl_apikey_hasher dl_apikey_hasher;

/* Makes a hasher for secret (at least DL_APIKEY_SECRET_MIN bytes; copied). Returns 0 and
 * *ret (free with dl_apikey_hasher_free), -EINVAL for a short secret, -ENOMEM or -EIO
 * (libcrypto refused) with text in errbuf; *ret untouched on failure. */
int dl_apikey_hasher_new(const void *secret, size_t secret_len, char *errbuf, size_t errlen,
			     dl_apikey_hasher **ret);

/* Writes HMAC-SHA-256(secret, key) into out. Returns 0 or -EIO (libcrypto failed; out
 * untouched). One hasher is used by one thread at a time. */
int dl_apikey_hash(dl_apikey_hasher *h, const char *key, size_t len,
		       uint8_t out[DL_APIKEY_HASH_LEN]);

/* Wipes the secret and frees h. Accepts NULL. */
void dl_apikey_hasher_free(dl_apikey_hasher *h);

/* Constant-time equality of two hashes (CRYPTO_memcmp). */
bool dl_apikey_hash_equal(const uint8_t a[DL_APIKEY_HASH_LEN],
			      const uint8_t b[DL_APIKEY_HASH_LEN]);

/* The hash as a PostgreSQL bytea literal in hex form, "\x" and 64 hex digits (67 bytes with the
 * NUL), for passing as a text parameter. */
void dl_apikey_hash_bytea(const uint8_t h[DL_APIKEY_HASH_LEN], char out[67]);

#endif /* DL_COMMON_APIKEY_H */
