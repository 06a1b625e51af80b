/* SPDX-License-Identifier: Apache-2.0 */
/* cbad_canon: one-pass masking of volatile tokens, template ids, and redaction of secrets. */
#include "services/detector/cbad/cbad_canon.h"

#include <stdbool.h>
#include <string.h>

#include "services/detector/cbad/cbad.h"

/* Character classes, one table lookup instead of a chain of comparisons (the masking loop
 * looks at every byte of every event). */
#define C_DIGIT 1 /* must stay 1: mask_run adds it up */
#define C_ALPHA 2
#define C_HEX 4
#define C_WORD 8 /* what a "word" (a candidate timestamp, IP, e-mail, UUID or id) is made of */
#define C_AT 16
#define C_DASH 32
#define C_JSON 64 /* '"', '\\' and ':', which a JSON event's string state looks at */

static const unsigned char cclass[256] = {
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 64, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 40, 8, 0,
	13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 72, 0, 0, 0, 0, 0,
	24, 14, 14, 14, 14, 14, 14, 10, 10, 10, 10, 10, 10, 10, 10, 10,
	10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 0, 64, 0, 0, 8,
	0, 14, 14, 14, 14, 14, 14, 10, 10, 10, 10, 10, 10, 10, 10, 10,
	10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
};

static inline bool is_digit(unsigned char c)
{
	return cclass[c] & C_DIGIT;
}

static inline bool is_alpha(unsigned char c)
{
	return cclass[c] & C_ALPHA;
}

static inline bool is_alnum(unsigned char c)
{
	return cclass[c] & (C_DIGIT | C_ALPHA);
}

static inline bool is_hex(unsigned char c)
{
	return cclass[c] & C_HEX;
}

static inline bool is_word(unsigned char c)
{
	return cclass[c] & C_WORD;
}

static size_t digits_at(const char *s, size_t n, size_t i)
{
	size_t k = 0;

	while (i + k < n && is_digit((unsigned char)s[i + k]))
		k++;
	return k;
}

/* dd:dd(:dd)?([.,]d+)? at s[i]; returns the length or 0. */
static size_t match_time(const char *s, size_t n, size_t i)
{
	size_t j = i;

	if (digits_at(s, n, j) != 2 || j + 2 >= n || s[j + 2] != ':')
		return 0;
	j += 3;
	if (digits_at(s, n, j) != 2)
		return 0;
	j += 2;
	if (j + 2 < n && s[j] == ':' && digits_at(s, n, j + 1) == 2)
		j += 3;
	if (j + 1 < n && (s[j] == '.' || s[j] == ',') && digits_at(s, n, j + 1) > 0)
		j += 1 + digits_at(s, n, j + 1);
	return j - i;
}

/* An ISO-8601/RFC 3339 date, optionally with a time and a zone; returns the length or 0. */
static size_t match_timestamp(const char *s, size_t n, size_t i)
{
	size_t j = i, t;

	if (digits_at(s, n, j) != 4 || j + 10 > n || s[j + 4] != '-' || s[j + 7] != '-' ||
	    digits_at(s, n, j + 5) != 2 || digits_at(s, n, j + 8) != 2)
		return 0;
	j += 10;
	if (j + 1 < n && (s[j] == 'T' || s[j] == ' ') && (t = match_time(s, n, j + 1)) > 0) {
		j += 1 + t;
		if (j < n && s[j] == 'Z')
			j++;
		else if (j + 5 < n && (s[j] == '+' || s[j] == '-') && digits_at(s, n, j + 1) == 2 &&
			 s[j + 3] == ':' && digits_at(s, n, j + 4) == 2)
			j += 6;
	}
	return j - i;
}

static size_t match_uuid(const char *s, size_t n, size_t i)
{
	static const int groups[5] = {8, 4, 4, 4, 12};
	size_t j = i;

	for (int g = 0; g < 5; g++) {
		for (int k = 0; k < groups[g]; k++, j++)
			if (j >= n || !is_hex((unsigned char)s[j]))
				return 0;
		if (g < 4) {
			if (j >= n || s[j] != '-')
				return 0;
			j++;
		}
	}
	return j - i;
}

static size_t match_ip(const char *s, size_t n, size_t i)
{
	size_t j = i, d;

	for (int part = 0; part < 4; part++) {
		d = digits_at(s, n, j);
		if (d < 1 || d > 3)
			return 0;
		j += d;
		if (part < 3) {
			if (j >= n || s[j] != '.')
				return 0;
			j++;
		}
	}
	if (j < n && (is_digit((unsigned char)s[j]) ||
		      (s[j] == '.' && j + 1 < n && is_digit((unsigned char)s[j + 1]))))
		return 0;
	if (j + 1 < n && s[j] == ':' && (d = digits_at(s, n, j + 1)) > 0 && d <= 5)
		j += 1 + d;
	return j - i;
}

/* An e-mail address inside the word s[ws..we): returns true with its bounds. */
static bool find_email(const char *s, size_t ws, size_t we, size_t *es, size_t *ee)
{
	const char *at = memchr(s + ws, '@', we - ws);
	size_t a, b, dot = 0;

	if (!at)
		return false;
	a = (size_t)(at - s);
	b = a + 1;
	while (b < we && (is_alnum((unsigned char)s[b]) || s[b] == '.' || s[b] == '-')) {
		if (s[b] == '.')
			dot = b;
		b++;
	}
	while (b > a + 1 && s[b - 1] == '.')
		b--;
	if (a == ws || dot == 0 || dot + 2 > b || !is_alpha((unsigned char)s[b - 1]))
		return false;
	*es = ws;
	*ee = b;
	return true;
}

static size_t put(char *out, size_t o, size_t cap, const char *p, size_t n)
{
	if (o + n > cap)
		n = o < cap ? cap - o : 0;
	memcpy(out + o, p, n);
	return o + n;
}

/* put() for a word in[ws..we) of an input of length len: most words are short, and copying a
 * fixed 16 bytes (when both buffers hold them) is a few moves instead of a call; the bytes past
 * the word are rewritten by what follows it or lie past the returned length. */
static inline size_t put_word(char *out, size_t o, size_t cap, const char *in, size_t ws,
			      size_t we, size_t len)
{
	if (we - ws <= 16 && o + 16 <= cap && ws + 16 <= len) {
		memcpy(out + o, in + ws, 16);
		return o + (we - ws);
	}
	return put(out, o, cap, in + ws, we - ws);
}

/* Masks one alphanumeric run s[i..e) of an input of length slen: hex ids and long digit runs. */
static size_t mask_run(const char *s, size_t i, size_t e, size_t slen, uint32_t mask, char *out,
		       size_t o, size_t cap)
{
	size_t len = e - i, ndig = 0;
	unsigned all = C_HEX;
	bool hex;

	/* One class load per byte: digits counted (C_DIGIT is 1), classes intersected. */
	for (size_t k = i; k < e; k++) {
		unsigned cl = cclass[(unsigned char)s[k]];

		ndig += cl & C_DIGIT;
		all &= cl;
	}
	hex = all & C_HEX;
	if ((mask & CBAD_MASK_HEX) && hex && len >= 8 && ndig > 0 && ndig < len)
		return put(out, o, cap, "<H>", 3);
	if (!(mask & CBAD_MASK_NUMBERS) || ndig < 4)
		return put_word(out, o, cap, s, i, e, slen);
	while (i < e) {
		size_t d = digits_at(s, e, i);

		if (d >= 4) {
			o = put(out, o, cap, "#", 1);
			i += d;
		} else if (d > 0) {
			o = put(out, o, cap, s + i, d);
			i += d;
		} else {
			o = put(out, o, cap, s + i, 1);
			i++;
		}
	}
	return o;
}

/* A JSON number literal (outside strings) at s[ws..we) that is a measurement rather than a
 * code: it has a fraction or an exponent, or 4 or more digits. Integers of up to 3 digits
 * (status codes, small counts) stay, as they do in text. */
static bool json_measurement(const char *s, size_t ws, size_t we)
{
	size_t i = ws, nd = 0;
	bool frac = false;

	if (i < we && s[i] == '-')
		i++;
	if (i >= we || !is_digit((unsigned char)s[i]))
		return false;
	for (; i < we; i++) {
		unsigned char c = (unsigned char)s[i];

		if (is_digit(c))
			nd++;
		else if (c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-')
			frac = true;
		else
			return false;
	}
	return frac || nd >= 4;
}

size_t cbad_canon_mask(const char *in, size_t len, uint32_t mask, char *out, size_t outcap)
{
	size_t i = 0, o = 0;
	bool json = false, in_str = false;

	/* In a JSON event, numeric values are the value channel's domain: their digits are noise
	 * to the structure channels, so measurements become "#" (under CBAD_MASK_NUMBERS). */
	while (i < len && (in[i] == ' ' || in[i] == '\t' || in[i] == '\r' || in[i] == '\n'))
		i++;
	json = i < len && (in[i] == '{' || in[i] == '[') && (mask & CBAD_MASK_NUMBERS);
	i = 0;
	while (i < len && o < outcap) {
		unsigned char c = (unsigned char)in[i];
		size_t ws, we, m, es, ee;
		unsigned acc;

		unsigned cl = cclass[c];

		if (!(cl & C_WORD) || ((cl & C_JSON) && json && !in_str && c == ':')) {
			out[o++] = (char)c;
			i++;
			if (!(cl & C_JSON) || !json)
				continue;
			if (c == '"')
				in_str = !in_str;
			else if (in_str && c == '\\' && i < len && o < outcap)
				out[o++] = in[i++]; /* an escaped character never ends the string */
			continue;
		}
		ws = i;
		we = i;
		acc = 0;
		while (we < len && (cclass[(unsigned char)in[we]] & C_WORD))
			acc |= cclass[(unsigned char)in[we++]];
		/* Most words are plain: without a digit or an '@', only a UUID (36 characters with
		 * dashes) could be masked, so the others are copied as they are. */
		if (!(acc & (C_DIGIT | C_AT)) && (we - ws < 36 || !(acc & C_DASH))) {
			o = put_word(out, o, outcap, in, ws, we, len);
			i = we;
			continue;
		}
		if (json && !in_str && json_measurement(in, ws, we)) {
			o = put(out, o, outcap, "#", 1);
			i = we;
			continue;
		}
		/* A date followed by " hh:mm" belongs to one timestamp. */
		m = is_digit(c) && (mask & CBAD_MASK_TIMESTAMPS) ? match_timestamp(in, len, ws) : 0;
		if (m > 0) {
			o = put(out, o, outcap, "<T>", 3);
			i = ws + m;
			continue;
		}
		if (we - ws < 3) {
			/* Too short for any masked kind but a number it does not mask either. */
			o = put_word(out, o, outcap, in, ws, we, len);
			i = we;
			continue;
		}
		if ((mask & CBAD_MASK_EMAILS) && find_email(in, ws, we, &es, &ee)) {
			o = put(out, o, outcap, "<E>", 3);
			i = ee;
			continue;
		}
		/* Within the word, walk its parts separated by punctuation. */
		i = ws;
		while (i < we && o < outcap) {
			size_t e;

			if (!is_alnum((unsigned char)in[i])) {
				out[o++] = in[i++];
				continue;
			}
			if (!is_digit((unsigned char)in[i])) {
				/* A part starting with a letter can only be a hex id, a UUID or
				 * hold a long number: mask_run decides, without the matchers. */
				e = i;
				while (e < we && is_alnum((unsigned char)in[e]))
					e++;
				if (e - i < 8 || !is_hex((unsigned char)in[i])) {
					o = mask_run(in, i, e, len, mask, out, o, outcap);
					i = e;
					continue;
				}
			}
			if ((mask & CBAD_MASK_UUIDS) && we - i >= 36 && (m = match_uuid(in, we, i)) > 0) {
				o = put(out, o, outcap, "<U>", 3);
				i += m;
				continue;
			}
			if ((mask & CBAD_MASK_IPS) && is_digit((unsigned char)in[i]) &&
			    (i == ws || in[i - 1] != '.') &&
			    (m = match_ip(in, we, i)) > 0) {
				o = put(out, o, outcap, "<IP>", 4);
				i += m;
				continue;
			}
			if ((mask & CBAD_MASK_TIMESTAMPS) && is_digit((unsigned char)in[i]) &&
			    (i == ws || !is_digit((unsigned char)in[i - 1])) &&
			    (m = match_time(in, we, i)) > 0 && m >= 8) {
				o = put(out, o, outcap, "<T>", 3);
				i += m;
				continue;
			}
			e = i;
			while (e < we && is_alnum((unsigned char)in[e]))
				e++;
			o = mask_run(in, i, e, len, mask, out, o, outcap);
			i = e;
		}
	}
	return o;
}

uint64_t cbad_canon_template(const char *canon, size_t len)
{
	const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
	uint64_t h = 0xcbf29ce484222325ull;
	size_t i = 0;

	/* Eight bytes at a time where none is a digit (most of a masked event: its numbers are
	 * already '#'), so the loop runs no class test per byte; the same FNV-1a steps in the
	 * same order. A byte of w ^ '0'*ones below 10 is exactly an ASCII digit, and "some byte
	 * below 10" ((t - 10 ones) & ~t & highs != 0) is exact as a whole. */
	for (; i + 8 <= len; i += 8) {
		uint64_t w, t;

		memcpy(&w, canon + i, 8);
		t = w ^ (ones * '0');
		if (((t - ones * 10) & ~t & highs) == 0) {
			const unsigned char *b = (const unsigned char *)canon + i;

			for (int k = 0; k < 8; k++)
				h = (h ^ b[k]) * 0x100000001b3ull;
			continue;
		}
		for (size_t k = i; k < i + 8; k++) {
			unsigned char c = (unsigned char)canon[k];

			if (!is_digit(c))
				h = (h ^ c) * 0x100000001b3ull;
		}
	}
	for (; i < len; i++) {
		unsigned char c = (unsigned char)canon[i];

		if (!is_digit(c))
			h = (h ^ c) * 0x100000001b3ull;
	}
	return h ? h : 1;
}

/* ---- redaction ---- */

static const char *const secret_keys[] = {
	"password", "passwd", "pwd", "secret", "token", "api_key", "apikey", "api-key",
	"access_key", "authorization", "private_key", "credential",
};

static bool ci_contains(const char *s, size_t n, const char *needle)
{
	size_t m = strlen(needle);

	for (size_t i = 0; i + m <= n; i++) {
		size_t k = 0;

		while (k < m && (is_alpha((unsigned char)s[i + k]) ? (s[i + k] | 0x20) : s[i + k]) ==
					needle[k])
			k++;
		if (k == m)
			return true;
	}
	return false;
}

static bool is_secret_key(const char *s, size_t n)
{
	for (size_t k = 0; k < sizeof(secret_keys) / sizeof(secret_keys[0]); k++)
		if (ci_contains(s, n, secret_keys[k]))
			return true;
	return false;
}

static inline bool is_tok(unsigned char c)
{
	return is_alnum(c) || c == '_' || c == '-' || c == '+' || c == '/' || c == '.';
}

static bool luhn_ok(const char *digits, size_t n)
{
	int sum = 0;

	for (size_t k = 0; k < n; k++) {
		int d = digits[n - 1 - k] - '0';

		if (k & 1) {
			d *= 2;
			if (d > 9)
				d -= 9;
		}
		sum += d;
	}
	return sum % 10 == 0;
}

/* A card-like run at s[i]: 13..19 digits, optionally grouped by single spaces or dashes. */
static size_t match_card(const char *s, size_t n, size_t i)
{
	char digits[20];
	size_t nd = 0, j = i, last = i;

	if (i > 0 && is_alnum((unsigned char)s[i - 1]))
		return 0;
	while (j < n && nd <= 19) {
		if (is_digit((unsigned char)s[j])) {
			if (nd < 19)
				digits[nd] = s[j];
			nd++;
			last = ++j;
		} else if ((s[j] == ' ' || s[j] == '-') && j + 1 < n && is_digit((unsigned char)s[j + 1]) &&
			   nd > 0) {
			j++;
		} else {
			break;
		}
	}
	if (nd < 13 || nd > 19 || (last < n && is_alnum((unsigned char)s[last])))
		return 0;
	return luhn_ok(digits, nd) ? last - i : 0;
}

/* A token that looks like a secret on its own. */
static bool secret_token(const char *s, size_t n)
{
	bool up = false, lo = false, dig = false;

	if (n >= 20 && (s[0] == 'A') && (s[1] == 'K' || s[1] == 'S') && s[2] == 'I' && s[3] == 'A')
		return true;
	if (n >= 19 && s[0] == 's' && s[1] == 'k' && (s[2] == '-' || s[2] == '_'))
		return true;
	if (n >= 20 && (!strncmp(s, "ghp_", 4) || !strncmp(s, "xox", 3)))
		return true;
	if (n < 20)
		return false;
	for (size_t k = 0; k < n; k++) {
		unsigned char c = (unsigned char)s[k];

		up |= c >= 'A' && c <= 'Z';
		lo |= c >= 'a' && c <= 'z';
		dig |= is_digit(c);
	}
	return up && lo && dig;
}

#define REDACTED "[REDACTED]"

/* Appends to a NUL-terminated output of capacity cap (>= 1). */
static size_t app(char *out, size_t o, size_t cap, const char *p, size_t n)
{
	if (o + n + 1 > cap)
		n = cap - 1 - o;
	memcpy(out + o, p, n);
	return o + n;
}

size_t cbad_canon_redact(const char *in, size_t len, char *out, size_t outcap)
{
	size_t i = 0, o = 0;
	static const char pem[] = "-----BEGIN";

	if (outcap == 0)
		return 0;
	while (i < len && o + 1 < outcap) {
		unsigned char c = (unsigned char)in[i];
		size_t e, m, es, ee;

		if (c == '-' && len - i >= sizeof(pem) - 1 && !memcmp(in + i, pem, sizeof(pem) - 1)) {
			const char *end = NULL;

			for (size_t k = i + 10; k + 8 <= len; k++)
				if (!memcmp(in + k, "-----END", 8)) {
					end = in + k;
					break;
				}
			o = app(out, o, outcap, REDACTED, sizeof(REDACTED) - 1);
			if (!end) {
				i = len;
				break;
			}
			i = (size_t)(end - in) + 8;
			while (i < len && (in[i] == '-' || is_alpha((unsigned char)in[i]) || in[i] == ' '))
				i++;
			continue;
		}
		if (is_digit(c) && (m = match_card(in, len, i)) > 0) {
			o = app(out, o, outcap, "[CARD]", 6);
			i += m;
			continue;
		}
		if (!is_tok(c) && c != '@') {
			out[o++] = (char)c;
			i++;
			continue;
		}
		e = i;
		while (e < len && (is_tok((unsigned char)in[e]) || in[e] == '@'))
			e++;
		if (memchr(in + i, '@', e - i) && find_email(in, i, e, &es, &ee)) {
			o = app(out, o, outcap, "[EMAIL]", 7);
			i = ee;
			continue;
		}
		if (secret_token(in + i, e - i)) {
			o = app(out, o, outcap, REDACTED, sizeof(REDACTED) - 1);
			i = e;
			continue;
		}
		o = app(out, o, outcap, in + i, e - i);
		/* key=value, "key":"value", key: value and "Bearer x": redact the value. */
		if ((e - i == 6 && ci_contains(in + i, 6, "bearer")) || is_secret_key(in + i, e - i)) {
			size_t v = e, vs;
			bool bearer = e - i == 6 && ci_contains(in + i, 6, "bearer");

			while (v < len && (in[v] == '"' || in[v] == '\'' || in[v] == ' ' || in[v] == '\\' ||
					   (!bearer && (in[v] == '=' || in[v] == ':'))))
				v++;
			vs = v;
			if (!bearer && len - v > 7 &&
			    (ci_contains(in + v, 7, "bearer ") || ci_contains(in + v, 6, "basic ")))
				v += (in[v] | 0x20) == 'b' && (in[v + 1] | 0x20) == 'e' ? 7 : 6;
			while (v < len && in[v] != '"' && in[v] != '\'' && in[v] != ' ' && in[v] != ',' &&
			       in[v] != '&' && in[v] != ';' && in[v] != '}' && in[v] != '\\' &&
			       in[v] != '\n')
				v++;
			if (v > vs && (bearer ? v - vs >= 8 : vs > e)) {
				o = app(out, o, outcap, in + e, vs - e);
				o = app(out, o, outcap, REDACTED, sizeof(REDACTED) - 1);
				i = v;
				continue;
			}
		}
		i = e;
	}
	out[o] = '\0';
	return o;
}
