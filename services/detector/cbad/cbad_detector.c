/* SPDX-License-Identifier: Apache-2.0 */
/* cbad_detector: one stream's detector: channels combined, sensitivity, severity, warm-up, state. */
#include "services/detector/cbad/cbad.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#include "services/detector/cbad/cbad_archive.h"
#include "services/detector/cbad/cbad_calib.h"
#include "services/detector/cbad/cbad_canon.h"
#include "services/detector/cbad/cbad_detector_private.h"
#include "services/detector/cbad/cbad_drift.h"
#include "services/detector/cbad/cbad_explain.h"
#include "services/detector/cbad/cbad_novelty.h"
#include "services/detector/cbad/cbad_numeric.h"
#include "services/detector/cbad/cbad_ser.h"
#include "services/detector/cbad/cbad_signal.h"
#include "services/detector/cbad/cbad_text.h"

#define STATE_MAGIC "CBAD"
#define STATE_VERSION 3u /* 3: the text channel (cbad_text) and the archive (cbad_archive) */
#define STATE_MAX_RAW (64u << 20)
#define NOVELTY_HISTORY 1000     /* normal novelty scores the p-value ranks against */
#define NOVELTY_MIN_SCALE 8.0    /* bits: floor of the tail scale beyond the largest score */
#define REGIME_EMA (1.0 / 32)    /* smoothing of the share of recent novelty anomalies */
#define REGIME_SHARE 0.5         /* above it, anomalies are a new normal and are learned */
#define DRIFT_OVERREP 3.0        /* a drift's top template is this over-represented ... */
#define DRIFT_SHARE 0.25         /* ... and makes up this share of the newest step (window / 4) */
#define DRIFT_PENALTY 10.0       /* windows overlap: a window's p-value is multiplied by this */
#define DRIFT_REPORT_P 0.1       /* a drift is reported while its penalised p-value is below */
/* What the detector learns must not depend on the sensitivity, so that a higher sensitivity
 * flags a superset of the events a lower one flags: learning uses the default's alpha. */
#define LEARN_ALPHA 1e-3
/* The warm-up (nothing flagged, every event learned) lasts 3/4 of baseline_events: each channel
 * has its own readiness rule on top (novelty: two dictionary builds and 32 scores; drift: 16
 * windows; numeric tests: 16 values and 64-256 statistics), so the warm-up only has to cover
 * their thinnest early calibration. Measured: ending it at 3/4 changes no flag on the labelled
 * streams and lets the numeric channels judge rows 750-1000 of a series (NAB standard 31.5 ->
 * 34.8); at 1/2 the entity calibrators are still thin (audit-log and host-metrics lose 0.005 F1). */
#define WARM_UP_SHARE 0.75
#define SCORE_K 3.0              /* -log10 of the default alpha: the score there is 0.5 */
#define MAX_SIGNALS 24
#define TEMPLATE_SLOTS 4096      /* template ids hashed for the per-template cap of the baseline */
#define TEMPLATE_COPIES 4        /* the baseline keeps at most this many events of one template */
#define QUARANTINE_N 32          /* anomalies waiting to join the baseline */
#define QUARANTINE_BYTES 512     /* of each, the first bytes of its canonical form */
#define QUARANTINE_PER_TEMPLATE 2

struct cbad_detector {
	cbad_settings s;
	uint32_t channels;
	double alpha;
	cbad_novelty *nov;
	cbad_calib *ncal;
	cbad_drift *drift;
	cbad_numeric *num;
	cbad_text *text;
	cbad_archive *arch; /* recurring normal forms kept after they leave the baseline */

	/* The baseline: canonical events, oldest first, with a ring of their lengths. Its bytes
	 * are those of dict (what the current CDict was built from, which must not change until
	 * the next rebuild) followed by pend (what was appended since), less the first bhead
	 * bytes of the two (evicted since): one copy of the baseline instead of a ring and a
	 * linear copy of it for the CDict, and a rebuild moves only the difference. */
	uint8_t *dict;
	uint32_t dict_cap; /* allocated as the dictionary needs it: few templates, few bytes */
	uint32_t aoff; /* archive bytes in front of the baseline in dict */
	uint32_t dict_len; /* baseline bytes in dict, after the archive */
	uint8_t *pend;
	uint32_t pend_len, pend_cap;
	uint32_t bcap, bhead, bused;
	uint32_t *blen;
	uint16_t *btmpl; /* template slot of each baseline event */
	uint32_t lhead, nb;
	uint8_t tcount[TEMPLATE_SLOTS]; /* baseline events per template slot */
	char *canon;
	/* Quarantine: anomalies join the baseline only after baseline_events / 2 more events, so
	 * that a burst of one new thing stays novel while a rare but recurring thing is learned. */
	uint32_t qhead, qn;
	uint64_t q_admit[QUARANTINE_N];
	uint16_t q_slot[QUARANTINE_N];
	uint32_t q_len[QUARANTINE_N];
	uint64_t q_tmpl[QUARANTINE_N];
	char *q_bytes[QUARANTINE_N]; /* malloc'd while waiting: most streams quarantine little */
	uint32_t q_held; /* bytes of them */

	uint64_t seen, anomalies;
	uint32_t since_rebuild, rebuilds;
	bool bchanged; /* the baseline changed since the CDict was built */
	/* A hop ended with the baseline changed and its CDict is not built yet: cbad_detector_idle()
	 * or the next process() builds it, from the same bytes either way (nothing else changes the
	 * baseline in between), so results never depend on which one does. */
	bool rebuild_due;
	double regime; /* EMA of novelty anomalies */
	bool drift_active;
	cbad_drift_report drift_rep;
};

const char *cbad_kind_name(cbad_kind k)
{
	static const char *const names[] = {"event", "window", "value", "entity", "rate"};

	return (unsigned)k < 5 ? names[k] : "unknown";
}

const char *cbad_severity_name(cbad_severity s)
{
	static const char *const names[] = {"none", "low", "medium", "high", "critical"};

	return (unsigned)s < 5 ? names[s] : "unknown";
}

double cbad_sensitivity_alpha(double sensitivity)
{
	if (!(sensitivity >= 0))
		sensitivity = 0;
	if (sensitivity > 1)
		sensitivity = 1;
	/* 1e-5 at 0, 1e-3 at the default 0.5, 0.1 at 1: one decade per 0.25. */
	return pow(10.0, -5.0 + 4.0 * sensitivity);
}

/* snprintf(dst, cap, "%s", src) without the format machinery: it ran 16 times per event. */
/* Events of the warm-up (at least 1). */
static uint64_t warm_up_events(const cbad_settings *s)
{
	uint64_t w = (uint64_t)((double)s->baseline_events * WARM_UP_SHARE);

	return w > 0 ? w : 1;
}

static void copy_name(char *dst, size_t cap, const char *src)
{
	size_t n = strnlen(src, cap - 1);

	memcpy(dst, src, n);
	dst[n] = '\0';
}

static int fail(char *errbuf, size_t errlen, int rc, const char *msg)
{
	if (errbuf && errlen)
		snprintf(errbuf, errlen, "%s", msg);
	return rc;
}

int cbad_detector_new_channels(const cbad_settings *s, uint32_t channels, cbad_detector **ret,
			       char *errbuf, size_t errlen)
{
	cbad_detector *d;
	int rc;

	rc = cbad_settings_validate(s, errbuf, errlen);
	if (rc)
		return rc;
	d = calloc(1, sizeof(*d));
	if (!d)
		return fail(errbuf, errlen, -ENOMEM, "out of memory");
	d->s = *s;
	d->channels = channels;
	d->alpha = cbad_sensitivity_alpha(s->sensitivity);
	d->bcap = s->baseline_bytes;
	d->blen = calloc(s->baseline_events, sizeof(uint32_t));
	d->btmpl = calloc(s->baseline_events, sizeof(uint16_t));
	d->canon = malloc(s->max_event_bytes + 1);
	if (!d->blen || !d->btmpl || !d->canon ||
	    cbad_archive_new(TEMPLATE_SLOTS, &d->arch) ||
	    cbad_novelty_new(s->zstd_level, s->baseline_bytes + CBAD_ARCHIVE_BYTES, &d->nov) ||
	    cbad_calib_new(NOVELTY_HISTORY, NOVELTY_MIN_SCALE, &d->ncal) ||
	    cbad_drift_new(s->window_events, s->baseline_events, &d->drift)) {
		rc = fail(errbuf, errlen, -ENOMEM, "out of memory");
		goto out_free;
	}
	if (channels & CBAD_CHANNEL_NUMERIC) {
		rc = cbad_numeric_new(s, &d->num, errbuf, errlen);
		if (rc)
			goto out_free;
	}
	if ((channels & CBAD_CHANNEL_TEXT) && cbad_text_new(&d->text)) {
		rc = fail(errbuf, errlen, -ENOMEM, "out of memory");
		goto out_free;
	}
	*ret = d;
	return 0;
out_free:
	cbad_detector_free(d);
	return rc;
}

int cbad_detector_new(const cbad_settings *s, cbad_detector **ret, char *errbuf, size_t errlen)
{
	return cbad_detector_new_channels(s, CBAD_CHANNEL_ALL, ret, errbuf, errlen);
}

/* The byte at offset off of the baseline's concatenation (dict's baseline part, then pend). An
 * event never straddles the two: dict's part ends where a rebuild found the baseline's end. */
static const uint8_t *baseline_at(const cbad_detector *d, uint32_t off)
{
	return off < d->dict_len ? d->dict + d->aoff + off : d->pend + (off - d->dict_len);
}

static void baseline_pop(cbad_detector *d)
{
	uint32_t n = d->blen[d->lhead];
	uint16_t slot = d->btmpl[d->lhead];

	/* The last copy of its form is offered to the archive of recurring normal forms. */
	if (--d->tcount[slot] == 0) {
		uint32_t len = n - 1 < CBAD_ARCHIVE_MAX_EVENT ? n - 1 : CBAD_ARCHIVE_MAX_EVENT;

		cbad_archive_offer(d->arch, slot, baseline_at(d, d->bhead), len);
	}
	d->bhead += n;
	d->bused -= n;
	d->bchanged = true;
	d->lhead = (d->lhead + 1) % d->s.baseline_events;
	d->nb--;
}

/* Room for n more bytes in pend: evicted bytes of pend are dropped first, then it grows (by a
 * quarter, never beyond bcap: the live bytes plus n never exceed bcap). Returns 0 or -ENOMEM. */
static int pend_reserve(cbad_detector *d, uint32_t n)
{
	uint32_t cap;
	uint8_t *p;

	if (d->pend_len + n <= d->pend_cap)
		return 0;
	if (d->bhead > d->dict_len) {
		uint32_t drop = d->bhead - d->dict_len;

		memmove(d->pend, d->pend + drop, d->pend_len - drop);
		d->pend_len -= drop;
		d->bhead = d->dict_len;
		if (d->pend_len + n <= d->pend_cap)
			return 0;
	}
	cap = d->pend_cap + d->pend_cap / 4;
	if (cap < d->pend_len + n)
		cap = d->pend_len + n;
	cap = (cap + 1023u) & ~1023u;
	if (cap > d->bcap)
		cap = d->bcap;
	p = realloc(d->pend, cap);
	if (!p)
		return -ENOMEM;
	d->pend = p;
	d->pend_cap = cap;
	return 0;
}

/* Appends one canonical event (and a newline) to the baseline, evicting the oldest, unless
 * the baseline already holds TEMPLATE_COPIES events of its template: the dictionary then
 * covers many kinds of events instead of many copies of the most common one. Out of memory,
 * the event is not appended. */
static void baseline_push(cbad_detector *d, const char *p, uint32_t len, uint64_t tmpl)
{
	uint32_t n;
	uint16_t slot = (uint16_t)(tmpl % TEMPLATE_SLOTS);

	if (d->tcount[slot] >= TEMPLATE_COPIES)
		return;

	if (len > d->bcap / 8)
		len = d->bcap / 8;
	n = len + 1;
	while (d->nb > 0 && (d->bused + n > d->bcap || d->nb == d->s.baseline_events))
		baseline_pop(d);
	if (pend_reserve(d, n))
		return;
	memcpy(d->pend + d->pend_len, p, len);
	d->pend[d->pend_len + len] = '\n';
	d->pend_len += n;
	d->bused += n;
	d->blen[(d->lhead + d->nb) % d->s.baseline_events] = n;
	d->btmpl[(d->lhead + d->nb) % d->s.baseline_events] = slot;
	d->tcount[slot]++;
	d->nb++;
	d->bchanged = true;
}

/* The baseline's bytes, oldest first, into out[0..bused). out may be dict itself. */
static void baseline_linear(const cbad_detector *d, uint8_t *out)
{
	if (d->bhead < d->dict_len) {
		uint32_t first = d->dict_len - d->bhead;

		memmove(out, d->dict + d->aoff + d->bhead, first);
		if (d->bused > first)
			memcpy(out + first, d->pend, d->bused - first);
	} else if (d->bused) {
		memcpy(out, d->pend + (d->bhead - d->dict_len), d->bused);
	}
}

static void quarantine_put(cbad_detector *d, const char *p, uint32_t len, uint64_t tmpl)
{
	uint16_t slot = (uint16_t)(tmpl % TEMPLATE_SLOTS);
	uint32_t same = 0, i;

	if (d->qn == QUARANTINE_N)
		return;
	for (uint32_t k = 0; k < d->qn; k++)
		same += d->q_slot[(d->qhead + k) % QUARANTINE_N] == slot;
	if (same >= QUARANTINE_PER_TEMPLATE || d->tcount[slot] >= TEMPLATE_COPIES)
		return;
	if (len > QUARANTINE_BYTES)
		len = QUARANTINE_BYTES;
	i = (d->qhead + d->qn) % QUARANTINE_N;
	d->q_bytes[i] = malloc(len ? len : 1);
	if (!d->q_bytes[i])
		return; /* out of memory: the anomaly is not learned later */
	d->qn++;
	d->q_admit[i] = d->seen + d->s.baseline_events / 2;
	d->q_slot[i] = slot;
	d->q_tmpl[i] = tmpl;
	d->q_len[i] = len;
	d->q_held += len;
	memcpy(d->q_bytes[i], p, len);
}

static void quarantine_release(cbad_detector *d)
{
	while (d->qn > 0 && d->q_admit[d->qhead] <= d->seen) {
		baseline_push(d, d->q_bytes[d->qhead], d->q_len[d->qhead], d->q_tmpl[d->qhead]);
		free(d->q_bytes[d->qhead]);
		d->q_bytes[d->qhead] = NULL;
		d->q_held -= d->q_len[d->qhead];
		d->qhead = (d->qhead + 1) % QUARANTINE_N;
		d->qn--;
	}
}

/* Once the baseline holds TEMPLATE_COPIES of every common template, most events leave it
 * unchanged: the CDict is then rebuilt only when its bytes would differ (building it is the
 * p99 of the per-event latency), which gives bit for bit the results of rebuilding every hop.
 * The hop's bookkeeping is done when the hop ends; the build itself (rebuild_run) waits for
 * cbad_detector_idle() or the next event, whichever comes first. */
static void hop_end(cbad_detector *d)
{
	d->rebuild_due = d->bchanged;
	d->since_rebuild = 0;
	d->rebuilds++;
}

/* Capacity for a dictionary of need bytes: an eighth of headroom (in KiB), at most the
 * largest dictionary (the baseline and the archive full). */
static uint32_t dict_cap_for(const cbad_detector *d, uint32_t need)
{
	uint32_t cap = (need + need / 8 + 1024u) & ~1023u;

	return cap < d->bcap + CBAD_ARCHIVE_BYTES ? cap : d->bcap + CBAD_ARCHIVE_BYTES;
}

/* Builds the CDict a finished hop asked for into a new buffer of the size it needs (the
 * dictionary outgrew its buffer, or uses less than half of it): the old CDict refers to the
 * old buffer, which is freed only once the new CDict exists. Out of memory nothing changes and
 * the build stays due. Returns true when it built. */
static bool rebuild_moved(cbad_detector *d, uint32_t alen)
{
	uint32_t cap = dict_cap_for(d, alen + d->bused);
	uint8_t *nd = malloc(cap);

	if (!nd)
		return false;
	baseline_linear(d, nd + alen);
	cbad_archive_copy(d->arch, nd);
	if (cbad_novelty_rebuild(d->nov, nd, alen + d->bused)) {
		free(nd);
		return false;
	}
	free(d->dict);
	d->dict = nd;
	d->dict_cap = cap;
	d->aoff = alen;
	d->dict_len = d->bused;
	d->bhead = 0;
	d->pend_len = 0;
	d->bchanged = false;
	d->rebuild_due = false;
	return true;
}

/* Builds the CDict a finished hop asked for. Returns true when there was one to build. */
static bool rebuild_run(cbad_detector *d)
{
	uint32_t alen, need;

	if (!d->rebuild_due)
		return false;
	alen = cbad_archive_len(d->arch);
	need = alen + d->bused;
	if (!d->dict || need > d->dict_cap || need < d->dict_cap / 2)
		return rebuild_moved(d, alen);
	/* The old CDict is not used again once dict starts to change. The baseline moves
	 * first (it may overlap where the archive goes), then the archive goes in front:
	 * zstd reaches the newest bytes (the baseline) most cheaply. */
	baseline_linear(d, d->dict + alen);
	cbad_archive_copy(d->arch, d->dict);
	d->aoff = alen;
	d->dict_len = d->bused;
	d->bhead = 0;
	d->pend_len = 0;
	cbad_novelty_rebuild(d->nov, d->dict, d->aoff + d->dict_len);
	d->bchanged = false;
	d->rebuild_due = false;
	return true;
}

bool cbad_detector_idle_pending(const cbad_detector *d)
{
	return d && d->rebuild_due;
}

int cbad_detector_idle(cbad_detector *d)
{
	if (!d)
		return -EINVAL;
	return rebuild_run(d) ? 1 : 0;
}

/* The score is a monotone, non-saturating map of the evidence L = -log10(p):
 * score = L / (L + SCORE_K). It is 0 at p = 1, 0.5 at p = 10^-SCORE_K (the default alpha),
 * and approaches 1 without reaching it, so the strongest anomalies keep their order (1 - p
 * rounds every p below 1e-16 to 1 and ties them). Being monotone in p, it keeps decisions
 * and scores consistent: anomaly <=> p < alpha <=> score > score_of(alpha). */
static double score_of(double p)
{
	double l;

	if (!(p < 1.0))
		return 0.0;
	if (p < 1e-300)
		p = 1e-300;
	l = -log10(p);
	return l / (l + SCORE_K);
}

static cbad_severity severity_of(double p, double alpha)
{
	double r = p / alpha;

	if (r <= 1e-3)
		return CBAD_SEVERITY_CRITICAL;
	if (r <= 1e-2)
		return CBAD_SEVERITY_HIGH;
	if (r <= 1e-1)
		return CBAD_SEVERITY_MEDIUM;
	return CBAD_SEVERITY_LOW;
}

/* Compression metrics of the newest part of the baseline against the rest, for a drift's
 * explanation (computed only when a drift starts). */
static size_t drift_evidence(cbad_detector *d, cbad_evidence *ev, size_t max)
{
	uint32_t wbytes = 0, k, nwin, idx;
	uint8_t *lin;
	double ncd, rw, rb, hw, hb;
	size_t n = 0;

	if (d->nb < 4 || max < 3)
		return 0;
	nwin = d->s.window_events < d->nb / 2 ? d->s.window_events : d->nb / 2;
	for (k = 0; k < nwin; k++) {
		idx = (d->lhead + d->nb - 1 - k) % d->s.baseline_events;
		wbytes += d->blen[idx];
	}
	lin = malloc(d->bused ? d->bused : 1);
	if (!lin)
		return 0;
	baseline_linear(d, lin);
	{
		uint32_t bbytes = d->bused - wbytes;

		ncd = cbad_drift_ncd(lin, bbytes, lin + bbytes, wbytes, 3);
		rb = cbad_drift_ratio(lin, bbytes, 3);
		rw = cbad_drift_ratio(lin + bbytes, wbytes, 3);
		hb = cbad_drift_entropy(lin, bbytes);
		hw = cbad_drift_entropy(lin + bbytes, wbytes);
	}
	free(lin);
	memset(ev, 0, 3 * sizeof(*ev));
	snprintf(ev[n].name, sizeof(ev[n].name), "template_mix");
	snprintf(ev[n].value, sizeof(ev[n].value), "%.1f%%", 100 * d->drift_rep.top_share);
	snprintf(ev[n++].detail, sizeof(ev[0].detail),
		 "one kind of event makes up %.1f%% of the window against %.1f%% of the baseline",
		 100 * d->drift_rep.top_share, 100 * d->drift_rep.top_base_share);
	snprintf(ev[n].name, sizeof(ev[n].name), "ncd");
	snprintf(ev[n].value, sizeof(ev[n].value), "%.3f", ncd);
	snprintf(ev[n++].detail, sizeof(ev[0].detail),
		 "normalised compression distance of the newest events to the older baseline");
	snprintf(ev[n].name, sizeof(ev[n].name), "compression_ratio");
	snprintf(ev[n].value, sizeof(ev[n].value), "%.3f vs %.3f", rw, rb);
	snprintf(ev[n++].detail, sizeof(ev[0].detail),
		 "compression ratio of the newest events vs the older ones; byte entropy %.2f vs %.2f "
		 "bits",
		 hw, hb);
	return n;
}

static void explain(cbad_detector *d, const cbad_chan_signal *top, const char *raw, size_t len,
		    cbad_result *r)
{
	snprintf(r->signal, sizeof(r->signal), "%s", top->name);
	r->value = top->value;
	r->base_low = top->base_low;
	r->base_median = top->base_median;
	r->base_high = top->base_high;
	r->nevidence = 0;
	if (top->kind == CBAD_KIND_EVENT && !top->field[0]) { /* novelty; text signals name a field */
		r->base_low = cbad_calib_quantile(d->ncal, 0.05);
		r->base_median = cbad_calib_quantile(d->ncal, 0.5);
		r->base_high = cbad_calib_quantile(d->ncal, 0.95);
		r->nevidence = cbad_explain_top_parts(d->nov, raw, len, d->s.mask, r->evidence, 3);
	} else if (top->kind == CBAD_KIND_WINDOW) {
		r->window_start_ts = d->drift_rep.start_ts;
		r->window_end_ts = d->drift_rep.end_ts;
		r->window_events = d->drift_rep.events;
		r->nevidence = drift_evidence(d, r->evidence, CBAD_MAX_EVIDENCE);
	} else {
		cbad_evidence *e = &r->evidence[0];

		memset(e, 0, sizeof(*e));
		snprintf(e->name, sizeof(e->name), "%s", top->field[0] ? top->field : top->name);
		snprintf(e->value, sizeof(e->value), "%.6g", top->value);
		snprintf(e->detail, sizeof(e->detail), "%s", top->detail);
		r->nevidence = 1;
		snprintf(r->entity_field, sizeof(r->entity_field), "%s", top->entity_field);
		snprintf(r->entity_value, sizeof(r->entity_value), "%s", top->entity_value);
	}
	cbad_canon_redact(raw, len < CBAD_EXCERPT_MAX - 1 ? len : CBAD_EXCERPT_MAX - 1, r->excerpt,
			  sizeof(r->excerpt));
	cbad_explain_sentence(r);
}

int cbad_detector_process(cbad_detector *d, const char *event, size_t len, int64_t ts_ms,
			  cbad_result *ret)
{
	cbad_chan_signal sig[MAX_SIGNALS];
	size_t nsig = 0, clen, best = 0;
	uint64_t tmpl;
	double bits, p_nov = 1.0, pmin = 1.0, pc;
	bool calibrating, nov_flag, learn, have_dict;
	unsigned kinds = 0, nk = 0;
	cbad_drift_report rep;

	if (!d || !ret || (!event && len))
		return -EINVAL;
	if (!event)
		event = "";
	rebuild_run(d); /* a no-op when idle() already ran it */
	memset(ret, 0, sizeof(*ret));
	if (len > d->s.max_event_bytes)
		len = d->s.max_event_bytes;
	calibrating = d->seen < warm_up_events(&d->s);
	have_dict = d->rebuilds >= 2;

	clen = cbad_canon_mask(event, len, d->s.mask, d->canon, d->s.max_event_bytes);
	tmpl = cbad_canon_template(d->canon, clen);
	bits = cbad_novelty_bits(d->nov, d->canon, clen);
	if (have_dict && cbad_calib_count(d->ncal) >= 32)
		p_nov = cbad_calib_pvalue(d->ncal, bits);
	{
		cbad_chan_signal *s = &sig[nsig++];

		memset(s, 0, sizeof(*s));
		s->kind = CBAD_KIND_EVENT;
		copy_name(s->name, sizeof(s->name), "novelty");
		s->stat = bits;
		s->p_value = p_nov;
		s->value = bits;
		/* base_low..base_high (three quantile look-ups) only matter to an explanation:
		 * explain() fills them when novelty is the signal it quotes. */
	}
	nov_flag = !calibrating && p_nov < LEARN_ALPHA;

	if (d->num) {
		cbad_event_view v = {.raw = event, .len = len, .ts_ms = ts_ms, .template_id = tmpl};

		nsig += cbad_numeric_observe(d->num, &v, !nov_flag, sig + nsig, MAX_SIGNALS - 2 - nsig);
	}
	/* The text channel belongs to the event kind: it judges the same event's content. */
	if (d->text)
		nsig += cbad_text_observe(d->text, event, len, LEARN_ALPHA, sig + nsig,
					  MAX_SIGNALS - 1 - nsig);

	if ((d->channels & CBAD_CHANNEL_DRIFT) &&
	    cbad_drift_observe(d->drift, tmpl, ts_ms, !nov_flag, &rep)) {
		bool was = d->drift_active;

		rep.p_value = fmin(1.0, rep.p_value * DRIFT_PENALTY);
		d->drift_active = !calibrating && rep.p_value < DRIFT_REPORT_P;
		cbad_drift_verdict(d->drift, &rep, !calibrating && rep.p_value < LEARN_ALPHA);
		if (d->drift_active && was)
			rep.start_ts = d->drift_rep.start_ts;
		d->drift_rep = rep;
	}
	/* The window is the anomaly, so every event of a drifting window is flagged, whatever
	 * its template; for as long as the drift's template still holds its share of the newest
	 * events, so that the episode ends when the mix returns and not a whole window later. A
	 * permanent change ends too: once its events leave the window they join the drift's
	 * baseline, and the window no longer differs from it. */
	if (d->drift_active &&
	    d->drift_rep.top_share >= DRIFT_OVERREP * d->drift_rep.top_base_share &&
	    cbad_drift_recent_share(d->drift, d->drift_rep.top_bucket, d->s.window_events / 4) >=
		    DRIFT_SHARE) {
		cbad_chan_signal *s = &sig[nsig++];

		memset(s, 0, sizeof(*s));
		s->kind = CBAD_KIND_WINDOW;
		copy_name(s->name, sizeof(s->name), "drift");
		s->stat = d->drift_rep.kl_bits;
		s->p_value = d->drift_rep.p_value;
		s->value = d->drift_rep.kl_bits;
	}

	for (size_t i = 0; i < nsig; i++) {
		if (sig[i].p_value < 1.0 && !(kinds & (1u << sig[i].kind))) {
			kinds |= 1u << sig[i].kind;
			nk++;
		}
		if (sig[i].p_value < sig[best].p_value)
			best = i;
	}
	pmin = sig[best].p_value;
	pc = pmin * (nk > 1 ? nk : 1);
	if (pc > 1)
		pc = 1;

	/* Nothing is flagged during the warm-up, so its scores are 0 too: the score stays
	 * consistent with the decision (anomaly <=> score > score_of(alpha)). */
	ret->score = calibrating ? 0.0 : score_of(pc);
	ret->p_value = pc;
	ret->calibrating = calibrating;
	ret->progress = calibrating ? (double)d->seen / warm_up_events(&d->s) : 1.0;
	ret->novelty_bits = bits;
	ret->kind = sig[best].kind;
	ret->anomaly = !calibrating && pc < d->alpha;
	for (size_t i = 0; i < nsig && ret->nsignals < CBAD_MAX_SIGNALS; i++) {
		cbad_signal_value *v = &ret->signals[ret->nsignals++];

		/* A fixed-size copy (two vector moves) instead of strnlen + memcpy per signal:
		 * every signal name is NUL-terminated and zero-padded (signals are written whole
		 * from a memset), so the bytes are those of copy_name; the last one is forced. */
		_Static_assert(sizeof(v->name) == sizeof(sig[i].name), "signal name sizes differ");
		memcpy(v->name, sig[i].name, sizeof(v->name));
		v->name[sizeof(v->name) - 1] = '\0';
		v->value = sig[i].p_value;
	}
	if (ret->anomaly) {
		ret->severity = severity_of(pc, d->alpha);
		d->anomalies++;
		explain(d, &sig[best], event, len, ret);
		ret->p_value = pc;
	}

	/* Learning: normal events feed the baseline and the calibration; anomalies only when
	 * they have become the majority of recent events (a new normal). */
	d->regime = d->regime * (1 - REGIME_EMA) + (nov_flag ? REGIME_EMA : 0);
	learn = !nov_flag || d->regime > REGIME_SHARE;
	cbad_archive_note(d->arch, (uint32_t)(tmpl % TEMPLATE_SLOTS), !nov_flag);
	if (learn || calibrating)
		baseline_push(d, d->canon, (uint32_t)clen, tmpl);
	else
		quarantine_put(d, d->canon, (uint32_t)clen, tmpl);
	quarantine_release(d);
	if (have_dict && nov_flag)
		cbad_calib_add_capped(d->ncal, bits);
	else if (have_dict)
		cbad_calib_add(d->ncal, bits);
	d->seen++;
	if (++d->since_rebuild >= d->s.hop_events)
		hop_end(d);
	return 0;
}

void cbad_detector_status(const cbad_detector *d, cbad_status *ret)
{
	memset(ret, 0, sizeof(*ret));
	ret->calibrating = d->seen < warm_up_events(&d->s);
	ret->progress = ret->calibrating ? (double)d->seen / warm_up_events(&d->s) : 1.0;
	ret->events_seen = d->seen;
	ret->anomalies = d->anomalies;
	ret->memory_bytes = sizeof(*d) + (size_t)d->dict_cap + d->pend_cap + d->q_held +
			    d->s.baseline_events * (sizeof(uint32_t) + sizeof(uint16_t)) + d->s.max_event_bytes + 1 +
			    cbad_novelty_memory(d->nov) + cbad_calib_memory(d->ncal) +
			    cbad_drift_memory(d->drift) + (d->num ? cbad_numeric_memory(d->num) : 0) +
			    cbad_text_memory(d->text) + cbad_archive_memory(d->arch);
}

int cbad_detector_set_sensitivity(cbad_detector *d, double sensitivity)
{
	if (!(sensitivity >= 0.0 && sensitivity <= 1.0))
		return -EINVAL;
	d->s.sensitivity = sensitivity;
	d->alpha = cbad_sensitivity_alpha(sensitivity);
	return 0;
}

const cbad_settings *cbad_detector_settings(const cbad_detector *d)
{
	return &d->s;
}

/* ---- state ---- */

static void save_settings(const cbad_settings *s, cbad_writer *w)
{
	cbad_w_u32(w, s->baseline_events);
	cbad_w_u32(w, s->baseline_bytes);
	cbad_w_u32(w, s->window_events);
	cbad_w_u32(w, s->hop_events);
	cbad_w_f64(w, s->sensitivity);
	cbad_w_u32(w, (uint32_t)s->zstd_level);
	cbad_w_u32(w, s->mask);
	cbad_w_u32(w, s->max_event_bytes);
	cbad_w_u32(w, s->max_entities);
	cbad_w_u32(w, (uint32_t)s->nentity_fields);
	for (size_t i = 0; i < s->nentity_fields; i++)
		cbad_w_str(w, s->entity_fields[i]);
	cbad_w_u32(w, (uint32_t)s->nvalue_fields);
	for (size_t i = 0; i < s->nvalue_fields; i++)
		cbad_w_str(w, s->value_fields[i]);
	cbad_w_u64(w, s->seed);
}

static void load_settings(cbad_settings *s, cbad_reader *r)
{
	memset(s, 0, sizeof(*s));
	s->baseline_events = cbad_r_u32(r);
	s->baseline_bytes = cbad_r_u32(r);
	s->window_events = cbad_r_u32(r);
	s->hop_events = cbad_r_u32(r);
	s->sensitivity = cbad_r_f64(r);
	s->zstd_level = (int)cbad_r_u32(r);
	s->mask = cbad_r_u32(r);
	s->max_event_bytes = cbad_r_u32(r);
	s->max_entities = cbad_r_u32(r);
	s->nentity_fields = cbad_r_count(r, CBAD_MAX_ENTITY_FIELDS);
	for (size_t i = 0; i < s->nentity_fields; i++)
		cbad_r_str(r, s->entity_fields[i], CBAD_FIELD_NAME_MAX);
	s->nvalue_fields = cbad_r_count(r, CBAD_MAX_VALUE_FIELDS);
	for (size_t i = 0; i < s->nvalue_fields; i++)
		cbad_r_str(r, s->value_fields[i], CBAD_FIELD_NAME_MAX);
	s->seed = cbad_r_u64(r);
}

int cbad_detector_save(const cbad_detector *d, void **ret_buf, size_t *ret_len, char *errbuf,
		       size_t errlen)
{
	cbad_writer w = {0};
	uint8_t *out = NULL, *lin = NULL;
	size_t bound, clen;
	int rc = -ENOMEM;

	save_settings(&d->s, &w);
	cbad_w_u32(&w, d->channels);
	cbad_w_u64(&w, d->seen);
	cbad_w_u64(&w, d->anomalies);
	cbad_w_u32(&w, d->since_rebuild);
	cbad_w_u32(&w, d->rebuilds);
	cbad_w_f64(&w, d->regime);
	cbad_w_u8(&w, d->drift_active);
	cbad_w_f64(&w, d->drift_rep.kl_bits);
	cbad_w_f64(&w, d->drift_rep.p_value);
	cbad_w_u32(&w, d->drift_rep.events);
	cbad_w_i64(&w, d->drift_rep.start_ts);
	cbad_w_i64(&w, d->drift_rep.end_ts);
	cbad_w_f64(&w, d->drift_rep.top_share);
	cbad_w_f64(&w, d->drift_rep.top_base_share);
	cbad_w_u32(&w, d->drift_rep.top_bucket);
	/* The baseline ring, oldest first, and the dictionary the current CDict was built from. */
	lin = malloc(d->bused ? d->bused : 1);
	if (!lin)
		goto out_free;
	baseline_linear(d, lin);
	cbad_w_u32(&w, d->nb);
	for (uint32_t k = 0; k < d->nb; k++) {
		cbad_w_u32(&w, d->blen[(d->lhead + k) % d->s.baseline_events]);
		cbad_w_u32(&w, d->btmpl[(d->lhead + k) % d->s.baseline_events]);
	}
	cbad_w_u32(&w, d->bused);
	cbad_w_bytes(&w, lin, d->bused);
	if (d->rebuild_due) {
		/* The dictionary the pending build will use: the archive, then the baseline. */
		uint32_t alen = cbad_archive_len(d->arch);
		uint8_t *arch = malloc(alen ? alen : 1);

		if (!arch)
			goto out_free;
		cbad_archive_copy(d->arch, arch);
		cbad_w_u32(&w, alen + d->bused);
		cbad_w_bytes(&w, arch, alen);
		cbad_w_bytes(&w, lin, d->bused);
		free(arch);
	} else {
		cbad_w_u32(&w, d->aoff + d->dict_len);
		cbad_w_bytes(&w, d->dict, d->aoff + d->dict_len);
	}
	cbad_w_u32(&w, d->qn);
	for (uint32_t k = 0; k < d->qn; k++) {
		uint32_t i = (d->qhead + k) % QUARANTINE_N;

		cbad_w_u64(&w, d->q_admit[i]);
		cbad_w_u64(&w, d->q_tmpl[i]);
		cbad_w_u32(&w, d->q_len[i]);
		cbad_w_bytes(&w, d->q_bytes[i], d->q_len[i]);
	}
	cbad_calib_save(d->ncal, &w);
	cbad_drift_save(d->drift, &w);
	cbad_w_u8(&w, d->num != NULL);
	if (d->num)
		cbad_numeric_save(d->num, &w);
	cbad_w_u8(&w, d->text != NULL);
	if (d->text)
		cbad_text_save(d->text, &w);
	cbad_archive_save(d->arch, &w);
	if (w.failed)
		goto out_free;
	bound = ZSTD_compressBound(w.len) + 16;
	out = malloc(bound);
	if (!out)
		goto out_free;
	memcpy(out, STATE_MAGIC, 4);
	out[4] = STATE_VERSION;
	for (int i = 0; i < 8; i++)
		out[5 + i] = (uint8_t)((uint64_t)w.len >> (8 * i));
	clen = ZSTD_compress(out + 13, bound - 13, w.buf, w.len, 3);
	if (ZSTD_isError(clen)) {
		rc = fail(errbuf, errlen, -EIO, "state: compression failed");
		goto out_free;
	}
	*ret_buf = out;
	*ret_len = clen + 13;
	out = NULL;
	rc = 0;
out_free:
	if (rc == -ENOMEM)
		fail(errbuf, errlen, rc, "state: out of memory");
	free(out);
	free(lin);
	cbad_writer_free(&w);
	return rc;
}

int cbad_detector_load(const void *buf, size_t len, cbad_detector **ret, char *errbuf,
		       size_t errlen)
{
	const uint8_t *in = buf;
	uint8_t *raw = NULL;
	uint64_t rawlen = 0;
	cbad_reader r;
	cbad_settings s;
	cbad_detector *d = NULL;
	uint32_t channels, nb, nq, bused, total = 0;
	size_t got;
	int rc = -EINVAL;

	if (!buf || len < 13 || memcmp(in, STATE_MAGIC, 4))
		return fail(errbuf, errlen, -EINVAL, "state: not a cbad state (bad magic)");
	if (in[4] != STATE_VERSION)
		return fail(errbuf, errlen, -EINVAL, "state: unknown version");
	for (int i = 0; i < 8; i++)
		rawlen |= (uint64_t)in[5 + i] << (8 * i);
	if (rawlen == 0 || rawlen > STATE_MAX_RAW)
		return fail(errbuf, errlen, -EINVAL, "state: bad length");
	raw = malloc(rawlen);
	if (!raw)
		return fail(errbuf, errlen, -ENOMEM, "state: out of memory");
	got = ZSTD_decompress(raw, rawlen, in + 13, len - 13);
	if (ZSTD_isError(got) || got != rawlen) {
		fail(errbuf, errlen, -EINVAL, "state: corrupt or truncated");
		goto out_free;
	}
	cbad_reader_init(&r, raw, rawlen);
	load_settings(&s, &r);
	if (r.failed || cbad_settings_validate(&s, errbuf, errlen)) {
		fail(errbuf, errlen, -EINVAL, "state: bad settings");
		goto out_free;
	}
	channels = cbad_r_u32(&r);
	rc = cbad_detector_new_channels(&s, channels & CBAD_CHANNEL_ALL, &d, errbuf, errlen);
	if (rc)
		goto out_free;
	rc = -EINVAL;
	d->seen = cbad_r_u64(&r);
	d->anomalies = cbad_r_u64(&r);
	d->since_rebuild = cbad_r_u32(&r);
	d->rebuilds = cbad_r_u32(&r);
	d->regime = cbad_r_f64(&r);
	d->drift_active = cbad_r_u8(&r) != 0;
	d->drift_rep.kl_bits = cbad_r_f64(&r);
	d->drift_rep.p_value = cbad_r_f64(&r);
	d->drift_rep.events = cbad_r_u32(&r);
	d->drift_rep.start_ts = cbad_r_i64(&r);
	d->drift_rep.end_ts = cbad_r_i64(&r);
	d->drift_rep.top_share = cbad_r_f64(&r);
	d->drift_rep.top_base_share = cbad_r_f64(&r);
	d->drift_rep.top_bucket = cbad_r_u32(&r);
	if (d->drift_rep.top_bucket >= CBAD_DRIFT_BUCKETS)
		goto out_corrupt;
	nb = cbad_r_count(&r, s.baseline_events);
	for (uint32_t k = 0; k < nb && !r.failed; k++) {
		uint32_t slot;

		d->blen[k] = cbad_r_u32(&r);
		slot = cbad_r_u32(&r);
		total += d->blen[k];
		if (d->blen[k] == 0 || total > d->bcap || slot >= TEMPLATE_SLOTS ||
		    d->tcount[slot] >= TEMPLATE_COPIES)
			r.failed = true;
		else
			d->tcount[slot]++;
		d->btmpl[k] = (uint16_t)slot;
	}
	bused = cbad_r_count(&r, d->bcap);
	if (r.failed || bused != total)
		goto out_corrupt;
	/* The whole saved baseline goes to pend, after the saved dictionary: the same bytes as the
	 * saver's, whatever part of them its dictionary held. */
	if (pend_reserve(d, bused)) {
		rc = fail(errbuf, errlen, -ENOMEM, "state: out of memory");
		goto out_free;
	}
	if (!cbad_r_bytes(&r, d->pend, bused))
		goto out_corrupt;
	d->pend_len = bused;
	d->nb = nb;
	d->bused = bused;
	d->dict_len = cbad_r_count(&r, d->bcap + CBAD_ARCHIVE_BYTES);
	if (r.failed)
		goto out_corrupt;
	if (d->dict_len) {
		/* No CDict refers to dict yet. */
		d->dict_cap = dict_cap_for(d, d->dict_len);
		d->dict = malloc(d->dict_cap);
		if (!d->dict) {
			rc = fail(errbuf, errlen, -ENOMEM, "state: out of memory");
			goto out_free;
		}
	}
	if (!cbad_r_bytes(&r, d->dict, d->dict_len) || d->since_rebuild >= s.hop_events)
		goto out_corrupt;
	d->aoff = 0; /* the saved dictionary, archive and all, is all evicted: the baseline is in pend */
	d->bhead = d->dict_len;
	/* The restored CDict is built from the saved dictionary bytes; whether the baseline moved
	 * since is not stored, so the next hop rebuilds (from identical bytes if it did not). */
	d->bchanged = true;
	if (cbad_novelty_rebuild(d->nov, d->dict, d->dict_len)) {
		rc = fail(errbuf, errlen, -ENOMEM, "state: out of memory");
		goto out_free;
	}
	nq = cbad_r_count(&r, QUARANTINE_N);
	for (uint32_t k = 0; k < nq && !r.failed; k++) {
		d->q_admit[k] = cbad_r_u64(&r);
		d->q_tmpl[k] = cbad_r_u64(&r);
		d->q_slot[k] = (uint16_t)(d->q_tmpl[k] % TEMPLATE_SLOTS);
		d->q_len[k] = cbad_r_count(&r, QUARANTINE_BYTES);
		d->q_bytes[k] = malloc(d->q_len[k] ? d->q_len[k] : 1);
		if (!d->q_bytes[k]) {
			rc = fail(errbuf, errlen, -ENOMEM, "state: out of memory");
			goto out_free;
		}
		d->qn++;
		d->q_held += d->q_len[k];
		cbad_r_bytes(&r, d->q_bytes[k], d->q_len[k]);
	}
	if (r.failed || cbad_calib_load(d->ncal, &r) || cbad_drift_load(d->drift, &r))
		goto out_corrupt;
	if ((cbad_r_u8(&r) != 0) != (d->num != NULL))
		goto out_corrupt;
	if (d->num && cbad_numeric_load(d->num, &r))
		goto out_corrupt;
	if ((cbad_r_u8(&r) != 0) != (d->text != NULL))
		goto out_corrupt;
	if (d->text && cbad_text_load(d->text, &r))
		goto out_corrupt;
	rc = cbad_archive_load(d->arch, &r);
	if (rc == -ENOMEM) {
		rc = fail(errbuf, errlen, -ENOMEM, "state: out of memory");
		goto out_free;
	}
	if (rc || r.failed || r.off != r.len) {
		rc = -EINVAL;
		goto out_corrupt;
	}
	free(raw);
	*ret = d;
	return 0;
out_corrupt:
	fail(errbuf, errlen, -EINVAL, "state: corrupt (a section does not parse)");
out_free:
	cbad_detector_free(d);
	free(raw);
	return rc;
}

void cbad_detector_free(cbad_detector *d)
{
	if (!d)
		return;
	cbad_text_free(d->text);
	cbad_archive_free(d->arch);
	cbad_numeric_free(d->num);
	cbad_drift_free(d->drift);
	cbad_calib_free(d->ncal);
	cbad_novelty_free(d->nov);
	for (uint32_t k = 0; k < QUARANTINE_N; k++)
		free(d->q_bytes[k]);
	free(d->canon);
	free(d->dict);
	free(d->blen);
	free(d->btmpl);
	free(d->pend);
	free(d);
}
