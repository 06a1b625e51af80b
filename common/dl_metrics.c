/* SPDX-License-Identifier: Apache-2.0 */
/* dl_metrics: metric families with bounded children, one mutex per family, text exposition. */
#include "common/dl_metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DL_METRICS_HASH_SIZE 256

enum dl_metric_kind {
	DL_METRIC_COUNTER,
	DL_METRIC_GAUGE,
	DL_METRIC_HISTOGRAM,
};

enum dl_metric_op {
	DL_METRIC_OP_INC,
	DL_METRIC_OP_SET,
	DL_METRIC_OP_OBSERVE,
};

/* One time series: a tuple of label values and its value (for a histogram: sum, count and the
 * per-bucket counts, kept non-cumulative and summed up when rendered). */
struct dl_metric_child {
	struct dl_metric_child *next_in_slot;
	uint32_t hash;
	char **values;
	double value;
	uint64_t count;
	uint64_t *bucket_counts; /* nbuckets + 1, the last one for +Inf */
};

struct dl_metric {
	dl_metrics_registry *reg;
	struct dl_metric *next;
	pthread_mutex_t lock; /* guards children and their values */
	char *name;
	char *help;
	enum dl_metric_kind kind;
	size_t nlabels;
	char *labels[DL_METRICS_MAX_LABELS];
	double *buckets;
	size_t nbuckets;
	struct dl_metric_child **children; /* in creation order */
	size_t nchildren;
	size_t children_cap;
	struct dl_metric_child *slots[DL_METRICS_HASH_SIZE];
};

struct dl_metrics_registry {
	pthread_mutex_t lock; /* guards the family list */
	struct dl_metric *head;
	struct dl_metric *tail;
	dl_metric *dropped;
};

static const double dl_metrics_default_buckets[] = {
	0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
};

static const char *const dl_metrics_kind_names[] = { "counter", "gauge", "histogram" };

static bool dl_metrics_valid_name(const char *s, bool is_label)
{
	if (!s || !s[0])
		return false;
	for (size_t i = 0; s[i]; i++) {
		char c = s[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
			  (!is_label && c == ':') || (i > 0 && c >= '0' && c <= '9');

		if (!ok)
			return false;
	}
	return !(is_label && s[0] == '_' && s[1] == '_');
}

static uint32_t dl_metrics_hash(const char *const *values, size_t n)
{
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < n; i++) {
		for (const unsigned char *p = (const unsigned char *)values[i]; *p; p++)
			h = (h ^ *p) * 16777619u;
		h = (h ^ 0xffu) * 16777619u;
	}
	return h;
}

static void dl_metrics_child_free(struct dl_metric_child *c, size_t nlabels)
{
	if (!c)
		return;
	if (c->values) {
		for (size_t i = 0; i < nlabels; i++)
			free(c->values[i]);
		free(c->values);
	}
	free(c->bucket_counts);
	free(c);
}

static void dl_metric_free(dl_metric *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->nchildren; i++)
		dl_metrics_child_free(m->children[i], m->nlabels);
	free(m->children);
	for (size_t i = 0; i < m->nlabels; i++)
		free(m->labels[i]);
	free(m->buckets);
	free(m->help);
	free(m->name);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

static bool dl_metrics_values_equal(char *const *a, const char *const *b, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (strcmp(a[i], b[i]) != 0)
			return false;
	}
	return true;
}

/* Finds the child of a tuple; creates it when create is set and the family has room.
 * Called with m->lock held. Returns NULL when absent, full or out of memory. */
static struct dl_metric_child *dl_metric_child_get(dl_metric *m, const char *const *values,
						   bool create)
{
	uint32_t h = dl_metrics_hash(values, m->nlabels);
	struct dl_metric_child **slot = &m->slots[h % DL_METRICS_HASH_SIZE];
	struct dl_metric_child *c;

	for (c = *slot; c; c = c->next_in_slot) {
		if (c->hash == h && dl_metrics_values_equal(c->values, values, m->nlabels))
			return c;
	}
	if (!create || m->nchildren >= DL_METRICS_MAX_CHILDREN)
		return NULL;
	if (m->nchildren == m->children_cap) {
		size_t cap = m->children_cap ? m->children_cap * 2 : 8;
		struct dl_metric_child **grown = realloc(m->children, cap * sizeof(*grown));

		if (!grown)
			return NULL;
		m->children = grown;
		m->children_cap = cap;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->hash = h;
	if (m->nlabels > 0) {
		c->values = calloc(m->nlabels, sizeof(*c->values));
		if (!c->values)
			goto out_free_child;
		for (size_t i = 0; i < m->nlabels; i++) {
			c->values[i] = strdup(values[i]);
			if (!c->values[i])
				goto out_free_child;
		}
	}
	if (m->kind == DL_METRIC_HISTOGRAM) {
		c->bucket_counts = calloc(m->nbuckets + 1, sizeof(*c->bucket_counts));
		if (!c->bucket_counts)
			goto out_free_child;
	}
	c->next_in_slot = *slot;
	*slot = c;
	m->children[m->nchildren++] = c;
	return c;

out_free_child:
	dl_metrics_child_free(c, m->nlabels);
	return NULL;
}

static bool dl_metrics_labels_ok(const dl_metric *m, const char *const *values)
{
	if (m->nlabels == 0)
		return true;
	if (!values)
		return false;
	for (size_t i = 0; i < m->nlabels; i++) {
		if (!values[i])
			return false;
	}
	return true;
}

/* Applies one update; returns false when the registry refuses it. */
static bool dl_metric_apply(dl_metric *m, const char *const *values, double v,
			    enum dl_metric_op op)
{
	static const char *const none[1] = { NULL };
	struct dl_metric_child *c;
	bool ok;

	switch (op) {
	case DL_METRIC_OP_INC:
		ok = (m->kind == DL_METRIC_COUNTER && v >= 0 && !isinf(v)) ||
		     (m->kind == DL_METRIC_GAUGE && isfinite(v));
		break;
	case DL_METRIC_OP_SET:
		ok = m->kind == DL_METRIC_GAUGE && !isnan(v);
		break;
	case DL_METRIC_OP_OBSERVE:
		ok = m->kind == DL_METRIC_HISTOGRAM && !isnan(v);
		break;
	default:
		ok = false;
		break;
	}
	if (!ok || !dl_metrics_labels_ok(m, values))
		return false;

	pthread_mutex_lock(&m->lock);
	c = dl_metric_child_get(m, m->nlabels ? values : none, true);
	if (c) {
		switch (op) {
		case DL_METRIC_OP_INC:
			c->value += v;
			break;
		case DL_METRIC_OP_SET:
			c->value = v;
			break;
		case DL_METRIC_OP_OBSERVE: {
			size_t i = 0;

			while (i < m->nbuckets && v > m->buckets[i])
				i++;
			c->bucket_counts[i]++;
			c->count++;
			c->value += v;
			break;
		}
		}
	}
	pthread_mutex_unlock(&m->lock);
	return c != NULL;
}

static void dl_metric_update(dl_metric *m, const char *const *values, double v,
			     enum dl_metric_op op)
{
	if (!m)
		return;
	/* The dropped counter is unlabelled and only ever incremented by 1, so counting a drop
	 * cannot itself be dropped. */
	if (!dl_metric_apply(m, values, v, op) && m != m->reg->dropped)
		dl_metric_apply(m->reg->dropped, NULL, 1, DL_METRIC_OP_INC);
}

void dl_metric_inc(dl_metric *m, const char *const *label_values, double v)
{
	dl_metric_update(m, label_values, v, DL_METRIC_OP_INC);
}

void dl_metric_set(dl_metric *m, const char *const *label_values, double v)
{
	dl_metric_update(m, label_values, v, DL_METRIC_OP_SET);
}

void dl_metric_observe(dl_metric *m, const char *const *label_values, double v)
{
	dl_metric_update(m, label_values, v, DL_METRIC_OP_OBSERVE);
}

int dl_metric_get(dl_metric *m, const char *const *label_values, double *ret_value)
{
	static const char *const none[1] = { NULL };
	struct dl_metric_child *c;
	double v;

	if (!m)
		return -ENOENT;
	if (!dl_metrics_labels_ok(m, label_values))
		return -EINVAL;
	pthread_mutex_lock(&m->lock);
	c = dl_metric_child_get(m, m->nlabels ? label_values : none, false);
	if (c)
		v = m->kind == DL_METRIC_HISTOGRAM ? (double)c->count : c->value;
	pthread_mutex_unlock(&m->lock);
	if (!c)
		return -ENOENT;
	*ret_value = v;
	return 0;
}

/* True when an existing family can be returned for a repeated registration. */
static bool dl_metric_same(const dl_metric *m, enum dl_metric_kind kind, const double *buckets,
			   size_t nbuckets, size_t nlabels, const char *const *labels)
{
	if (m->kind != kind || m->nlabels != nlabels)
		return false;
	for (size_t i = 0; i < nlabels; i++) {
		if (strcmp(m->labels[i], labels[i]) != 0)
			return false;
	}
	if (kind != DL_METRIC_HISTOGRAM)
		return true;
	if (m->nbuckets != nbuckets)
		return false;
	for (size_t i = 0; i < nbuckets; i++) {
		if (m->buckets[i] != buckets[i])
			return false;
	}
	return true;
}

static bool dl_metrics_check_definition(const char *name, enum dl_metric_kind kind,
					const double *buckets, size_t nbuckets, size_t nlabels,
					const char *const *labels)
{
	if (!dl_metrics_valid_name(name, false))
		return false;
	for (size_t i = 0; i < nlabels; i++) {
		if (!dl_metrics_valid_name(labels[i], true))
			return false;
		if (kind == DL_METRIC_HISTOGRAM && strcmp(labels[i], "le") == 0)
			return false;
		for (size_t j = 0; j < i; j++) {
			if (strcmp(labels[i], labels[j]) == 0)
				return false;
		}
	}
	if (kind != DL_METRIC_HISTOGRAM)
		return true;
	if (nbuckets == 0 || nbuckets > DL_METRICS_MAX_BUCKETS || !buckets)
		return false;
	for (size_t i = 0; i < nbuckets; i++) {
		if (!isfinite(buckets[i]) || (i > 0 && buckets[i] <= buckets[i - 1]))
			return false;
	}
	return true;
}

static dl_metric *dl_metrics_register(dl_metrics_registry *reg, const char *name,
				      const char *help, enum dl_metric_kind kind,
				      const double *buckets, size_t nbuckets, size_t nlabels,
				      va_list ap)
{
	const char *labels[DL_METRICS_MAX_LABELS];
	dl_metric *m;

	if (!reg || nlabels > DL_METRICS_MAX_LABELS)
		return NULL;
	for (size_t i = 0; i < nlabels; i++)
		labels[i] = va_arg(ap, const char *);
	if (kind == DL_METRIC_HISTOGRAM && !buckets && nbuckets == 0) {
		buckets = dl_metrics_default_buckets;
		nbuckets = sizeof(dl_metrics_default_buckets) / sizeof(dl_metrics_default_buckets[0]);
	}
	if (!dl_metrics_check_definition(name, kind, buckets, nbuckets, nlabels, labels))
		return NULL;

	pthread_mutex_lock(&reg->lock);
	for (m = reg->head; m; m = m->next) {
		if (strcmp(m->name, name) == 0) {
			if (!dl_metric_same(m, kind, buckets, nbuckets, nlabels, labels))
				m = NULL;
			goto out_unlock;
		}
	}

	m = calloc(1, sizeof(*m));
	if (!m)
		goto out_unlock;
	m->reg = reg;
	m->kind = kind;
	pthread_mutex_init(&m->lock, NULL);
	m->name = strdup(name);
	m->help = help ? strdup(help) : NULL;
	if (!m->name || (help && !m->help))
		goto out_free_metric;
	for (size_t i = 0; i < nlabels; i++) {
		m->labels[i] = strdup(labels[i]);
		if (!m->labels[i])
			goto out_free_metric;
		m->nlabels = i + 1;
	}
	if (kind == DL_METRIC_HISTOGRAM) {
		m->buckets = malloc(nbuckets * sizeof(*m->buckets));
		if (!m->buckets)
			goto out_free_metric;
		memcpy(m->buckets, buckets, nbuckets * sizeof(*m->buckets));
		m->nbuckets = nbuckets;
	}
	/* An unlabelled family has exactly one series, shown from the start. */
	if (nlabels == 0) {
		static const char *const none[1] = { NULL };

		if (!dl_metric_child_get(m, none, true))
			goto out_free_metric;
	}
	if (reg->tail)
		reg->tail->next = m;
	else
		reg->head = m;
	reg->tail = m;
	goto out_unlock;

out_free_metric:
	dl_metric_free(m);
	m = NULL;
out_unlock:
	pthread_mutex_unlock(&reg->lock);
	return m;
}

dl_metric *dl_metrics_counter(dl_metrics_registry *reg, const char *name, const char *help,
			      size_t nlabels, ...)
{
	dl_metric *m;
	va_list ap;

	va_start(ap, nlabels);
	m = dl_metrics_register(reg, name, help, DL_METRIC_COUNTER, NULL, 0, nlabels, ap);
	va_end(ap);
	return m;
}

dl_metric *dl_metrics_gauge(dl_metrics_registry *reg, const char *name, const char *help,
			    size_t nlabels, ...)
{
	dl_metric *m;
	va_list ap;

	va_start(ap, nlabels);
	m = dl_metrics_register(reg, name, help, DL_METRIC_GAUGE, NULL, 0, nlabels, ap);
	va_end(ap);
	return m;
}

dl_metric *dl_metrics_histogram(dl_metrics_registry *reg, const char *name, const char *help,
				const double *buckets, size_t nbuckets, size_t nlabels, ...)
{
	dl_metric *m;
	va_list ap;

	va_start(ap, nlabels);
	m = dl_metrics_register(reg, name, help, DL_METRIC_HISTOGRAM, buckets, nbuckets, nlabels,
				ap);
	va_end(ap);
	return m;
}

dl_metrics_registry *dl_metrics_registry_new(void)
{
	dl_metrics_registry *reg = calloc(1, sizeof(*reg));

	if (!reg)
		return NULL;
	pthread_mutex_init(&reg->lock, NULL);
	reg->dropped = dl_metrics_counter(reg, "dl_metrics_dropped_total",
					  "Metric updates dropped by the registry (too many label "
					  "combinations or invalid updates).",
					  0);
	if (!reg->dropped) {
		dl_metrics_registry_free(reg);
		return NULL;
	}
	return reg;
}

void dl_metrics_registry_free(dl_metrics_registry *reg)
{
	dl_metric *m, *next;

	if (!reg)
		return;
	for (m = reg->head; m; m = next) {
		next = m->next;
		dl_metric_free(m);
	}
	pthread_mutex_destroy(&reg->lock);
	free(reg);
}

/* The text being rendered; failed is set once an allocation failed. */
struct dl_metrics_buf {
	char *p;
	size_t len;
	size_t cap;
	bool failed;
};

static void dl_metrics_buf_put(struct dl_metrics_buf *b, const char *s, size_t n)
{
	if (b->failed)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		char *p;

		while (cap < b->len + n + 1)
			cap *= 2;
		p = realloc(b->p, cap);
		if (!p) {
			b->failed = true;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void dl_metrics_buf_puts(struct dl_metrics_buf *b, const char *s)
{
	dl_metrics_buf_put(b, s, strlen(s));
}

/* Appends s with backslash and newline escaped, and the double quote too when quote is set
 * (label values); HELP text escapes only the first two. */
static void dl_metrics_buf_escaped(struct dl_metrics_buf *b, const char *s, bool quote)
{
	for (; *s; s++) {
		if (*s == '\\')
			dl_metrics_buf_put(b, "\\\\", 2);
		else if (*s == '\n')
			dl_metrics_buf_put(b, "\\n", 2);
		else if (quote && *s == '"')
			dl_metrics_buf_put(b, "\\\"", 2);
		else
			dl_metrics_buf_put(b, s, 1);
	}
}

/* Formats a sample value: integers without a fraction, others in the shortest form that reads
 * back exactly, and NaN, +Inf, -Inf as Prometheus spells them. */
static void dl_metrics_format_value(double v, char out[40])
{
	if (isnan(v)) {
		strcpy(out, "NaN");
	} else if (isinf(v)) {
		strcpy(out, v > 0 ? "+Inf" : "-Inf");
	} else if (v == 0) {
		strcpy(out, "0");
	} else if (v == floor(v) && fabs(v) < 1e15) {
		snprintf(out, 40, "%.0f", v);
	} else {
		for (int prec = 15; prec <= 17; prec++) {
			snprintf(out, 40, "%.*g", prec, v);
			if (strtod(out, NULL) == v)
				break;
		}
	}
}

/* Writes {a="x",b="y"[,le="..."]} (nothing when there are no labels and no le). */
static void dl_metrics_buf_labels(struct dl_metrics_buf *b, const dl_metric *m,
				  const struct dl_metric_child *c, const char *le)
{
	if (m->nlabels == 0 && !le)
		return;
	dl_metrics_buf_put(b, "{", 1);
	for (size_t i = 0; i < m->nlabels; i++) {
		if (i > 0)
			dl_metrics_buf_put(b, ",", 1);
		dl_metrics_buf_puts(b, m->labels[i]);
		dl_metrics_buf_put(b, "=\"", 2);
		dl_metrics_buf_escaped(b, c->values[i], true);
		dl_metrics_buf_put(b, "\"", 1);
	}
	if (le) {
		if (m->nlabels > 0)
			dl_metrics_buf_put(b, ",", 1);
		dl_metrics_buf_puts(b, "le=\"");
		dl_metrics_buf_puts(b, le);
		dl_metrics_buf_put(b, "\"", 1);
	}
	dl_metrics_buf_put(b, "}", 1);
}

static void dl_metrics_buf_sample(struct dl_metrics_buf *b, const dl_metric *m,
				  const struct dl_metric_child *c, const char *suffix,
				  const char *le, const char *value)
{
	dl_metrics_buf_puts(b, m->name);
	dl_metrics_buf_puts(b, suffix);
	dl_metrics_buf_labels(b, m, c, le);
	dl_metrics_buf_put(b, " ", 1);
	dl_metrics_buf_puts(b, value);
	dl_metrics_buf_put(b, "\n", 1);
}

static void dl_metrics_render_family(struct dl_metrics_buf *b, dl_metric *m)
{
	char value[40], le[40];

	if (m->help) {
		dl_metrics_buf_puts(b, "# HELP ");
		dl_metrics_buf_puts(b, m->name);
		dl_metrics_buf_put(b, " ", 1);
		dl_metrics_buf_escaped(b, m->help, false);
		dl_metrics_buf_put(b, "\n", 1);
	}
	dl_metrics_buf_puts(b, "# TYPE ");
	dl_metrics_buf_puts(b, m->name);
	dl_metrics_buf_put(b, " ", 1);
	dl_metrics_buf_puts(b, dl_metrics_kind_names[m->kind]);
	dl_metrics_buf_put(b, "\n", 1);

	pthread_mutex_lock(&m->lock);
	for (size_t i = 0; i < m->nchildren; i++) {
		const struct dl_metric_child *c = m->children[i];
		uint64_t cumulative = 0;

		if (m->kind != DL_METRIC_HISTOGRAM) {
			dl_metrics_format_value(c->value, value);
			dl_metrics_buf_sample(b, m, c, "", NULL, value);
			continue;
		}
		for (size_t k = 0; k <= m->nbuckets; k++) {
			cumulative += c->bucket_counts[k];
			if (k < m->nbuckets)
				dl_metrics_format_value(m->buckets[k], le);
			else
				strcpy(le, "+Inf");
			snprintf(value, sizeof(value), "%" PRIu64, cumulative);
			dl_metrics_buf_sample(b, m, c, "_bucket", le, value);
		}
		dl_metrics_format_value(c->value, value);
		dl_metrics_buf_sample(b, m, c, "_sum", NULL, value);
		snprintf(value, sizeof(value), "%" PRIu64, c->count);
		dl_metrics_buf_sample(b, m, c, "_count", NULL, value);
	}
	pthread_mutex_unlock(&m->lock);
}

int dl_metrics_render(const dl_metrics_registry *creg, char **ret_text, size_t *ret_len)
{
	/* Rendering changes nothing but the locks. */
	dl_metrics_registry *reg = (dl_metrics_registry *)creg;
	struct dl_metrics_buf b = { 0 };

	if (!reg || !ret_text)
		return -EINVAL;
	dl_metrics_buf_put(&b, "", 0);
	pthread_mutex_lock(&reg->lock);
	for (dl_metric *m = reg->head; m; m = m->next)
		dl_metrics_render_family(&b, m);
	pthread_mutex_unlock(&reg->lock);
	if (b.failed) {
		free(b.p);
		return -ENOMEM;
	}
	*ret_text = b.p;
	if (ret_len)
		*ret_len = b.len;
	return 0;
}
