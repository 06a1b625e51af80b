/* SPDX-License-Identifier: Apache-2.0 */
/* dl_id: time-ordered random ids (UUIDv7), content-derived ids (UUIDv8 from SHA-256), id
 * validation and random tokens. */
#ifndef DL_COMMON_ID_H
#define DL_COMMON_ID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Length of the text form of a UUID, "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", without the NUL. */
#define DL_ID_UUID_LEN 36

/* Longest token dl_id_is_valid_token() is usually asked about (event, anomaly, request ids). */
#define DL_ID_TOKEN_MAX 128

/* Writes a new UUIDv7 in lowercase text form into out (37 bytes, NUL-terminated): 48 bits of
 * Unix milliseconds, a 12-bit sequence and 62 random bits from OpenSSL RAND_bytes.
 * Ids from one process strictly increase (as strings and as bytes), even within one millisecond
 * and if the wall clock steps back: the sequence is bumped, and when it is exhausted the
 * timestamp is advanced past the clock by a millisecond.
 * Returns 0, or -EIO when the random generator fails (out untouched).
 * Thread-safe. */
int dl_id_new(char out[DL_ID_UUID_LEN + 1]);

/* Writes the id derived from content: the first 16 bytes of SHA-256(ns || 0x00 || data) with the
 * version nibble set to 8 and the RFC 9562 variant bits, in lowercase text form.
 * Deterministic: the same ns and data give the same id in every process; different namespaces
 * give unrelated ids. ns NULL is the empty namespace; data may be NULL when len is 0.
 * Cannot fail except when libcrypto cannot allocate a digest context, which aborts.
 * Thread-safe. */
void dl_id_derive(const char *ns, const void *data, size_t len, char out[DL_ID_UUID_LEN + 1]);

/* True when s is the 36-character text form of a UUID (8-4-4-4-12 hex digits, either case).
 * Any version; NULL is false. Thread-safe. */
bool dl_id_is_uuid(const char *s);

/* The Unix-millisecond timestamp of a UUIDv7 in text form, or -EINVAL when s is not a UUID of
 * version 7 with the RFC 9562 variant. Thread-safe. */
int64_t dl_id_uuid7_ms(const char *s);

/* True when s has 1..max characters, each one of A-Za-z0-9 . _ : - (the id alphabet of event,
 * anomaly and request ids). NULL is false. Thread-safe. */
bool dl_id_is_valid_token(const char *s, size_t max);

/* Writes the lowercase hex of len bytes of data and a NUL into out.
 * Returns 0, or -ENOSPC when outlen < 2 * len + 1 (out untouched). Thread-safe. */
int dl_id_hex(const void *data, size_t len, char *out, size_t outlen);

/* Characters dl_id_random_token() writes after the prefix for random_bytes bytes: the fixed
 * width of their base62 form (for example 16 bytes -> 22, 32 bytes -> 43). */
size_t dl_id_random_token_len(size_t random_bytes);

/* Writes prefix (NULL = none) followed by random_bytes bytes from RAND_bytes in base62
 * (0-9A-Za-z), zero-padded to dl_id_random_token_len(random_bytes) characters, and a NUL.
 * Meant for secrets such as API keys: use at least 16 random bytes.
 * Returns 0; -EINVAL when random_bytes is 0 or more than 64; -ENOSPC when out is too small;
 * -EIO when the random generator fails. On failure out is untouched. Thread-safe. */
int dl_id_random_token(const char *prefix, size_t random_bytes, char *out, size_t outlen);

#endif /* DL_COMMON_ID_H */
