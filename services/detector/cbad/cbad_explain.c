/* SPDX-License-Identifier: Apache-2.0 */
/* cbad_explain: the evidence and the plain sentence of an anomaly's explanation. */
#include "services/detector/cbad/cbad_explain.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "services/detector/cbad/cbad_canon.h"

#define MAX_PARTS 64
#define PART_MAX 2048

typedef struct part {
	size_t key_off, key_len; /* key_len 0: a plain token */
	size_t off, len;         /* the whole member / token */
	size_t val_off;
	double bits;
} part;

/* Splits a top-level JSON object into members, honouring strings and nesting. */
static size_t split_json(const char *s, size_t n, part *p, size_t max)
{
	size_t i = 0, np = 0;

	while (i < n && s[i] != '{')
		i++;
	i++;
	while (i < n && np < max) {
		size_t start, depth = 0;
		bool in_str = false;

		while (i < n && (s[i] == ' ' || s[i] == ',' || s[i] == '\n' || s[i] == '\t' || s[i] == '\r'))
			i++;
		if (i >= n || s[i] != '"')
			break;
		start = i;
		p[np].key_off = i + 1;
		i++;
		while (i < n && s[i] != '"') {
			if (s[i] == '\\')
				i++;
			i++;
		}
		if (i >= n)
			break;
		p[np].key_len = i - p[np].key_off;
		i++;
		while (i < n && (s[i] == ' ' || s[i] == ':'))
			i++;
		p[np].val_off = i;
		for (; i < n; i++) {
			char c = s[i];

			if (in_str) {
				if (c == '\\')
					i++;
				else if (c == '"')
					in_str = false;
				continue;
			}
			if (c == '"')
				in_str = true;
			else if (c == '{' || c == '[')
				depth++;
			else if ((c == '}' || c == ']') && depth > 0)
				depth--;
			else if ((c == ',' || c == '}') && depth == 0)
				break;
		}
		p[np].off = start;
		p[np].len = (i < n ? i : n) - start;
		if (p[np].key_len > 0)
			np++;
		if (i < n && s[i] == '}')
			break;
	}
	return np;
}

static size_t split_tokens(const char *s, size_t n, part *p, size_t max)
{
	size_t i = 0, np = 0;

	while (i < n && np < max) {
		while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
			i++;
		if (i >= n)
			break;
		p[np].off = p[np].val_off = i;
		p[np].key_len = 0;
		while (i < n && s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
			i++;
		p[np].len = i - p[np].off;
		np++;
	}
	return np;
}

size_t cbad_explain_top_parts(cbad_novelty *n, const char *raw, size_t len, uint32_t mask,
			      cbad_evidence *out, size_t max)
{
	part parts[MAX_PARTS];
	char canon[PART_MAX];
	size_t np, i = 0, nout = 0;

	while (i < len && (raw[i] == ' ' || raw[i] == '\t'))
		i++;
	np = (i < len && raw[i] == '{') ? split_json(raw, len, parts, MAX_PARTS) :
					  split_tokens(raw, len, parts, MAX_PARTS);
	for (size_t k = 0; k < np; k++) {
		size_t plen = parts[k].len < PART_MAX ? parts[k].len : PART_MAX;
		size_t clen = cbad_canon_mask(raw + parts[k].off, plen, mask, canon, sizeof(canon));

		parts[k].bits = cbad_novelty_bits(n, canon, clen);
	}
	/* Selection of the costliest, stable for equal costs. */
	while (nout < max && nout < np) {
		size_t best = np;

		for (size_t k = 0; k < np; k++)
			if (parts[k].bits >= 0 && (best == np || parts[k].bits > parts[best].bits))
				best = k;
		if (best == np || parts[best].bits <= 0)
			break;
		{
			cbad_evidence *e = &out[nout++];
			const part *p = &parts[best];
			size_t vlen = p->off + p->len - p->val_off;

			memset(e, 0, sizeof(*e));
			if (p->key_len)
				snprintf(e->name, sizeof(e->name), "%.*s",
					 (int)(p->key_len < sizeof(e->name) - 1 ? p->key_len :
										  sizeof(e->name) - 1),
					 raw + p->key_off);
			else
				snprintf(e->name, sizeof(e->name), "token");
			cbad_canon_redact(raw + p->val_off, vlen < 512 ? vlen : 512, e->value,
					  sizeof(e->value));
			e->bits = p->bits;
			snprintf(e->detail, sizeof(e->detail), "costs %.0f bits given the baseline",
				 p->bits);
		}
		parts[best].bits = -1;
	}
	return nout;
}

void cbad_explain_sentence(cbad_result *r)
{
	char ev[200] = "";

	if (r->nevidence > 0) {
		const cbad_evidence *e = &r->evidence[0];

		if (r->kind == CBAD_KIND_EVENT)
			snprintf(ev, sizeof(ev), "; the costliest part is %s=%.60s (%.0f bits)", e->name,
				 e->value, e->bits);
		else if (e->detail[0])
			snprintf(ev, sizeof(ev), "; %s", e->detail);
	}
	/* A text signal (cbad_text) judges one prose field by its own byte model. */
	if (r->kind == CBAD_KIND_EVENT && !strncmp(r->signal, "text:", 5)) {
		snprintf(r->summary, sizeof(r->summary), "The text of field %s is unusual: %s, p=%.2g.",
			 r->signal + 5, r->nevidence > 0 ? r->evidence[0].detail : "", r->p_value);
		return;
	}
	switch (r->kind) {
	case CBAD_KIND_EVENT:
		snprintf(r->summary, sizeof(r->summary),
			 "This event costs %.0f bits to encode given the stream's recent events, "
			 "above their usual %.0f-%.0f bits (median %.0f), p=%.2g%s.",
			 r->value, r->base_low, r->base_high, r->base_median, r->p_value, ev);
		break;
	case CBAD_KIND_WINDOW:
		snprintf(r->summary, sizeof(r->summary),
			 "The mix of the last %u events drifted from the baseline: divergence %.3f "
			 "bits/event against a usual %.3f-%.3f, p=%.2g%s.",
			 r->window_events, r->value, r->base_low, r->base_high, r->p_value, ev);
		break;
	default: {
		char who[200] = "";

		if (r->entity_value[0])
			snprintf(who, sizeof(who), " for %s %s", r->entity_field, r->entity_value);
		snprintf(r->summary, sizeof(r->summary),
			 "Signal %s is %.4g%s, outside its usual range %.4g-%.4g (median %.4g), "
			 "p=%.2g%s.",
			 r->signal, r->value, who, r->base_low, r->base_high, r->base_median,
			 r->p_value, ev);
		break;
	}
	}
}
