/* SPDX-License-Identifier: Apache-2.0 */
/* dl_config: loading, checking, printing and dumping a typed table of environment variables. */
#include "common/dl_config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A parsed value before it is stored into the caller's struct. */
union dl_config_value {
	char *s;
	int64_t i;
	double d;
	bool b;
};

struct dl_config_unit {
	const char *name;
	int64_t mult;
};

static const struct dl_config_unit dl_config_duration_units[] = {
	{ "d", 86400000 }, { "h", 3600000 }, { "m", 60000 }, { "s", 1000 }, { "ms", 1 }, { "", 1 },
};

static const struct dl_config_unit dl_config_bytes_units[] = {
	{ "TiB", INT64_C(1) << 40 }, { "GiB", INT64_C(1) << 30 }, { "MiB", INT64_C(1) << 20 },
	{ "KiB", INT64_C(1) << 10 }, { "B", 1 }, { "", 1 },
};

static const char *dl_config_type_name(dl_config_type t)
{
	switch (t) {
	case DL_CONFIG_STRING: return "string";
	case DL_CONFIG_SECRET: return "secret";
	case DL_CONFIG_INT: return "int";
	case DL_CONFIG_DOUBLE: return "double";
	case DL_CONFIG_BOOL: return "bool";
	case DL_CONFIG_DURATION_MS: return "duration";
	case DL_CONFIG_BYTES: return "bytes";
	case DL_CONFIG_ENUM: return "enum";
	}
	return "unknown";
}

static bool dl_config_is_string_type(dl_config_type t)
{
	return t == DL_CONFIG_STRING || t == DL_CONFIG_SECRET || t == DL_CONFIG_ENUM;
}

static bool dl_config_bounded(const dl_config_param *p)
{
	return p->min < p->max;
}

/* Unsigned decimal digits followed by a unit from the table (matched case-insensitively). */
static int dl_config_parse_units(const char *s, const struct dl_config_unit *units, size_t nunits,
				 int64_t *ret)
{
	int64_t v = 0;
	size_t i = 0;

	if (!s || !isdigit((unsigned char)s[0]))
		return -EINVAL;
	for (; isdigit((unsigned char)s[i]); i++) {
		int d = s[i] - '0';

		if (v > (INT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	for (size_t u = 0; u < nunits; u++) {
		if (strcasecmp(s + i, units[u].name) != 0)
			continue;
		if (v > INT64_MAX / units[u].mult)
			return -ERANGE;
		*ret = v * units[u].mult;
		return 0;
	}
	return -EINVAL;
}

int dl_config_parse_duration_ms(const char *s, int64_t *ret)
{
	return dl_config_parse_units(s, dl_config_duration_units,
				     sizeof(dl_config_duration_units) / sizeof(dl_config_duration_units[0]),
				     ret);
}

int dl_config_parse_bytes(const char *s, int64_t *ret)
{
	return dl_config_parse_units(s, dl_config_bytes_units,
				     sizeof(dl_config_bytes_units) / sizeof(dl_config_bytes_units[0]),
				     ret);
}

/* Writes v with the largest unit that divides it exactly ("5s", "2m", "64KiB"). */
static void dl_config_format_units(int64_t v, const struct dl_config_unit *units, size_t nunits,
				   const char *plain_unit, char *out, size_t outlen)
{
	for (size_t u = 0; v != 0 && u < nunits; u++) {
		if (units[u].name[0] != '\0' && units[u].mult > 1 && v % units[u].mult == 0) {
			snprintf(out, outlen, "%" PRId64 "%s", v / units[u].mult, units[u].name);
			return;
		}
	}
	snprintf(out, outlen, "%" PRId64 "%s", v, plain_unit);
}

static void dl_config_format_duration(int64_t ms, char *out, size_t outlen)
{
	dl_config_format_units(ms, dl_config_duration_units,
			       sizeof(dl_config_duration_units) / sizeof(dl_config_duration_units[0]),
			       "ms", out, outlen);
}

static void dl_config_format_bytes(int64_t b, char *out, size_t outlen)
{
	dl_config_format_units(b, dl_config_bytes_units,
			       sizeof(dl_config_bytes_units) / sizeof(dl_config_bytes_units[0]), "B",
			       out, outlen);
}

/* The allowed values of a parameter in short form, for the tables ("1..65535", "a|b"). */
static void dl_config_format_allowed(const dl_config_param *p, char *out, size_t outlen)
{
	char lo[32], hi[32];

	switch (p->type) {
	case DL_CONFIG_BOOL:
		snprintf(out, outlen, "true|false");
		return;
	case DL_CONFIG_ENUM:
		snprintf(out, outlen, "%s", p->choices ? p->choices : "");
		return;
	default:
		break;
	}
	if (!dl_config_bounded(p)) {
		snprintf(out, outlen, "-");
		return;
	}
	switch (p->type) {
	case DL_CONFIG_DURATION_MS:
		dl_config_format_duration((int64_t)p->min, lo, sizeof(lo));
		dl_config_format_duration((int64_t)p->max, hi, sizeof(hi));
		break;
	case DL_CONFIG_BYTES:
		dl_config_format_bytes((int64_t)p->min, lo, sizeof(lo));
		dl_config_format_bytes((int64_t)p->max, hi, sizeof(hi));
		break;
	case DL_CONFIG_DOUBLE:
		snprintf(lo, sizeof(lo), "%g", p->min);
		snprintf(hi, sizeof(hi), "%g", p->max);
		break;
	default:
		snprintf(lo, sizeof(lo), "%.0f", p->min);
		snprintf(hi, sizeof(hi), "%.0f", p->max);
		break;
	}
	snprintf(out, outlen, "%s..%s%s", lo, hi,
		 p->type == DL_CONFIG_STRING || p->type == DL_CONFIG_SECRET ? " bytes" : "");
}

/* The sentence part "expected ..." of an error message. */
static void dl_config_format_expected(const dl_config_param *p, char *out, size_t outlen)
{
	char range[96];
	const char *what;

	switch (p->type) {
	case DL_CONFIG_STRING:
	case DL_CONFIG_SECRET: what = "a string"; break;
	case DL_CONFIG_INT: what = "an integer"; break;
	case DL_CONFIG_DOUBLE: what = "a finite number"; break;
	case DL_CONFIG_BOOL: what = "true or false (or 1/0, yes/no, on/off)"; break;
	case DL_CONFIG_DURATION_MS: what = "a duration like 250ms, 5s, 2m, 1h (plain number = ms)"; break;
	case DL_CONFIG_BYTES: what = "a size like 512B, 64KiB, 8MiB, 1GiB (plain number = bytes)"; break;
	case DL_CONFIG_ENUM:
		snprintf(out, outlen, "one of %s", p->choices ? p->choices : "(no choices)");
		return;
	default: what = "a value"; break;
	}
	if (p->type != DL_CONFIG_BOOL && dl_config_bounded(p)) {
		dl_config_format_allowed(p, range, sizeof(range));
		snprintf(out, outlen, "%s%s in %s", what,
			 p->type == DL_CONFIG_STRING || p->type == DL_CONFIG_SECRET ? " with length" : "",
			 range);
	} else {
		snprintf(out, outlen, "%s", what);
	}
}

/* Copies a user's value for an error message: at most 64 bytes, control bytes as '?'. */
static void dl_config_quote_value(const char *v, char *out, size_t outlen)
{
	size_t n = 0;

	for (; v[n] != '\0' && n < 64 && n + 4 < outlen; n++)
		out[n] = iscntrl((unsigned char)v[n]) ? '?' : v[n];
	if (v[n] != '\0' && n + 4 < outlen) {
		memcpy(out + n, "...", 3);
		n += 3;
	}
	out[n] = '\0';
}

static bool dl_config_parse_bool(const char *s, bool *ret)
{
	static const char *const yes[] = { "true", "1", "yes", "on" };
	static const char *const no[] = { "false", "0", "no", "off" };

	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*ret = true;
			return true;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*ret = false;
			return true;
		}
	}
	return false;
}

/* Finds s among the '|'-separated choices; returns a malloc'd copy of the choice as written
 * there in *ret. Returns 0, -EINVAL (not a choice) or -ENOMEM. */
static int dl_config_match_choice(const char *choices, const char *s, char **ret)
{
	size_t slen = strlen(s);
	const char *c = choices;

	while (c && *c) {
		const char *bar = strchr(c, '|');
		size_t len = bar ? (size_t)(bar - c) : strlen(c);

		if (len == slen && strncasecmp(c, s, len) == 0) {
			char *copy = strndup(c, len);

			if (!copy)
				return -ENOMEM;
			*ret = copy;
			return 0;
		}
		c = bar ? bar + 1 : NULL;
	}
	return -EINVAL;
}

/* Parses raw for p into *ret. Returns 0, -EINVAL (invalid or out of bounds) or -ENOMEM. */
static int dl_config_parse_value(const dl_config_param *p, const char *raw,
				 union dl_config_value *ret)
{
	union dl_config_value v = { 0 };
	char *end = NULL;
	size_t len;
	int rc;

	switch (p->type) {
	case DL_CONFIG_STRING:
	case DL_CONFIG_SECRET:
		len = strlen(raw);
		if (dl_config_bounded(p) && ((double)len < p->min || (double)len > p->max))
			return -EINVAL;
		v.s = strdup(raw);
		if (!v.s)
			return -ENOMEM;
		break;
	case DL_CONFIG_ENUM:
		if (!p->choices)
			return -EINVAL;
		rc = dl_config_match_choice(p->choices, raw, &v.s);
		if (rc < 0)
			return rc;
		break;
	case DL_CONFIG_INT:
		if (isspace((unsigned char)raw[0]))
			return -EINVAL;
		errno = 0;
		v.i = strtoll(raw, &end, 10);
		if (errno != 0 || end == raw || *end != '\0')
			return -EINVAL;
		break;
	case DL_CONFIG_DOUBLE:
		if (isspace((unsigned char)raw[0]))
			return -EINVAL;
		errno = 0;
		v.d = strtod(raw, &end);
		if (errno != 0 || end == raw || *end != '\0' || !isfinite(v.d))
			return -EINVAL;
		break;
	case DL_CONFIG_BOOL:
		if (!dl_config_parse_bool(raw, &v.b))
			return -EINVAL;
		break;
	case DL_CONFIG_DURATION_MS:
		if (dl_config_parse_duration_ms(raw, &v.i) < 0)
			return -EINVAL;
		break;
	case DL_CONFIG_BYTES:
		if (dl_config_parse_bytes(raw, &v.i) < 0)
			return -EINVAL;
		break;
	default:
		return -EINVAL;
	}

	if (dl_config_bounded(p)) {
		bool out = false;

		if (p->type == DL_CONFIG_INT || p->type == DL_CONFIG_DURATION_MS ||
		    p->type == DL_CONFIG_BYTES)
			out = (double)v.i < p->min || (double)v.i > p->max;
		else if (p->type == DL_CONFIG_DOUBLE)
			out = v.d < p->min || v.d > p->max;
		if (out)
			return -EINVAL;
	}
	*ret = v;
	return 0;
}

static void dl_config_store(const dl_config_param *p, void *cfg, const union dl_config_value *v)
{
	char *dst = (char *)cfg + p->offset;

	switch (p->type) {
	case DL_CONFIG_STRING:
	case DL_CONFIG_SECRET:
	case DL_CONFIG_ENUM:
		memcpy(dst, &v->s, sizeof(v->s));
		break;
	case DL_CONFIG_INT:
	case DL_CONFIG_DURATION_MS:
	case DL_CONFIG_BYTES:
		memcpy(dst, &v->i, sizeof(v->i));
		break;
	case DL_CONFIG_DOUBLE:
		memcpy(dst, &v->d, sizeof(v->d));
		break;
	case DL_CONFIG_BOOL:
		memcpy(dst, &v->b, sizeof(v->b));
		break;
	}
}

static void dl_config_set_error(char *errbuf, size_t errlen, const dl_config_param *p,
				const char *raw, bool from_default)
{
	char expected[256];
	char shown[80];

	if (!errbuf || errlen == 0)
		return;
	dl_config_format_expected(p, expected, sizeof(expected));
	if (!raw) {
		snprintf(errbuf, errlen, "%s is required but not set: expected %s", p->env,
			 expected);
		return;
	}
	if (p->type == DL_CONFIG_SECRET) {
		snprintf(errbuf, errlen, "%s%s (secret, value not shown) is invalid: expected %s",
			 p->env, from_default ? " default" : "", expected);
		return;
	}
	dl_config_quote_value(raw, shown, sizeof(shown));
	snprintf(errbuf, errlen, "%s%s=\"%s\" is invalid: expected %s", p->env,
		 from_default ? " default" : "", shown, expected);
}

int dl_config_load(const dl_config_param *params, size_t n, void *cfg, char *errbuf,
		   size_t errlen)
{
	union dl_config_value *vals;
	size_t done = 0;
	int rc = 0;

	if (!params || !cfg) {
		if (errbuf && errlen)
			snprintf(errbuf, errlen, "dl_config_load: no parameter table or config");
		return -EINVAL;
	}
	vals = calloc(n ? n : 1, sizeof(*vals));
	if (!vals) {
		if (errbuf && errlen)
			snprintf(errbuf, errlen, "out of memory loading the configuration");
		return -ENOMEM;
	}

	/* Everything is parsed first and stored only when all of it is valid, so a failed load
	 * leaves the caller's struct as it was. */
	for (; done < n; done++) {
		const dl_config_param *p = &params[done];
		const char *raw = p->env ? getenv(p->env) : NULL;
		bool from_default = false;

		if (!raw || raw[0] == '\0') {
			raw = p->def;
			from_default = true;
		}
		if (!raw) {
			dl_config_set_error(errbuf, errlen, p, NULL, false);
			rc = -EINVAL;
			goto out_free_values;
		}
		rc = dl_config_parse_value(p, raw, &vals[done]);
		if (rc == -ENOMEM) {
			if (errbuf && errlen)
				snprintf(errbuf, errlen, "out of memory reading %s", p->env);
			goto out_free_values;
		}
		if (rc < 0) {
			dl_config_set_error(errbuf, errlen, p, raw, from_default);
			goto out_free_values;
		}
	}
	for (size_t i = 0; i < n; i++)
		dl_config_store(&params[i], cfg, &vals[i]);
	free(vals);
	return 0;

out_free_values:
	for (size_t i = 0; i < done; i++) {
		if (dl_config_is_string_type(params[i].type))
			free(vals[i].s);
	}
	free(vals);
	return rc;
}

void dl_config_free(const dl_config_param *params, size_t n, void *cfg)
{
	if (!params || !cfg)
		return;
	for (size_t i = 0; i < n; i++) {
		char **slot;

		if (!dl_config_is_string_type(params[i].type))
			continue;
		slot = (char **)((char *)cfg + params[i].offset);
		free(*slot);
		*slot = NULL;
	}
}

/* The default column: "(required)", "***" for a secret's default, else the default as written. */
static const char *dl_config_default_text(const dl_config_param *p)
{
	if (!p->def)
		return "(required)";
	if (p->type == DL_CONFIG_SECRET)
		return "***";
	return p->def;
}

void dl_config_print_help(FILE *out, const char *prog, const char *summary,
			  const dl_config_param *params, size_t n)
{
	int wvar = (int)strlen("VARIABLE"), wtype = (int)strlen("TYPE");
	int wdef = (int)strlen("DEFAULT"), wallowed = (int)strlen("ALLOWED");
	char allowed[256];

	for (size_t i = 0; i < n; i++) {
		int l;

		if ((l = (int)strlen(params[i].env)) > wvar)
			wvar = l;
		if ((l = (int)strlen(dl_config_type_name(params[i].type))) > wtype)
			wtype = l;
		if ((l = (int)strlen(dl_config_default_text(&params[i]))) > wdef)
			wdef = l;
		dl_config_format_allowed(&params[i], allowed, sizeof(allowed));
		if ((l = (int)strlen(allowed)) > wallowed)
			wallowed = l;
	}
	fprintf(out, "Usage: %s\n", prog ? prog : "driftlock");
	if (summary && summary[0])
		fprintf(out, "%s\n", summary);
	fprintf(out, "\nConfiguration, read from the environment:\n\n");
	fprintf(out, "  %-*s  %-*s  %-*s  %-*s  %s\n", wvar, "VARIABLE", wtype, "TYPE", wdef,
		"DEFAULT", wallowed, "ALLOWED", "DESCRIPTION");
	for (size_t i = 0; i < n; i++) {
		const dl_config_param *p = &params[i];

		dl_config_format_allowed(p, allowed, sizeof(allowed));
		fprintf(out, "  %-*s  %-*s  %-*s  %-*s  %s\n", wvar, p->env, wtype,
			dl_config_type_name(p->type), wdef, dl_config_default_text(p), wallowed,
			allowed, p->help ? p->help : "");
	}
}

/* Writes s as the content of a Markdown table cell: '|' escaped, newlines as spaces. */
static void dl_config_md_cell(FILE *out, const char *s, bool code)
{
	if (code)
		fputc('`', out);
	for (; *s; s++) {
		if (*s == '|')
			fputs("\\|", out);
		else if (*s == '\n' || *s == '\r')
			fputc(' ', out);
		else
			fputc(*s, out);
	}
	if (code)
		fputc('`', out);
}

void dl_config_print_markdown(FILE *out, const char *prog, const char *summary,
			      const dl_config_param *params, size_t n)
{
	char allowed[256];

	fprintf(out, "## %s\n\n", prog ? prog : "driftlock");
	if (summary && summary[0])
		fprintf(out, "%s\n\n", summary);
	fprintf(out, "| Variable | Type | Default | Allowed | Description |\n");
	fprintf(out, "|---|---|---|---|---|\n");
	for (size_t i = 0; i < n; i++) {
		const dl_config_param *p = &params[i];

		dl_config_format_allowed(p, allowed, sizeof(allowed));
		fputs("| ", out);
		dl_config_md_cell(out, p->env, true);
		fprintf(out, " | %s | ", dl_config_type_name(p->type));
		if (p->def)
			dl_config_md_cell(out, dl_config_default_text(p), true);
		else
			fputs("*required*", out);
		fputs(" | ", out);
		dl_config_md_cell(out, allowed, false);
		fputs(" | ", out);
		dl_config_md_cell(out, p->help ? p->help : "", false);
		fputs(" |\n", out);
	}
}

int dl_config_to_json(const dl_config_param *params, size_t n, const void *cfg, cJSON **ret_json)
{
	cJSON *obj;

	if (!params || !cfg || !ret_json)
		return -EINVAL;
	obj = cJSON_CreateObject();
	if (!obj)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		const dl_config_param *p = &params[i];
		const char *src = (const char *)cfg + p->offset;
		cJSON *item = NULL;
		char *s;
		int64_t iv;
		double dv;
		bool bv;

		switch (p->type) {
		case DL_CONFIG_STRING:
		case DL_CONFIG_ENUM:
			memcpy(&s, src, sizeof(s));
			item = s ? cJSON_CreateString(s) : cJSON_CreateNull();
			break;
		case DL_CONFIG_SECRET:
			memcpy(&s, src, sizeof(s));
			item = s ? cJSON_CreateString("***") : cJSON_CreateNull();
			break;
		case DL_CONFIG_INT:
		case DL_CONFIG_DURATION_MS:
		case DL_CONFIG_BYTES:
			memcpy(&iv, src, sizeof(iv));
			item = cJSON_CreateNumber((double)iv);
			break;
		case DL_CONFIG_DOUBLE:
			memcpy(&dv, src, sizeof(dv));
			item = cJSON_CreateNumber(dv);
			break;
		case DL_CONFIG_BOOL:
			memcpy(&bv, src, sizeof(bv));
			item = cJSON_CreateBool(bv);
			break;
		}
		if (!item || !cJSON_AddItemToObject(obj, p->env, item)) {
			cJSON_Delete(item);
			goto out_delete;
		}
	}
	*ret_json = obj;
	return 0;

out_delete:
	cJSON_Delete(obj);
	return -ENOMEM;
}
