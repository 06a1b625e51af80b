/* SPDX-License-Identifier: Apache-2.0 */
/* cbad_canon: one-pass masking of volatile tokens, template ids, and redaction of secrets (internal to cbad). */
#ifndef DL_CBAD_CANON_H
#define DL_CBAD_CANON_H

#include <stddef.h>
#include <stdint.h>

/* Writes the canonical form of in[0..len) into out: tokens of the kinds set in mask
 * (CBAD_MASK_*) become short placeholders: "<T>" timestamps, "<U>" UUIDs, "<H>" hex ids of 8+
 * hex digits (with at least one digit), "#" digit runs of 4+ digits, "<IP>" IPv4 addresses
 * (with an optional :port), "<E>" e-mail addresses. In a JSON event (first non-blank byte '{'
 * or '['), number literals outside strings with a fraction, an exponent or 4+ digits become "#"
 * too (under CBAD_MASK_NUMBERS). The result is never longer than the input,
 * so outcap >= len always suffices; it is truncated at outcap otherwise (to the full form's first
 * outcap bytes). Bytes of out past the returned length (below outcap) are scratch. in and out
 * must not overlap. Returns its length. Pure and thread-safe. */
size_t cbad_canon_mask(const char *in, size_t len, uint32_t mask, char *out, size_t outcap);

/* The template id of a canonical form: a 64-bit FNV-1a hash of it with every digit dropped, so
 * that events differing only in counts, durations or amounts share a template. Never 0. */
uint64_t cbad_canon_template(const char *canon, size_t len);

/* Writes in[0..len) into out with secrets and personal data replaced: values of keys naming a
 * secret (password, passwd, pwd, secret, token, api_key, apikey, access_key, authorization,
 * private_key, credential), bearer tokens, AWS access key ids (AKIA/ASIA + 16), PEM private
 * keys, long high-entropy tokens (20+ characters mixing upper case, lower case and digits, or
 * "sk-" keys) become "[REDACTED]"; e-mail addresses "[EMAIL]"; card-like digit runs of 13-19
 * digits that pass the Luhn check "[CARD]". IP addresses are kept (operators need them).
 * Output is NUL-terminated and truncated to fit outcap (>= 1). Returns its length. */
size_t cbad_canon_redact(const char *in, size_t len, char *out, size_t outcap);

#endif /* DL_CBAD_CANON_H */
