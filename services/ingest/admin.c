/* SPDX-License-Identifier: Apache-2.0 */
/* driftlock-admin: the operator command for organizations and API keys (create, list, revoke). */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <openssl/crypto.h>

#include "common/dl_apikey.h"
#include "common/dl_id.h"
#include "common/dl_pg.h"

#define EXIT_USAGE 2

#define TS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

static const char USAGE[] =
	"Usage: driftlock-admin [--json] COMMAND [OPTIONS]\n"
	"\n"
	"Manages DriftLock organizations and API keys directly in PostgreSQL.\n"
	"\n"
	"Commands:\n"
	"  org create --name NAME [--plan PLAN] [--email EMAIL]\n"
	"        Creates an organization (plan developer by default) and prints its id.\n"
	"  key create --org ORG_ID [--name NAME]\n"
	"        Creates an API key for the organization and prints it. The key is shown only\n"
	"        this once: only its keyed hash is stored.\n"
	"  key list --org ORG_ID\n"
	"        Lists the organization's keys: id, prefix, name, created, last used, revoked.\n"
	"  key revoke --id KEY_ID | --prefix PREFIX\n"
	"        Revokes a key. Ingest stops accepting it within its cache TTL (at most 30 s).\n"
	"\n"
	"Options:\n"
	"  --json     print JSON (one object, or an array for key list) for scripts\n"
	"  -h, --help print this help\n"
	"\n"
	"Environment:\n"
	"  DRIFTLOCK_PG_DSN_ADMIN  PostgreSQL DSN of an owner or superuser role (it must bypass\n"
	"                          row-level security); DRIFTLOCK_PG_DSN is used when unset.\n"
	"  DRIFTLOCK_API_KEY_SECRET the server's key secret (>= 32 bytes), the same as ingest's;\n"
	"                          needed by key create.\n"
	"\n"
	"Exit status: 0 done, 1 failed (the message says why), 2 bad usage.\n";

typedef struct admin_args {
	bool json;
	const char *name, *plan, *email, *org, *id, *prefix;
} admin_args;

static int usage_error(const char *fmt, const char *arg)
{
	fprintf(stderr, "driftlock-admin: ");
	fprintf(stderr, fmt, arg ? arg : "");
	fprintf(stderr, "\nRun driftlock-admin --help for usage.\n");
	return EXIT_USAGE;
}

static int fail(const char *what, const char *detail)
{
	fprintf(stderr, "driftlock-admin: %s%s%s\n", what, detail && *detail ? ": " : "",
		detail ? detail : "");
	return 1;
}

static int connect_db(dl_pg **ret)
{
	const char *dsn = getenv("DRIFTLOCK_PG_DSN_ADMIN");
	char err[512];
	dl_pg_options opts = { .connect_timeout_s = 10, .statement_timeout_ms = 30000,
			       .application_name = "driftlock-admin" };

	if (!dsn || !*dsn)
		dsn = getenv("DRIFTLOCK_PG_DSN");
	if (!dsn || !*dsn)
		return fail("set DRIFTLOCK_PG_DSN_ADMIN (or DRIFTLOCK_PG_DSN) to the database's "
			    "owner DSN", NULL);
	if (dl_pg_connect(dsn, &opts, err, sizeof(err), ret) < 0)
		return fail("cannot connect to PostgreSQL", err);
	return 0;
}

/* Prepares and runs one statement; on failure prints what failed and returns 1. */
static int run(dl_pg *pg, const char *name, const char *sql, int n, const char *const *params,
	       PGresult **ret)
{
	char err[512];

	if (dl_pg_prepare(pg, name, sql, n, err, sizeof(err)) < 0 ||
	    dl_pg_exec(pg, name, n, params, ret, err, sizeof(err)) < 0)
		return fail("database error", err);
	return 0;
}

static void print_json(cJSON *j)
{
	char *s = cJSON_PrintUnformatted(j);

	if (s)
		puts(s);
	free(s);
	cJSON_Delete(j);
}

static void add_text_or_null(cJSON *o, const char *k, const PGresult *res, int row, int col)
{
	if (PQgetisnull(res, row, col))
		cJSON_AddNullToObject(o, k);
	else
		cJSON_AddStringToObject(o, k, PQgetvalue(res, row, col));
}

static int check_org(dl_pg *pg, const char *org)
{
	PGresult *res = NULL;
	const char *p[1] = { org };
	int n;

	if (!dl_id_is_uuid(org))
		return usage_error("--org must be an organization id (a UUID), not '%s'", org);
	if (run(pg, "admin_org_exists", "SELECT 1 FROM organizations WHERE id = $1::uuid", 1, p,
		&res))
		return 1;
	n = PQntuples(res);
	PQclear(res);
	if (n != 1)
		return fail("no organization has this id", org);
	return 0;
}

static int org_create(dl_pg *pg, const admin_args *a)
{
	const char *plan = a->plan ? a->plan : "developer";
	const char *p[3] = { a->name, plan, a->email };
	PGresult *res = NULL;
	int n;

	if (!a->name || !*a->name || strlen(a->name) > 200)
		return usage_error("org create needs --name of 1-200 characters%s", NULL);
	if (a->email && (strlen(a->email) > 254 || !strchr(a->email, '@')))
		return usage_error("--email '%s' is not an email address", a->email);
	if (run(pg, "admin_plan_exists", "SELECT 1 FROM plans WHERE code = $1", 1, &plan, &res))
		return 1;
	n = PQntuples(res);
	PQclear(res);
	if (n != 1)
		return fail("unknown plan (see SELECT code FROM plans)", plan);
	if (run(pg, "admin_org_create",
		"INSERT INTO organizations (name, plan, contact_email) VALUES ($1, $2, $3) "
		"RETURNING id::text, " TS("created_at"),
		3, p, &res))
		return 1;
	if (a->json) {
		cJSON *o = cJSON_CreateObject();

		cJSON_AddStringToObject(o, "id", PQgetvalue(res, 0, 0));
		cJSON_AddStringToObject(o, "name", a->name);
		cJSON_AddStringToObject(o, "plan", plan);
		if (a->email)
			cJSON_AddStringToObject(o, "email", a->email);
		else
			cJSON_AddNullToObject(o, "email");
		cJSON_AddStringToObject(o, "created_at", PQgetvalue(res, 0, 1));
		print_json(o);
	} else {
		printf("%s\n", PQgetvalue(res, 0, 0));
	}
	PQclear(res);
	return 0;
}

static int key_create(dl_pg *pg, const admin_args *a)
{
	const char *secret = getenv("DRIFTLOCK_API_KEY_SECRET");
	char key[DL_APIKEY_LEN + 1], prefix[DL_APIKEY_DISPLAY_LEN + 1], bytea[67],
		err[256];
	uint8_t hash[DL_APIKEY_HASH_LEN];
	dl_apikey_hasher *h = NULL;
	const char *p[4];
	PGresult *res = NULL;
	int rc;

	if (!a->org)
		return usage_error("key create needs --org ORG_ID%s", NULL);
	if (a->name && strlen(a->name) > 200)
		return usage_error("--name must be at most 200 characters%s", NULL);
	if (!secret || strlen(secret) < DL_APIKEY_SECRET_MIN)
		return fail("set DRIFTLOCK_API_KEY_SECRET (at least 32 bytes, the same as ingest's)",
			    NULL);
	rc = check_org(pg, a->org);
	if (rc)
		return rc;
	if (dl_apikey_hasher_new(secret, strlen(secret), err, sizeof(err), &h) < 0)
		return fail("cannot hash keys", err);
	rc = 1;
	if (dl_apikey_new(key, sizeof(key)) < 0 ||
	    dl_apikey_hash(h, key, strlen(key), hash) < 0 ||
	    dl_apikey_display_prefix(key, prefix, sizeof(prefix)) < 0) {
		fail("cannot make a key (random generator or libcrypto failed)", NULL);
		goto out;
	}
	dl_apikey_hash_bytea(hash, bytea);
	p[0] = a->org;
	p[1] = prefix;
	p[2] = bytea;
	p[3] = a->name ? a->name : "";
	if (run(pg, "admin_key_create",
		"INSERT INTO api_keys (org_id, prefix, key_hash, name) "
		"VALUES ($1::uuid, $2, $3::bytea, $4) RETURNING id::text, " TS("created_at"),
		4, p, &res))
		goto out;
	if (a->json) {
		cJSON *o = cJSON_CreateObject();

		cJSON_AddStringToObject(o, "id", PQgetvalue(res, 0, 0));
		cJSON_AddStringToObject(o, "org_id", a->org);
		cJSON_AddStringToObject(o, "prefix", prefix);
		cJSON_AddStringToObject(o, "name", p[3]);
		cJSON_AddStringToObject(o, "created_at", PQgetvalue(res, 0, 1));
		cJSON_AddStringToObject(o, "key", key);
		print_json(o);
	} else {
		printf("%s\n", key);
		fprintf(stderr,
			"driftlock-admin: created key %s (prefix %s) for organization %s; it is "
			"shown only this once: store it now\n",
			PQgetvalue(res, 0, 0), prefix, a->org);
	}
	PQclear(res);
	rc = 0;
out:
	OPENSSL_cleanse(key, sizeof(key));
	dl_apikey_hasher_free(h);
	return rc;
}

static int key_list(dl_pg *pg, const admin_args *a)
{
	const char *p[1] = { a->org };
	PGresult *res = NULL;
	int rc, i;

	if (!a->org)
		return usage_error("key list needs --org ORG_ID%s", NULL);
	rc = check_org(pg, a->org);
	if (rc)
		return rc;
	if (run(pg, "admin_key_list",
		"SELECT id::text, prefix, name, " TS("created_at") ", " TS("last_used_at") ", "
		TS("revoked_at") " FROM api_keys WHERE org_id = $1::uuid ORDER BY created_at, id",
		1, p, &res))
		return 1;
	if (a->json) {
		cJSON *arr = cJSON_CreateArray();

		for (i = 0; i < PQntuples(res); i++) {
			cJSON *o = cJSON_CreateObject();

			cJSON_AddStringToObject(o, "id", PQgetvalue(res, i, 0));
			cJSON_AddStringToObject(o, "prefix", PQgetvalue(res, i, 1));
			cJSON_AddStringToObject(o, "name", PQgetvalue(res, i, 2));
			cJSON_AddStringToObject(o, "created_at", PQgetvalue(res, i, 3));
			add_text_or_null(o, "last_used_at", res, i, 4);
			add_text_or_null(o, "revoked_at", res, i, 5);
			cJSON_AddItemToArray(arr, o);
		}
		print_json(arr);
	} else {
		printf("%-36s  %-12s  %-24s  %-24s  %-24s  %s\n", "ID", "PREFIX", "CREATED",
		       "LAST USED", "REVOKED", "NAME");
		for (i = 0; i < PQntuples(res); i++)
			printf("%-36s  %-12s  %-24s  %-24s  %-24s  %s\n", PQgetvalue(res, i, 0),
			       PQgetvalue(res, i, 1), PQgetvalue(res, i, 3),
			       PQgetisnull(res, i, 4) ? "never" : PQgetvalue(res, i, 4),
			       PQgetisnull(res, i, 5) ? "-" : PQgetvalue(res, i, 5),
			       PQgetvalue(res, i, 2));
	}
	PQclear(res);
	return 0;
}

static int key_revoke(dl_pg *pg, const admin_args *a)
{
	PGresult *res = NULL;
	const char *p[1];
	char id[DL_ID_UUID_LEN + 1];
	int n;

	if (!!a->id == !!a->prefix)
		return usage_error("key revoke needs exactly one of --id KEY_ID or --prefix PREFIX%s",
				   NULL);
	if (a->id) {
		if (!dl_id_is_uuid(a->id))
			return usage_error("--id must be a key id (a UUID), not '%s'", a->id);
		snprintf(id, sizeof(id), "%s", a->id);
	} else {
		p[0] = a->prefix;
		if (run(pg, "admin_key_by_prefix",
			"SELECT id::text FROM api_keys WHERE prefix = $1 AND revoked_at IS NULL", 1,
			p, &res))
			return 1;
		n = PQntuples(res);
		if (n != 1) {
			PQclear(res);
			return fail(n == 0 ? "no active key has this prefix"
					   : "several active keys have this prefix: use --id",
				    a->prefix);
		}
		snprintf(id, sizeof(id), "%s", PQgetvalue(res, 0, 0));
		PQclear(res);
	}
	p[0] = id;
	if (run(pg, "admin_key_revoke",
		"UPDATE api_keys SET revoked_at = now() WHERE id = $1::uuid AND revoked_at IS NULL "
		"RETURNING id::text, prefix, org_id::text, " TS("revoked_at"),
		1, p, &res))
		return 1;
	if (PQntuples(res) != 1) {
		PQclear(res);
		return fail("no active key has this id (unknown or already revoked)", id);
	}
	if (a->json) {
		cJSON *o = cJSON_CreateObject();

		cJSON_AddStringToObject(o, "id", PQgetvalue(res, 0, 0));
		cJSON_AddStringToObject(o, "prefix", PQgetvalue(res, 0, 1));
		cJSON_AddStringToObject(o, "org_id", PQgetvalue(res, 0, 2));
		cJSON_AddStringToObject(o, "revoked_at", PQgetvalue(res, 0, 3));
		print_json(o);
	} else {
		printf("revoked %s (prefix %s) of organization %s\n", PQgetvalue(res, 0, 0),
		       PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2));
	}
	PQclear(res);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },   { "help", no_argument, NULL, 'h' },
		{ "name", required_argument, NULL, 'n' }, { "plan", required_argument, NULL, 'p' },
		{ "email", required_argument, NULL, 'e' }, { "org", required_argument, NULL, 'o' },
		{ "id", required_argument, NULL, 'i' },   { "prefix", required_argument, NULL, 'x' },
		{ NULL, 0, NULL, 0 },
	};
	const char *words[2] = { NULL, NULL };
	admin_args a = { 0 };
	int (*fn)(dl_pg *, const admin_args *) = NULL;
	size_t nwords = 0;
	dl_pg *pg = NULL;
	int c, rc;

	/* Options may come before, between or after the two command words. */
	while (optind < argc) {
		c = getopt_long(argc, argv, "+h", opts, NULL);
		if (c == -1) {
			if (nwords == 2)
				return usage_error("unexpected argument '%s'", argv[optind]);
			words[nwords++] = argv[optind++];
			continue;
		}
		switch (c) {
		case 'j': a.json = true; break;
		case 'h': fputs(USAGE, stdout); return 0;
		case 'n': a.name = optarg; break;
		case 'p': a.plan = optarg; break;
		case 'e': a.email = optarg; break;
		case 'o': a.org = optarg; break;
		case 'i': a.id = optarg; break;
		case 'x': a.prefix = optarg; break;
		default: return usage_error("bad option%s", NULL);
		}
	}
	if (nwords < 2) {
		fputs(USAGE, stderr);
		return EXIT_USAGE;
	}
	if (strcmp(words[0], "org") == 0 && strcmp(words[1], "create") == 0)
		fn = org_create;
	else if (strcmp(words[0], "key") == 0 && strcmp(words[1], "create") == 0)
		fn = key_create;
	else if (strcmp(words[0], "key") == 0 && strcmp(words[1], "list") == 0)
		fn = key_list;
	else if (strcmp(words[0], "key") == 0 && strcmp(words[1], "revoke") == 0)
		fn = key_revoke;
	if (!fn) {
		fprintf(stderr, "driftlock-admin: unknown command '%s %s'\n", words[0], words[1]);
		fputs(USAGE, stderr);
		return EXIT_USAGE;
	}
	/* Usage errors first, so they are not hidden by a connection error. */
	if (fn == org_create && (!a.name || !*a.name))
		return usage_error("org create needs --name NAME%s", NULL);
	if ((fn == key_create || fn == key_list) && (!a.org || !dl_id_is_uuid(a.org)))
		return usage_error("key %s needs --org ORG_ID (a UUID)", words[1]);
	if (fn == key_revoke && !!a.id == !!a.prefix)
		return usage_error("key revoke needs exactly one of --id KEY_ID or --prefix PREFIX%s",
				   NULL);
	rc = connect_db(&pg);
	if (rc)
		return rc;
	rc = fn(pg, &a);
	dl_pg_free(pg);
	return rc;
}
