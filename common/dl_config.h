/* SPDX-License-Identifier: Apache-2.0 */
/* dl_config: a service's configuration as one typed table of environment variables. */
#ifndef DL_COMMON_CONFIG_H
#define DL_COMMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cjson/cJSON.h>

typedef enum {
	DL_CONFIG_STRING,      /* char *, malloc'd */
	DL_CONFIG_SECRET,      /* char *, malloc'd; the value is never printed */
	DL_CONFIG_INT,         /* int64_t, decimal */
	DL_CONFIG_DOUBLE,      /* double, finite */
	DL_CONFIG_BOOL,        /* bool: true|false|1|0|yes|no|on|off, any case */
	DL_CONFIG_DURATION_MS, /* int64_t milliseconds: "250ms", "5s", "2m", "1h", "1d" or plain ms */
	DL_CONFIG_BYTES,       /* int64_t bytes: "512B", "64KiB", "8MiB", "1GiB", "1TiB" or plain */
	DL_CONFIG_ENUM,        /* char *, malloc'd: one of the '|'-separated choices */
} dl_config_type;

/* One row of a service's table; the struct member at `offset` of the service's config struct
 * has the C type named in dl_config_type.
 * def: the default, written as a user would write the variable; NULL = the variable is required.
 * min, max: bounds, enforced when min < max (both 0 = unbounded): the value for INT, DOUBLE,
 * DURATION_MS (ms) and BYTES, the length in bytes for STRING and SECRET; unused otherwise.
 * choices: for ENUM, "a|b|c" (matched case-insensitively, stored as written here).
 * help: one sentence for --help and docs/configuration.md. */
typedef struct dl_config_param {
	const char *env;
	dl_config_type type;
	size_t offset;
	const char *def;
	double min, max;
	const char *choices;
	const char *help;
} dl_config_param;

/* Reads every variable of the table with getenv (an empty value counts as unset, so the default
 * applies), checks it and stores it into cfg.
 * Returns 0; on the first missing or invalid value returns -EINVAL with a message in errbuf that
 * names the variable, the bad value (never for SECRET) and what is allowed; -ENOMEM when out
 * of memory. On failure cfg is untouched and nothing is allocated.
 * Ownership: the strings stored in cfg belong to cfg; release them with dl_config_free().
 * Thread: reads the environment; call from main before threads that may call setenv. */
int dl_config_load(const dl_config_param *params, size_t n, void *cfg, char *errbuf,
		   size_t errlen);

/* Frees the strings of a loaded cfg and sets those members to NULL. cfg NULL is a no-op;
 * string members that are NULL are skipped, so a zeroed cfg is fine. */
void dl_config_free(const dl_config_param *params, size_t n, void *cfg);

/* Prints usage for --help: "Usage: <prog>", the summary, then a table with columns variable,
 * type, default ("(required)" when none, "***" for a secret's), allowed values and help. */
void dl_config_print_help(FILE *out, const char *prog, const char *summary,
			  const dl_config_param *params, size_t n);

/* Prints the same table as Markdown (for docs/configuration.md): a "## <prog>" heading, the
 * summary, and | Variable | Type | Default | Allowed | Description | with '|' escaped. */
void dl_config_print_markdown(FILE *out, const char *prog, const char *summary,
			      const dl_config_param *params, size_t n);

/* Builds a JSON object of the effective values of a loaded cfg, keyed by variable name:
 * strings and enums as strings, INT, DURATION_MS (ms) and BYTES as integers, DOUBLE as number,
 * BOOL as boolean, SECRET as "***" (null when unset).
 * Returns 0 and the new object in *ret_json (caller frees with cJSON_Delete), or -ENOMEM
 * (*ret_json untouched). */
int dl_config_to_json(const dl_config_param *params, size_t n, const void *cfg, cJSON **ret_json);

/* Parses a duration: a non-negative integer with an optional unit ms, s, m, h or d (plain =
 * milliseconds), e.g. "250ms", "5s", "2m". Returns 0, or -EINVAL / -ERANGE (*ret untouched). */
int dl_config_parse_duration_ms(const char *s, int64_t *ret);

/* Parses a size: a non-negative integer with an optional unit B, KiB, MiB, GiB or TiB (any case;
 * plain = bytes). Returns 0, or -EINVAL / -ERANGE (*ret untouched). */
int dl_config_parse_bytes(const char *s, int64_t *ret);

#endif /* DL_COMMON_CONFIG_H */
