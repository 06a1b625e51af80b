/* SPDX-License-Identifier: Apache-2.0 */
/* det_anomaly: turns a CBAD verdict on one event into a driftlock.anomaly.v1 message. */
#include "services/detector/det_anomaly.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/dl_id.h"

void det_anomaly_id(const char *org_id, const char *stream, const char *event_id,
		    char out[PROTO_ID_MAX + 1])
{
	/* NUL separators: no two different (org, stream, event) triples hash the same bytes. */
	char buf[PROTO_ORG_ID_LEN + PROTO_STREAM_MAX + PROTO_ID_MAX + 3];
	size_t lo = strnlen(org_id, PROTO_ORG_ID_LEN), ls = strnlen(stream, PROTO_STREAM_MAX),
	       le = strnlen(event_id, PROTO_ID_MAX), n = 0;
	char id[DL_ID_UUID_LEN + 1];

	memcpy(buf + n, org_id, lo);
	n += lo;
	buf[n++] = '\0';
	memcpy(buf + n, stream, ls);
	n += ls;
	buf[n++] = '\0';
	memcpy(buf + n, event_id, le);
	n += le;
	dl_id_derive(DET_ANOMALY_ID_NS, buf, n, id);
	memcpy(out, id, sizeof(id));
}

static bool name_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == ':' || c == '-';
}

/* Copies src as a schema name (1-64 of A-Za-z0-9._:-), or fallback when src is empty. */
static void copy_name(char *dst, const char *src, const char *fallback)
{
	size_t n = 0;

	if (!src || !*src)
		src = fallback;
	for (; src[n] && n < PROTO_ANOMALY_NAME_MAX; n++)
		dst[n] = name_char((unsigned char)src[n]) ? src[n] : '_';
	dst[n] = '\0';
}

static double finite_or_zero(double v)
{
	return isfinite(v) ? v : 0.0;
}

/* Copies at most max code points of the UTF-8 text src into dst (dstsz bytes), never cutting
 * a character in two. */
static void copy_text(char *dst, size_t dstsz, const char *src, size_t max)
{
	size_t i = 0, chars = 0;

	while (src[i] && chars < max) {
		unsigned char c = (unsigned char)src[i];
		size_t w = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : 4;

		if (i + w >= dstsz)
			break;
		for (size_t k = 1; k < w; k++)
			if (!src[i + k])
				goto out;
		i += w;
		chars++;
	}
out:
	memcpy(dst, src, i);
	dst[i] = '\0';
}

static enum proto_anomaly_kind map_kind(cbad_kind k)
{
	switch (k) {
	case CBAD_KIND_WINDOW:
		return PROTO_ANOMALY_KIND_WINDOW;
	case CBAD_KIND_VALUE:
		return PROTO_ANOMALY_KIND_VALUE;
	case CBAD_KIND_ENTITY:
		return PROTO_ANOMALY_KIND_ENTITY;
	case CBAD_KIND_RATE:
		return PROTO_ANOMALY_KIND_RATE;
	case CBAD_KIND_EVENT:
	default:
		return PROTO_ANOMALY_KIND_EVENT;
	}
}

static enum proto_anomaly_severity map_severity(cbad_severity s)
{
	switch (s) {
	case CBAD_SEVERITY_CRITICAL:
		return PROTO_ANOMALY_SEVERITY_CRITICAL;
	case CBAD_SEVERITY_HIGH:
		return PROTO_ANOMALY_SEVERITY_HIGH;
	case CBAD_SEVERITY_MEDIUM:
		return PROTO_ANOMALY_SEVERITY_MEDIUM;
	default:
		return PROTO_ANOMALY_SEVERITY_LOW;
	}
}

static void sort3(double *a, double *b, double *c)
{
	double t;

	if (*a > *b) {
		t = *a, *a = *b, *b = t;
	}
	if (*b > *c) {
		t = *b, *b = *c, *c = t;
	}
	if (*a > *b) {
		t = *a, *a = *b, *b = t;
	}
}

static void copy_evidence(struct proto_anomaly_evidence *pe, const cbad_evidence *ce)
{
	char detail[sizeof(ce->value) + sizeof(ce->detail) + 8];
	char *end = NULL;
	double v = 0.0;

	memset(pe, 0, sizeof(*pe));
	copy_name(pe->name, ce->name, "evidence");
	if (ce->value[0])
		v = strtod(ce->value, &end);
	if (ce->value[0] && end && *end == '\0' && isfinite(v)) {
		pe->has_value = true;
		pe->value = v;
		snprintf(detail, sizeof(detail), "%s", ce->detail);
	} else if (ce->value[0]) {
		/* A redacted text value: the schema's value is a number, so it goes in detail. */
		snprintf(detail, sizeof(detail), "%s%s%s", ce->value, ce->detail[0] ? ": " : "",
			 ce->detail);
	} else {
		snprintf(detail, sizeof(detail), "%s", ce->detail);
	}
	if (isfinite(ce->bits) && ce->bits > 0.0) {
		pe->has_bits = true;
		pe->bits = ce->bits;
	}
	if (detail[0]) {
		pe->has_detail = true;
		copy_text(pe->detail, sizeof(pe->detail), detail, PROTO_ANOMALY_DETAIL_MAX);
	}
}

int det_anomaly_from_result(const struct proto_event *ev, const cbad_result *r,
			    double sensitivity, int64_t detected_at_ms, struct proto_anomaly *ret)
{
	struct proto_anomaly *a;
	size_t n;

	if (!r->anomaly)
		return -EINVAL;
	a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	det_anomaly_id(ev->org_id, ev->stream, ev->id, a->id);
	memcpy(a->org_id, ev->org_id, sizeof(a->org_id));
	memcpy(a->stream, ev->stream, sizeof(a->stream));
	memcpy(a->event_id, ev->id, sizeof(a->event_id));
	a->event_ts_ms = ev->ts_ms;
	a->detected_at_ms = detected_at_ms;
	a->kind = map_kind(r->kind);
	a->score = isfinite(r->score) && r->score > 0.0 ? r->score : 0.0;
	a->p_value = isfinite(r->p_value) ? (r->p_value < 0 ? 0 : r->p_value > 1 ? 1 : r->p_value)
					  : 1.0;
	a->severity = map_severity(r->severity);

	n = r->nsignals < CBAD_MAX_SIGNALS ? r->nsignals : CBAD_MAX_SIGNALS;
	for (size_t i = 0; i < n && a->nsignals < PROTO_ANOMALY_SIGNALS_MAX; i++) {
		struct proto_anomaly_signal *s = &a->signals[a->nsignals];
		bool dup = false;

		copy_name(s->name, r->signals[i].name, "signal");
		for (size_t k = 0; k < a->nsignals; k++)
			dup = dup || strcmp(a->signals[k].name, s->name) == 0;
		if (dup) /* the schema refuses a repeated name; the first one stands */
			continue;
		s->value = finite_or_zero(r->signals[i].value);
		a->nsignals++;
	}

	if (a->kind == PROTO_ANOMALY_KIND_WINDOW) {
		a->has_window = true;
		a->window.start_ts_ms = r->window_start_ts;
		a->window.end_ts_ms = r->window_end_ts >= r->window_start_ts ? r->window_end_ts
									     : r->window_start_ts;
		a->window.events = r->window_events;
	}
	if (r->entity_field[0] || a->kind == PROTO_ANOMALY_KIND_ENTITY) {
		a->has_entity = true;
		copy_name(a->entity.field, r->entity_field, "entity");
		copy_text(a->entity.value, sizeof(a->entity.value), r->entity_value,
			  PROTO_ANOMALY_ENTITY_VALUE_MAX);
	}

	if (r->summary[0])
		copy_text(a->explanation.summary, sizeof(a->explanation.summary), r->summary,
			  PROTO_ANOMALY_SUMMARY_MAX);
	else
		snprintf(a->explanation.summary, sizeof(a->explanation.summary),
			 "An event of %s is unlike its baseline (p = %.3g).", ev->stream, a->p_value);
	copy_name(a->explanation.signal, r->signal, cbad_kind_name(r->kind));
	a->explanation.value = finite_or_zero(r->value);
	a->explanation.baseline_low = finite_or_zero(r->base_low);
	a->explanation.baseline_median = finite_or_zero(r->base_median);
	a->explanation.baseline_high = finite_or_zero(r->base_high);
	sort3(&a->explanation.baseline_low, &a->explanation.baseline_median,
	      &a->explanation.baseline_high);
	n = r->nevidence < CBAD_MAX_EVIDENCE ? r->nevidence : CBAD_MAX_EVIDENCE;
	for (size_t i = 0; i < n && i < PROTO_ANOMALY_EVIDENCE_MAX; i++)
		copy_evidence(&a->explanation.evidence[a->explanation.nevidence++], &r->evidence[i]);

	copy_text(a->excerpt, sizeof(a->excerpt), r->excerpt, PROTO_ANOMALY_EXCERPT_MAX);
	snprintf(a->detector.version, sizeof(a->detector.version), "%s", CBAD_VERSION);
	a->detector.sensitivity = isfinite(sensitivity) && sensitivity >= 0 && sensitivity <= 1
					  ? sensitivity
					  : 0.5;
	memcpy(ret, a, sizeof(*a));
	free(a);
	return 0;
}
