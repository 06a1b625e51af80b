/* SPDX-License-Identifier: Apache-2.0 */
/* dl_itest: helpers for the integration suites (stack addresses, services, HTTP, SQL). */
#include "tests/support/dl_itest.h"

#include <check.h>
#include <ctype.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <libpq-fe.h>

#include "common/dl_kafka.h"
#include "common/dl_time.h"

const char *dl_itest_env(const char *name)
{
	const char *v = getenv(name);

	ck_assert_msg(v && *v, "%s is not set: run the integration suites through infra/test.sh",
		      name);
	return v;
}

int dl_itest_free_port(void)
{
	struct sockaddr_in a = { 0 };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	ck_assert_int_ge(fd, 0);
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	port = ntohs(a.sin_port);
	close(fd);
	return port;
}

void dl_itest_start(const char *svc, const char *const *extra, dl_itest_proc *ret)
{
	static char bin[512], dsn_var[64], env_port[64], env_pub[64], env_dsn[1024],
		env_kafka[256], env_redis[512], env_secret[512];
	const char *build = dl_itest_env("DRIFTLOCK_BUILD_ROOT"), *secret;
	char *envp[64];
	size_t n = 0, i;
	pid_t pid;

	snprintf(bin, sizeof(bin), "%s/services/%s/driftlock-%s", build, svc, svc);
	snprintf(dsn_var, sizeof(dsn_var), "DRIFTLOCK_PG_DSN_%s", svc);
	for (i = strlen("DRIFTLOCK_PG_DSN_"); dsn_var[i]; i++)
		dsn_var[i] = (char)toupper((unsigned char)dsn_var[i]);
	ret->admin_port = dl_itest_free_port();
	ret->public_port = dl_itest_free_port();
	snprintf(ret->log_path, sizeof(ret->log_path), "/tmp/dl-itest-%s-%d-%d.log", svc,
		 (int)getpid(), ret->admin_port);
	snprintf(env_port, sizeof(env_port), "DRIFTLOCK_ADMIN_PORT=%d", ret->admin_port);
	snprintf(env_pub, sizeof(env_pub), "DRIFTLOCK_INGEST_PORT=%d", ret->public_port);
	snprintf(env_dsn, sizeof(env_dsn), "DRIFTLOCK_PG_DSN=%s", dl_itest_env(dsn_var));
	snprintf(env_kafka, sizeof(env_kafka), "DRIFTLOCK_KAFKA_BROKERS=%s",
		 dl_itest_env("DRIFTLOCK_KAFKA_BROKERS"));
	snprintf(env_redis, sizeof(env_redis), "DRIFTLOCK_REDIS_URL=%s",
		 dl_itest_env("DRIFTLOCK_REDIS_URL"));
	/* Overrides go first: getenv() returns the first of duplicate names. */
	for (i = 0; extra && extra[i] && n < 48; i++)
		envp[n++] = (char *)extra[i];
	envp[n++] = env_port;
	envp[n++] = env_pub;
	envp[n++] = env_dsn;
	envp[n++] = env_kafka;
	envp[n++] = env_redis;
	secret = getenv("DRIFTLOCK_API_KEY_SECRET");
	if (secret) {
		snprintf(env_secret, sizeof(env_secret), "DRIFTLOCK_API_KEY_SECRET=%s", secret);
		envp[n++] = env_secret;
	}
	envp[n++] = (char *)"DRIFTLOCK_CHECK_INTERVAL=200ms";
	envp[n] = NULL;

	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int fd = open(ret->log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		char *argv[] = { bin, NULL };

		dup2(fd, STDERR_FILENO);
		dup2(fd, STDOUT_FILENO);
		execve(bin, argv, envp);
		_exit(127);
	}
	ret->pid = pid;
}

typedef struct itest_buf {
	char *buf;
	size_t cap, len;
} itest_buf;

static size_t itest_collect(char *data, size_t size, size_t nmemb, void *opaque)
{
	itest_buf *b = opaque;
	size_t add = size * nmemb;

	if (b->buf && b->cap) {
		size_t room = b->cap - 1 - b->len;
		size_t take = add < room ? add : room;

		memcpy(b->buf + b->len, data, take);
		b->len += take;
		b->buf[b->len] = '\0';
	}
	return size * nmemb;
}

long dl_itest_http(int port, const char *method, const char *path, const char *const *headers,
		   const void *body, size_t len, char *resp, size_t cap, char *hdrs, size_t hcap)
{
	itest_buf rb = { resp, cap, 0 }, hb = { hdrs, hcap, 0 };
	struct curl_slist *hl = NULL;
	char url[2048];
	long status = 0;
	CURL *c = curl_easy_init();
	size_t i;

	ck_assert_ptr_nonnull(c);
	if (resp && cap)
		resp[0] = '\0';
	if (hdrs && hcap)
		hdrs[0] = '\0';
	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	if (!strcmp(method, "HEAD"))
		curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
	for (i = 0; headers && headers[i]; i++)
		hl = curl_slist_append(hl, headers[i]);
	/* curl would otherwise send Expect: 100-continue for large bodies. */
	hl = curl_slist_append(hl, "Expect:");
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
	if (body) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	}
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, itest_collect);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &rb);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, itest_collect);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, &hb);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 15000L);
	if (curl_easy_perform(c) == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_slist_free_all(hl);
	curl_easy_cleanup(c);
	return status;
}

bool dl_itest_header(const char *hdrs, const char *name, char *out, size_t outlen)
{
	size_t nl = strlen(name);
	const char *p = hdrs;

	while (p && *p) {
		const char *eol = strchr(p, '\n');
		size_t ll = eol ? (size_t)(eol - p) : strlen(p);

		if (ll > nl && !strncasecmp(p, name, nl) && p[nl] == ':') {
			const char *v = p + nl + 1;
			size_t vl;

			while (*v == ' ')
				v++;
			vl = (size_t)(p + ll - v);
			while (vl && (v[vl - 1] == '\r' || v[vl - 1] == ' '))
				vl--;
			snprintf(out, outlen, "%.*s", (int)vl, v);
			return true;
		}
		p = eol ? eol + 1 : NULL;
	}
	return false;
}

bool dl_itest_wait_ready(const dl_itest_proc *p, int timeout_ms)
{
	for (int waited = 0; waited < timeout_ms; waited += 100) {
		if (dl_itest_http(p->admin_port, "GET", "/readyz", NULL, NULL, 0, NULL, 0, NULL, 0) ==
		    200)
			return true;
		usleep(100 * 1000);
	}
	return false;
}

int dl_itest_stop(dl_itest_proc *p, int timeout_ms)
{
	int status = -1;

	kill(p->pid, SIGTERM);
	for (int waited = 0; waited < timeout_ms; waited += 50) {
		if (waitpid(p->pid, &status, WNOHANG) == p->pid)
			return status;
		usleep(50 * 1000);
	}
	kill(p->pid, SIGKILL);
	waitpid(p->pid, &status, 0);
	return -2;
}

void dl_itest_stop_clean(dl_itest_proc *p, int timeout_ms, const char *what)
{
	int status = dl_itest_stop(p, timeout_ms);

	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		      "%s did not drain cleanly (status %d), see %s", what, status, p->log_path);
}

int dl_itest_sql(const char *sql, const char *const *params, char *out, size_t outlen)
{
	PGconn *c = PQconnectdb(dl_itest_env("DRIFTLOCK_PG_DSN_ADMIN"));
	PGresult *r;
	int n = 0, rows;

	ck_assert_msg(PQstatus(c) == CONNECTION_OK, "admin connection: %s", PQerrorMessage(c));
	while (params && params[n])
		n++;
	r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
	ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK,
		      "%s: %s", sql, PQerrorMessage(c));
	rows = PQresultStatus(r) == PGRES_TUPLES_OK ? PQntuples(r) : atoi(PQcmdTuples(r));
	if (out && outlen) {
		out[0] = '\0';
		if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 && PQnfields(r) > 0)
			snprintf(out, outlen, "%s", PQgetvalue(r, 0, 0));
	}
	PQclear(r);
	PQfinish(c);
	return rows;
}

size_t dl_itest_topic_read(const char *topic, const char *key_prefix, size_t want,
			   int timeout_ms, dl_itest_msg **ret)
{
	const char *topics[] = { topic, NULL };
	const char *conf[] = { "auto.offset.reset", "earliest", NULL };
	size_t plen = strlen(key_prefix), n = 0, cap = 0;
	dl_itest_msg *out = NULL;
	dl_kafka_consumer *c = NULL;
	char group[96], errbuf[256];
	int64_t deadline = dl_time_mono_ns() + (int64_t)timeout_ms * 1000000;

	snprintf(group, sizeof(group), "dl-itest-%d-%lld", (int)getpid(),
		 (long long)dl_time_mono_ns());
	ck_assert_int_eq(dl_kafka_consumer_new(dl_itest_env("DRIFTLOCK_KAFKA_BROKERS"), group,
					       topics, conf, NULL, errbuf, sizeof(errbuf), &c),
			 0);
	while (n < want && dl_time_mono_ns() < deadline) {
		rd_kafka_message_t *m = NULL;

		if (dl_kafka_consumer_poll(c, 200, &m, errbuf, sizeof(errbuf)) < 0 || !m)
			continue;
		if (m->key_len >= plen && !memcmp(m->key, key_prefix, plen)) {
			if (n == cap) {
				cap = cap ? cap * 2 : 64;
				out = realloc(out, cap * sizeof(*out));
				ck_assert_ptr_nonnull(out);
			}
			out[n].key = strndup(m->key, m->key_len);
			out[n].keylen = m->key_len;
			out[n].value = strndup(m->payload ? m->payload : "", m->len);
			out[n].len = m->len;
			out[n].partition = m->partition;
			out[n].offset = m->offset;
			n++;
		}
		rd_kafka_message_destroy(m);
	}
	dl_kafka_consumer_free(c);
	*ret = out;
	return n;
}

void dl_itest_msgs_free(dl_itest_msg *m, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(m[i].key);
		free(m[i].value);
	}
	free(m);
}

int dl_itest_run(const char *cmd, char *out, size_t outlen)
{
	FILE *f = popen(cmd, "r");
	size_t n = 0;
	int st;

	if (!f)
		return -1;
	if (out && outlen) {
		n = fread(out, 1, outlen - 1, f);
		out[n] = '\0';
	}
	while (fgetc(f) != EOF) {
	}
	st = pclose(f);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The string member name of the JSON object text, copied into out; fails the test if absent. */
static void json_member(const char *text, const char *name, char *out, size_t outlen)
{
	cJSON *j = cJSON_Parse(text), *m = cJSON_GetObjectItem(j, name);

	ck_assert_msg(cJSON_IsString(m), "no \"%s\" in %s", name, text);
	snprintf(out, outlen, "%s", m->valuestring);
	cJSON_Delete(j);
}

void dl_itest_org_with_key(const char *name, const char *plan, char org_id[37], char *key,
			   size_t keylen)
{
	char cmd[1024], out[4096];
	const char *admin;
	char bin[512];

	snprintf(bin, sizeof(bin), "%s/services/ingest/driftlock-admin",
		 dl_itest_env("DRIFTLOCK_BUILD_ROOT"));
	admin = bin;
	dl_itest_env("DRIFTLOCK_API_KEY_SECRET");
	dl_itest_env("DRIFTLOCK_PG_DSN_ADMIN");
	snprintf(cmd, sizeof(cmd), "'%s' --json org create --name '%s' --plan '%s'", admin, name,
		 plan ? plan : "developer");
	ck_assert_msg(dl_itest_run(cmd, out, sizeof(out)) == 0, "%s failed: %s", cmd, out);
	json_member(out, "id", org_id, 37);
	snprintf(cmd, sizeof(cmd), "'%s' --json key create --org '%s' --name itest", admin, org_id);
	ck_assert_msg(dl_itest_run(cmd, out, sizeof(out)) == 0, "%s failed: %s", cmd, out);
	json_member(out, "key", key, keylen);
}
