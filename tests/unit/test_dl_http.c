/* SPDX-License-Identifier: Apache-2.0 */
/* Check suite for dl_http: a server in-process on an ephemeral port, driven by libcurl from a
 * client thread while the test thread runs the event loop. */
#include <check.h>
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cjson/cJSON.h>
#include <event2/event.h>

#include "common/dl_http.h"
#include "common/dl_id.h"

/* ---- fixture: loop on the test thread, client on its own thread ---- */

#define MAX_OBS 32

struct obs_rec {
	char route[64];
	char method[16];
	int status;
	char id[140];
};

struct fx;
typedef void (*client_fn)(struct fx *fx);

struct fx {
	struct event_base *base;
	dl_http_server *s;
	int port;
	pthread_t thread;
	atomic_int done;
	client_fn client;
	struct event *poll;
	/* async handler state (loop thread only) */
	dl_http_req *held;
	struct event *late;
	int late_rc;
	size_t inflight_seen;
	bool stop_in_handler;
	/* stream handler state (loop thread only) */
	dl_http_stream *st;
	struct event *st_timer;
	int st_mode;
	int st_ticks;
	int st_gone, st_drain;
	size_t st_queued;
	size_t st_streams_seen;
	/* observer records (loop thread writes, read after join) */
	struct obs_rec obs[MAX_OBS];
	int nobs;
};

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
	struct fx *fx = arg;

	(void)fd;
	(void)what;
	if (atomic_load(&fx->done))
		event_base_loopbreak(fx->base);
}

static void *client_main(void *arg)
{
	struct fx *fx = arg;

	fx->client(fx);
	atomic_store(&fx->done, 1);
	return NULL;
}

static void observer(const char *route, const char *method, int status, double dur,
		     const char *id, void *opaque)
{
	struct fx *fx = opaque;
	struct obs_rec *r;

	ck_assert(dur >= 0.0);
	if (fx->nobs >= MAX_OBS)
		return;
	r = &fx->obs[fx->nobs++];
	snprintf(r->route, sizeof(r->route), "%s", route);
	snprintf(r->method, sizeof(r->method), "%s", method);
	r->status = status;
	snprintf(r->id, sizeof(r->id), "%s", id);
}

/* Handlers */

static void h_echo(dl_http_req *req, void *opaque)
{
	cJSON *o = cJSON_CreateObject();
	const char *v;
	size_t blen = 0;
	int port = -1;

	(void)opaque;
	cJSON_AddStringToObject(o, "route", dl_http_req_route(req));
	cJSON_AddStringToObject(o, "method", dl_http_req_method(req));
	cJSON_AddStringToObject(o, "path", dl_http_req_path(req));
	if ((v = dl_http_req_param(req, "id")) != NULL)
		cJSON_AddStringToObject(o, "id", v);
	if ((v = dl_http_req_query(req, "limit")) != NULL)
		cJSON_AddStringToObject(o, "limit", v);
	if ((v = dl_http_req_header(req, "x-test")) != NULL)
		cJSON_AddStringToObject(o, "x_test", v);
	dl_http_req_body(req, &blen);
	cJSON_AddNumberToObject(o, "body_len", (double)blen);
	cJSON_AddStringToObject(o, "peer", dl_http_req_peer(req, &port));
	cJSON_AddNumberToObject(o, "peer_port", port);
	ck_assert_int_eq(dl_http_req_set_header(req, "X-Extra", "yes"), 0);
	ck_assert_int_eq(dl_http_req_set_header(req, "Bad Name", "x"), -EINVAL);
	ck_assert_int_eq(dl_http_req_set_header(req, "X-Inject", "a\r\nSet-Cookie: x"), -EINVAL);
	ck_assert_int_eq(dl_http_reply_json(req, 200, o), 0);
	cJSON_Delete(o);
}

static void h_json(dl_http_req *req, void *opaque)
{
	char err[256] = "";
	cJSON *doc = NULL;
	int rc;

	(void)opaque;
	rc = dl_http_req_json(req, 4, &doc, err, sizeof(err));
	if (rc == -EMEDIUMTYPE) {
		dl_http_reply_error(req, 415, "unsupported_media_type", "%s", err);
	} else if (rc == -E2BIG) {
		dl_http_reply_error(req, 400, "too_deep", "%s", err);
	} else if (rc == -EINVAL) {
		dl_http_reply_error(req, 400, "invalid_json", "%s", err);
	} else {
		ck_assert_int_eq(rc, 0);
		ck_assert_int_eq(dl_http_reply_json(req, 200, doc), 0);
		cJSON_Delete(doc);
	}
}

static void h_error(dl_http_req *req, void *opaque)
{
	cJSON *details = cJSON_CreateArray();

	(void)opaque;
	if (dl_http_req_query(req, "details") != NULL) {
		cJSON_AddItemToArray(details, cJSON_CreateString("field \"a\" is missing"));
		dl_http_reply_error_details(req, 422, "invalid_event", details, "bad %s %d",
					    "event", 7);
	} else {
		dl_http_reply_error(req, 422, "invalid_event", "bad %s %d", "event", 7);
	}
	cJSON_Delete(details);
}

static void h_stats(dl_http_req *req, void *opaque)
{
	struct fx *fx = opaque;
	char buf[128];
	int n = snprintf(buf, sizeof(buf), "{\"connections\":%zu,\"inflight\":%zu}",
			 dl_http_server_connections(fx->s), dl_http_server_inflight(fx->s));

	dl_http_reply_json_text(req, 200, buf, (size_t)n);
}

static void h_metrics(dl_http_req *req, void *opaque)
{
	static const char text[] = "# TYPE up gauge\nup 1\n";

	(void)opaque;
	dl_http_reply_text(req, 200, "text/plain; version=0.0.4", text, sizeof(text) - 1);
}

static void on_late(evutil_socket_t fd, short what, void *arg)
{
	struct fx *fx = arg;
	cJSON *o = cJSON_CreateObject();

	(void)fd;
	(void)what;
	fx->inflight_seen = dl_http_server_inflight(fx->s);
	cJSON_AddBoolToObject(o, "late", 1);
	cJSON_AddBoolToObject(o, "closed", dl_http_req_closed(fx->held));
	fx->late_rc = dl_http_reply_json(fx->held, 200, o);
	fx->held = NULL;
	cJSON_Delete(o);
}

static void h_async(dl_http_req *req, void *opaque)
{
	struct fx *fx = opaque;
	const char *ms = dl_http_req_query(req, "ms");
	long delay = ms != NULL ? strtol(ms, NULL, 10) : 200;
	struct timeval tv = { delay / 1000, (delay % 1000) * 1000 };

	ck_assert_ptr_null(fx->held);
	fx->held = req;
	if (fx->stop_in_handler)
		dl_http_server_stop_accepting(fx->s);
	evtimer_add(fx->late, &tv);
}

enum { ST_TICKS = 1, ST_IDLE, ST_HOLD, ST_FLOOD };

static void on_stream_event(dl_http_stream *st, int event, void *opaque)
{
	struct fx *fx = opaque;

	ck_assert_ptr_eq(st, fx->st);
	if (event == DL_HTTP_STREAM_CLIENT_GONE) {
		fx->st_gone++;
		ck_assert(dl_http_stream_closed(st));
		ck_assert_int_eq(dl_http_stream_write(st, "x", 1), -EPIPE);
		ck_assert_uint_eq(dl_http_stream_queued(st), 0);
	} else {
		ck_assert_int_eq(event, DL_HTTP_STREAM_DRAINING);
		fx->st_drain++;
		ck_assert_int_eq(dl_http_stream_write(st, "data: bye\n\n", 11), 0);
	}
	evtimer_del(fx->st_timer);
	dl_http_stream_end(st); /* allowed from inside the callback */
	fx->st = NULL;
}

static void on_stream_timer(evutil_socket_t fd, short what, void *arg)
{
	struct fx *fx = arg;
	char line[32];
	struct timeval tv = { 0, 50 * 1000 };

	(void)fd;
	(void)what;
	switch (fx->st_mode) {
	case ST_TICKS:
	case ST_IDLE:
		snprintf(line, sizeof(line), "data: %d\n\n", ++fx->st_ticks);
		ck_assert_int_eq(dl_http_stream_write(fx->st, line, strlen(line)), 0);
		if (fx->st_ticks < 3) {
			evtimer_add(fx->st_timer, &tv);
			return;
		}
		break;
	case ST_FLOOD:
		/* The client reads nothing: what was written is still queued. */
		fx->st_queued = dl_http_stream_queued(fx->st);
		break;
	default:
		return;
	}
	fx->st_streams_seen = dl_http_server_streams(fx->s);
	dl_http_stream_end(fx->st);
	fx->st = NULL;
}

static void h_stream(dl_http_req *req, void *opaque)
{
	struct fx *fx = opaque;
	const char *mode = dl_http_req_query(req, "mode");
	struct timeval tv = { 0, 50 * 1000 };

	ck_assert_ptr_null(fx->st);
	fx->st_mode = mode != NULL ? atoi(mode) : ST_TICKS;
	ck_assert_int_eq(dl_http_req_set_header(req, "X-Extra", "yes"), 0);
	ck_assert_int_eq(dl_http_stream_start(req, 200, NULL, on_stream_event, fx, &fx->st), 0);
	ck_assert_int_eq(dl_http_stream_write(fx->st, ": hello\n\n", 9), 0);
	if (fx->st_mode == ST_IDLE)
		tv.tv_sec = 2; /* longer than the 1 s request timeout */
	if (fx->st_mode == ST_FLOOD) {
		static char mib[1 << 20];

		memset(mib, 'x', sizeof(mib));
		for (int i = 0; i < 32; i++)
			ck_assert_int_eq(dl_http_stream_write(fx->st, mib, sizeof(mib)), 0);
		tv.tv_usec = 300 * 1000;
	}
	if (fx->st_mode != ST_HOLD)
		evtimer_add(fx->st_timer, &tv);
}

static void fx_init(struct fx *fx, const dl_http_limits *lim)
{
	char err[256] = "";
	struct timeval tick = { 0, 5000 };

	memset(fx, 0, sizeof(*fx));
	fx->base = event_base_new();
	ck_assert_ptr_nonnull(fx->base);
	ck_assert_int_eq(dl_http_server_new(fx->base, lim, err, sizeof(err), &fx->s), 0);
	ck_assert_int_eq(dl_http_server_listen(fx->s, "127.0.0.1", 0, &fx->port), 0);
	ck_assert_int_gt(fx->port, 0);
	ck_assert_int_eq(dl_http_route(fx->s, "GET", "/v1/items/{id}", h_echo, fx, "items.get"),
			 0);
	ck_assert_int_eq(dl_http_route(fx->s, "POST", "/v1/items/{id}", h_echo, fx, "items.post"),
			 0);
	ck_assert_int_eq(dl_http_route(fx->s, "POST", "/v1/echo", h_echo, fx, "echo"), 0);
	ck_assert_int_eq(dl_http_route(fx->s, "POST", "/v1/json", h_json, fx, "json"), 0);
	ck_assert_int_eq(dl_http_route(fx->s, "GET", "/v1/error", h_error, fx, "error"), 0);
	ck_assert_int_eq(dl_http_route(fx->s, "GET", "/v1/async", h_async, fx, "async"), 0);
	ck_assert_int_eq(dl_http_route(fx->s, "GET", "/stats", h_stats, fx, "stats"), 0);
	ck_assert_int_eq(dl_http_route(fx->s, "GET", "/metrics", h_metrics, fx, NULL), 0);
	ck_assert_int_eq(dl_http_route(fx->s, "GET", "/v1/stream", h_stream, fx, "stream"), 0);
	fx->st_timer = evtimer_new(fx->base, on_stream_timer, fx);
	dl_http_server_set_observer(fx->s, observer, fx);
	fx->late = evtimer_new(fx->base, on_late, fx);
	fx->poll = event_new(fx->base, -1, EV_PERSIST, on_poll, fx);
	event_add(fx->poll, &tick);
}

static void fx_run(struct fx *fx, client_fn fn)
{
	fx->client = fn;
	ck_assert_int_eq(pthread_create(&fx->thread, NULL, client_main, fx), 0);
	event_base_dispatch(fx->base);
	pthread_join(fx->thread, NULL);
}

static void fx_fini(struct fx *fx)
{
	dl_http_server_free(fx->s);
	event_free(fx->late);
	event_free(fx->st_timer);
	event_free(fx->poll);
	event_base_free(fx->base);
}

/* ---- client side (client thread) ---- */

struct resp {
	CURLcode rc;
	long status;
	char hdrs[16384];
	size_t hlen;
	char *body;
	size_t blen;
};

static size_t on_body(char *p, size_t sz, size_t n, void *arg)
{
	struct resp *r = arg;
	char *grown = realloc(r->body, r->blen + sz * n + 1);

	ck_assert_ptr_nonnull(grown);
	r->body = grown;
	memcpy(r->body + r->blen, p, sz * n);
	r->blen += sz * n;
	r->body[r->blen] = '\0';
	return sz * n;
}

static size_t on_header(char *p, size_t sz, size_t n, void *arg)
{
	struct resp *r = arg;
	size_t len = sz * n;

	if (r->hlen + len < sizeof(r->hdrs)) {
		memcpy(r->hdrs + r->hlen, p, len);
		r->hlen += len;
		r->hdrs[r->hlen] = '\0';
	}
	return len;
}

struct upload {
	const char *data;
	size_t len, off;
};

static size_t on_read(char *buf, size_t sz, size_t n, void *arg)
{
	struct upload *u = arg;
	size_t want = sz * n, left = u->len - u->off;

	if (want > left)
		want = left;
	memcpy(buf, u->data + u->off, want);
	u->off += want;
	return want;
}

enum { BODY_FIXED = 0, BODY_CHUNKED = 1 };

static CURL *reuse_handle; /* client thread only: keep-alive tests share one connection */

static void http_do_ex(struct fx *fx, const char *method, const char *path,
		       const char *const *headers, const char *body, size_t blen, int mode,
		       long timeout_ms, struct resp *r)
{
	CURL *c = reuse_handle != NULL ? reuse_handle : curl_easy_init();
	struct curl_slist *hl = NULL;
	struct upload up = { body, blen, 0 };
	char url[512];

	memset(r, 0, sizeof(*r));
	ck_assert_ptr_nonnull(c);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", fx->port, path);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms > 0 ? timeout_ms : 10000L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	for (size_t i = 0; headers != NULL && headers[i] != NULL; i++)
		hl = curl_slist_append(hl, headers[i]);
	if (strcmp(method, "HEAD") == 0) {
		curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
	} else if (body != NULL && mode == BODY_CHUNKED) {
		hl = curl_slist_append(hl, "Transfer-Encoding: chunked");
		curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(c, CURLOPT_READDATA, &up);
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	} else if (body != NULL) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	} else if (strcmp(method, "GET") != 0) {
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	}
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
	r->rc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
	curl_slist_free_all(hl);
	if (c != reuse_handle)
		curl_easy_cleanup(c);
	else
		curl_easy_reset(c);
}

static void http_do(struct fx *fx, const char *method, const char *path,
		    const char *const *headers, const char *body, size_t blen, struct resp *r)
{
	http_do_ex(fx, method, path, headers, body, blen, BODY_FIXED, 0, r);
}

/* The value of header name in the last response head, or NULL; copied into out. */
static const char *hdr(const struct resp *r, const char *name, char *out, size_t outlen)
{
	const char *p = r->hdrs;
	size_t n = strlen(name);

	while ((p = strstr(p, "\r\n")) != NULL) {
		p += 2;
		if (strncasecmp(p, name, n) == 0 && p[n] == ':') {
			const char *v = p + n + 1, *e;

			while (*v == ' ')
				v++;
			e = strstr(v, "\r\n");
			snprintf(out, outlen, "%.*s", (int)(e ? e - v : (long)strlen(v)), v);
			return out;
		}
	}
	return NULL;
}

static void resp_free(struct resp *r)
{
	free(r->body);
	r->body = NULL;
}

/* Asserts the JSON error shape and returns the parsed body (caller deletes). */
static cJSON *assert_error(const struct resp *r, long status, const char *code)
{
	char buf[256];
	cJSON *doc, *err, *c, *m, *id;

	ck_assert_int_eq(r->rc, CURLE_OK);
	ck_assert_int_eq(r->status, status);
	ck_assert_ptr_nonnull(hdr(r, "Content-Type", buf, sizeof(buf)));
	ck_assert_str_eq(buf, "application/json");
	doc = cJSON_Parse(r->body);
	ck_assert_msg(doc != NULL, "body is not JSON: %s", r->body ? r->body : "(none)");
	err = cJSON_GetObjectItemCaseSensitive(doc, "error");
	ck_assert(cJSON_IsObject(err));
	c = cJSON_GetObjectItemCaseSensitive(err, "code");
	m = cJSON_GetObjectItemCaseSensitive(err, "message");
	id = cJSON_GetObjectItemCaseSensitive(err, "request_id");
	ck_assert(cJSON_IsString(c) && cJSON_IsString(m) && cJSON_IsString(id));
	ck_assert_str_eq(c->valuestring, code);
	ck_assert_int_gt(strlen(m->valuestring), 0);
	ck_assert_ptr_nonnull(hdr(r, "X-Request-Id", buf, sizeof(buf)));
	ck_assert_str_eq(id->valuestring, buf);
	return doc;
}

static void assert_security_headers(const struct resp *r)
{
	char buf[256];

	ck_assert_ptr_nonnull(hdr(r, "X-Content-Type-Options", buf, sizeof(buf)));
	ck_assert_str_eq(buf, "nosniff");
	ck_assert_ptr_nonnull(hdr(r, "X-Frame-Options", buf, sizeof(buf)));
	ck_assert_str_eq(buf, "DENY");
	ck_assert_ptr_nonnull(hdr(r, "Referrer-Policy", buf, sizeof(buf)));
	ck_assert_str_eq(buf, "no-referrer");
	ck_assert_ptr_nonnull(hdr(r, "Cache-Control", buf, sizeof(buf)));
	ck_assert_str_eq(buf, "no-store");
	ck_assert_ptr_nonnull(hdr(r, "Content-Security-Policy", buf, sizeof(buf)));
	ck_assert_str_eq(buf, "default-src 'none'; frame-ancestors 'none'");
}

static const char *jstr(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double jnum(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

	ck_assert(cJSON_IsNumber(v));
	return v->valuedouble;
}

/* ---- tests ---- */

static void c_routing(struct fx *fx)
{
	static const char *const h[] = { "X-Test: hello", NULL };
	struct resp r;
	char buf[256];
	cJSON *doc;

	http_do(fx, "GET", "/v1/items/ab%20c%2Fd?limit=5&x=1", h, NULL, 0, &r);
	ck_assert_int_eq(r.rc, CURLE_OK);
	ck_assert_int_eq(r.status, 200);
	doc = cJSON_Parse(r.body);
	ck_assert_ptr_nonnull(doc);
	ck_assert_str_eq(jstr(doc, "route"), "items.get");
	ck_assert_str_eq(jstr(doc, "method"), "GET");
	ck_assert_str_eq(jstr(doc, "path"), "/v1/items/ab%20c%2Fd");
	ck_assert_str_eq(jstr(doc, "id"), "ab c/d");
	ck_assert_str_eq(jstr(doc, "limit"), "5");
	ck_assert_str_eq(jstr(doc, "x_test"), "hello");
	ck_assert_str_eq(jstr(doc, "peer"), "127.0.0.1");
	ck_assert_int_gt((int)jnum(doc, "peer_port"), 0);
	ck_assert_ptr_nonnull(hdr(&r, "X-Extra", buf, sizeof(buf)));
	ck_assert_str_eq(buf, "yes");
	ck_assert_ptr_null(hdr(&r, "X-Inject", buf, sizeof(buf)));
	ck_assert_ptr_nonnull(hdr(&r, "Content-Type", buf, sizeof(buf)));
	ck_assert_str_eq(buf, "application/json");
	assert_security_headers(&r);
	cJSON_Delete(doc);
	resp_free(&r);

	/* Same pattern, other method: its own route. */
	http_do(fx, "POST", "/v1/items/z", NULL, "abc", 3, &r);
	ck_assert_int_eq(r.status, 200);
	doc = cJSON_Parse(r.body);
	ck_assert_str_eq(jstr(doc, "route"), "items.post");
	ck_assert_int_eq((int)jnum(doc, "body_len"), 3);
	cJSON_Delete(doc);
	resp_free(&r);

	/* Text replies (the /metrics shape), route named after its pattern. */
	http_do(fx, "GET", "/metrics", NULL, NULL, 0, &r);
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq(r.body, "# TYPE up gauge\nup 1\n");
	ck_assert_ptr_nonnull(hdr(&r, "Content-Type", buf, sizeof(buf)));
	ck_assert_str_eq(buf, "text/plain; version=0.0.4");
	resp_free(&r);

	/* A malformed query string is the client's error. */
	http_do(fx, "GET", "/v1/items/a?limit", NULL, NULL, 0, &r);
	cJSON_Delete(assert_error(&r, 400, "invalid_query"));
	resp_free(&r);
}

START_TEST(test_routing_and_params)
{
	struct fx fx;

	fx_init(&fx, NULL);
	fx_run(&fx, c_routing);
	ck_assert_int_eq(fx.nobs, 4);
	ck_assert_str_eq(fx.obs[0].route, "items.get");
	ck_assert_str_eq(fx.obs[0].method, "GET");
	ck_assert_int_eq(fx.obs[0].status, 200);
	ck_assert_str_eq(fx.obs[2].route, "/metrics");
	ck_assert_str_eq(fx.obs[3].route, "items.get");
	ck_assert_int_eq(fx.obs[3].status, 400);
	/* The route table as added, in order, and nothing past its end. */
	{
		const char *m = NULL, *p = NULL;

		ck_assert_uint_eq(dl_http_server_nroutes(fx.s), 9);
		ck_assert_int_eq(dl_http_server_route(fx.s, 1, &m, &p), 0);
		ck_assert_str_eq(m, "POST");
		ck_assert_str_eq(p, "/v1/items/{id}");
		ck_assert_int_eq(dl_http_server_route(fx.s, 9, &m, &p), -ENOENT);
	}
	fx_fini(&fx);
}
END_TEST

static void c_not_found(struct fx *fx)
{
	struct resp r;
	char buf[256];
	cJSON *doc;

	http_do(fx, "GET", "/v1/nothing", NULL, NULL, 0, &r);
	doc = assert_error(&r, 404, "not_found");
	assert_security_headers(&r);
	cJSON_Delete(doc);
	resp_free(&r);

	/* Trailing slash and missing parameter are different paths. */
	http_do(fx, "GET", "/v1/items/", NULL, NULL, 0, &r);
	cJSON_Delete(assert_error(&r, 404, "not_found"));
	resp_free(&r);
	http_do(fx, "GET", "/v1/items/a/b", NULL, NULL, 0, &r);
	cJSON_Delete(assert_error(&r, 404, "not_found"));
	resp_free(&r);

	http_do(fx, "DELETE", "/v1/items/x", NULL, NULL, 0, &r);
	doc = assert_error(&r, 405, "method_not_allowed");
	ck_assert_ptr_nonnull(hdr(&r, "Allow", buf, sizeof(buf)));
	ck_assert_str_eq(buf, "GET, HEAD, POST, OPTIONS");
	cJSON_Delete(doc);
	resp_free(&r);

	http_do(fx, "GET", "/v1/echo", NULL, NULL, 0, &r);
	doc = assert_error(&r, 405, "method_not_allowed");
	ck_assert_ptr_nonnull(hdr(&r, "Allow", buf, sizeof(buf)));
	ck_assert_str_eq(buf, "POST, OPTIONS");
	cJSON_Delete(doc);
	resp_free(&r);
}

START_TEST(test_404_405_json)
{
	struct fx fx;

	fx_init(&fx, NULL);
	fx_run(&fx, c_not_found);
	ck_assert_int_eq(fx.nobs, 5);
	ck_assert_str_eq(fx.obs[0].route, DL_HTTP_ROUTE_UNMATCHED);
	ck_assert_int_eq(fx.obs[0].status, 404);
	ck_assert_str_eq(fx.obs[3].method, "DELETE");
	ck_assert_int_eq(fx.obs[3].status, 405);
	fx_fini(&fx);
}
END_TEST

static void c_head(struct fx *fx)
{
	struct resp get, head;
	char a[64], b[64];

	http_do(fx, "GET", "/metrics", NULL, NULL, 0, &get);
	http_do(fx, "HEAD", "/metrics", NULL, NULL, 0, &head);
	ck_assert_int_eq(head.rc, CURLE_OK);
	ck_assert_int_eq(head.status, 200);
	ck_assert_uint_eq(head.blen, 0);
	ck_assert_ptr_nonnull(hdr(&get, "Content-Length", a, sizeof(a)));
	ck_assert_ptr_nonnull(hdr(&head, "Content-Length", b, sizeof(b)));
	ck_assert_str_eq(a, b);
	ck_assert_uint_eq(strtoul(a, NULL, 10), get.blen);
	assert_security_headers(&head);
	resp_free(&get);
	resp_free(&head);
}

START_TEST(test_head_for_get)
{
	struct fx fx;

	fx_init(&fx, NULL);
	fx_run(&fx, c_head);
	ck_assert_int_eq(fx.nobs, 2);
	ck_assert_str_eq(fx.obs[1].method, "HEAD");
	fx_fini(&fx);
}
END_TEST

static void c_body_limit(struct fx *fx)
{
	static const char *const no_expect[] = { "Expect:", NULL };
	size_t big = 3 << 20;
	char *data = malloc(big);
	struct resp r;
	cJSON *doc;

	memset(data, 'a', big);
	/* Exactly the limit passes. */
	http_do(fx, "POST", "/v1/echo", NULL, data, 1024, &r);
	ck_assert_int_eq(r.status, 200);
	doc = cJSON_Parse(r.body);
	ck_assert_int_eq((int)jnum(doc, "body_len"), 1024);
	cJSON_Delete(doc);
	resp_free(&r);

	/* One byte over: JSON 413 with the security headers, not evhttp's HTML page. */
	http_do(fx, "POST", "/v1/echo", NULL, data, 1025, &r);
	doc = assert_error(&r, 413, "payload_too_large");
	assert_security_headers(&r);
	cJSON_Delete(doc);
	resp_free(&r);

	/* Large, with curl's Expect: 100-continue. */
	http_do(fx, "POST", "/v1/echo", NULL, data, big, &r);
	cJSON_Delete(assert_error(&r, 413, "payload_too_large"));
	resp_free(&r);

	/* Large, sent at once without Expect: the body is drained, the answer still readable. */
	http_do(fx, "POST", "/v1/echo", no_expect, data, big, &r);
	cJSON_Delete(assert_error(&r, 413, "payload_too_large"));
	resp_free(&r);

	/* Chunked, no declared length. */
	http_do_ex(fx, "POST", "/v1/echo", no_expect, data, 8192, BODY_CHUNKED, 0, &r);
	cJSON_Delete(assert_error(&r, 413, "payload_too_large"));
	resp_free(&r);

	/* The server still serves. */
	http_do(fx, "GET", "/v1/items/x", NULL, NULL, 0, &r);
	ck_assert_int_eq(r.status, 200);
	resp_free(&r);
	free(data);
}

START_TEST(test_body_limit_413_json)
{
	dl_http_limits lim = { .max_body_bytes = 1024 };
	struct fx fx;

	fx_init(&fx, &lim);
	fx_run(&fx, c_body_limit);
	ck_assert_int_eq(fx.nobs, 6);
	ck_assert_str_eq(fx.obs[1].route, DL_HTTP_ROUTE_REJECTED);
	ck_assert_int_eq(fx.obs[1].status, 413);
	fx_fini(&fx);
}
END_TEST

static void c_header_limit(struct fx *fx)
{
	char *big = malloc(9000);
	const char *h[] = { big, NULL };
	struct resp r;
	cJSON *doc;

	snprintf(big, 9000, "X-Big: ");
	memset(big + 7, 'b', 8000);
	big[8007] = '\0';
	http_do(fx, "GET", "/v1/items/x", h, NULL, 0, &r);
	doc = assert_error(&r, 431, "header_too_large");
	assert_security_headers(&r);
	cJSON_Delete(doc);
	resp_free(&r);

	big[1007] = '\0'; /* under the limit */
	http_do(fx, "GET", "/v1/items/x", h, NULL, 0, &r);
	ck_assert_int_eq(r.status, 200);
	resp_free(&r);
	free(big);
}

START_TEST(test_header_limit)
{
	dl_http_limits lim = { .max_header_bytes = 4096 };
	struct fx fx;

	fx_init(&fx, &lim);
	fx_run(&fx, c_header_limit);
	ck_assert_int_eq(fx.nobs, 2);
	ck_assert_str_eq(fx.obs[0].route, DL_HTTP_ROUTE_REJECTED);
	ck_assert_int_eq(fx.obs[0].status, 431);
	fx_fini(&fx);
}
END_TEST

static void c_json(struct fx *fx)
{
	static const char *const ct[] = { "Content-Type: application/json; charset=utf-8", NULL };
	static const char *const text[] = { "Content-Type: text/plain", NULL };
	struct resp r;
	cJSON *doc, *err;
	const char *s;

	s = "[[[[1]]]]"; /* depth 4: allowed */
	http_do(fx, "POST", "/v1/json", ct, s, strlen(s), &r);
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq(r.body, "[[[[1]]]]");
	resp_free(&r);

	s = "{\"a\":[[[{\"b\":1}]]]}"; /* depth 5 */
	http_do(fx, "POST", "/v1/json", ct, s, strlen(s), &r);
	doc = assert_error(&r, 400, "too_deep");
	err = cJSON_GetObjectItemCaseSensitive(doc, "error");
	ck_assert_ptr_nonnull(strstr(jstr(err, "message"), "byte 8"));
	cJSON_Delete(doc);
	resp_free(&r);

	/* Brackets inside strings (with escaped quotes) do not count. */
	s = "{\"a\":\"[[[[[[\\\"{{{{\"}";
	http_do(fx, "POST", "/v1/json", ct, s, strlen(s), &r);
	ck_assert_int_eq(r.status, 200);
	resp_free(&r);

	/* Depth far beyond cJSON's own limit is refused by the pre-scan, cheaply. */
	{
		size_t n = 200000;
		char *deep = malloc(n);

		memset(deep, '[', n);
		http_do(fx, "POST", "/v1/json", ct, deep, n, &r);
		cJSON_Delete(assert_error(&r, 400, "too_deep"));
		resp_free(&r);
		free(deep);
	}

	s = "{\"a\": tru}";
	http_do(fx, "POST", "/v1/json", ct, s, strlen(s), &r);
	doc = assert_error(&r, 400, "invalid_json");
	err = cJSON_GetObjectItemCaseSensitive(doc, "error");
	ck_assert_ptr_nonnull(strstr(jstr(err, "message"), "at byte 6"));
	cJSON_Delete(doc);
	resp_free(&r);

	s = "{\"a\":1} x";
	http_do(fx, "POST", "/v1/json", ct, s, strlen(s), &r);
	doc = assert_error(&r, 400, "invalid_json");
	err = cJSON_GetObjectItemCaseSensitive(doc, "error");
	ck_assert_ptr_nonnull(strstr(jstr(err, "message"), "after the JSON value at byte 8"));
	cJSON_Delete(doc);
	resp_free(&r);

	http_do(fx, "POST", "/v1/json", ct, "", 0, &r);
	cJSON_Delete(assert_error(&r, 400, "invalid_json"));
	resp_free(&r);

	s = "{}";
	http_do(fx, "POST", "/v1/json", text, s, strlen(s), &r);
	cJSON_Delete(assert_error(&r, 415, "unsupported_media_type"));
	resp_free(&r);
}

START_TEST(test_json_body_depth_and_errors)
{
	dl_http_limits lim = { .max_body_bytes = 1 << 20 };
	struct fx fx;

	fx_init(&fx, &lim);
	fx_run(&fx, c_json);
	fx_fini(&fx);
}
END_TEST

static void c_request_id(struct fx *fx)
{
	static const char *const good[] = { "X-Request-Id: client-123:abc.DEF_x", NULL };
	static const char *const bad[] = { "X-Request-Id: has space", NULL };
	static const char *const slash[] = { "X-Request-Id: a/b", NULL };
	char long_id[160];
	const char *const too_long[] = { long_id, NULL };
	char buf[256], first[256];
	struct resp r;
	cJSON *doc;

	http_do(fx, "GET", "/v1/nothing", good, NULL, 0, &r);
	doc = assert_error(&r, 404, "not_found");
	ck_assert_str_eq(hdr(&r, "X-Request-Id", buf, sizeof(buf)), "client-123:abc.DEF_x");
	cJSON_Delete(doc);
	resp_free(&r);

	http_do(fx, "GET", "/v1/items/x", bad, NULL, 0, &r);
	ck_assert_ptr_nonnull(hdr(&r, "X-Request-Id", first, sizeof(first)));
	ck_assert_msg(dl_id_uuid7_ms(first) > 0, "not a UUIDv7: %s", first);
	resp_free(&r);

	http_do(fx, "GET", "/v1/items/x", slash, NULL, 0, &r);
	ck_assert_ptr_nonnull(hdr(&r, "X-Request-Id", buf, sizeof(buf)));
	ck_assert(dl_id_uuid7_ms(buf) > 0);
	ck_assert_str_ne(buf, first);
	resp_free(&r);

	snprintf(long_id, sizeof(long_id), "X-Request-Id: ");
	memset(long_id + 14, 'a', 129);
	long_id[14 + 129] = '\0';
	http_do(fx, "GET", "/v1/items/x", too_long, NULL, 0, &r);
	ck_assert(dl_id_uuid7_ms(hdr(&r, "X-Request-Id", buf, sizeof(buf))) > 0);
	resp_free(&r);
	long_id[14 + 128] = '\0'; /* exactly 128: kept */
	http_do(fx, "GET", "/v1/items/x", too_long, NULL, 0, &r);
	ck_assert_str_eq(hdr(&r, "X-Request-Id", buf, sizeof(buf)), long_id + 14);
	resp_free(&r);

	http_do(fx, "GET", "/v1/items/x", NULL, NULL, 0, &r);
	ck_assert(dl_id_uuid7_ms(hdr(&r, "X-Request-Id", buf, sizeof(buf))) > 0);
	resp_free(&r);
}

START_TEST(test_request_ids)
{
	struct fx fx;

	fx_init(&fx, NULL);
	fx_run(&fx, c_request_id);
	ck_assert_int_eq(fx.nobs, 6);
	ck_assert_str_eq(fx.obs[0].id, "client-123:abc.DEF_x");
	ck_assert(dl_id_uuid7_ms(fx.obs[1].id) > 0);
	fx_fini(&fx);
}
END_TEST

static void c_error_shape(struct fx *fx)
{
	static const char *const h[] = { "X-Request-Id: rid-1", NULL };
	struct resp r;

	http_do(fx, "GET", "/v1/error", h, NULL, 0, &r);
	ck_assert_int_eq(r.status, 422);
	ck_assert_str_eq(r.body, "{\"error\":{\"code\":\"invalid_event\",\"message\":\"bad event 7\","
				 "\"request_id\":\"rid-1\"}}");
	resp_free(&r);
	http_do(fx, "GET", "/v1/error?details=1", h, NULL, 0, &r);
	ck_assert_int_eq(r.status, 422);
	ck_assert_str_eq(r.body, "{\"error\":{\"code\":\"invalid_event\",\"message\":\"bad event 7\","
				 "\"request_id\":\"rid-1\",\"details\":[\"field \\\"a\\\" is "
				 "missing\"]}}");
	resp_free(&r);
}

START_TEST(test_error_body_exact)
{
	struct fx fx;

	fx_init(&fx, NULL);
	fx_run(&fx, c_error_shape);
	fx_fini(&fx);
}
END_TEST

static void c_cors(struct fx *fx)
{
	static const char *const ok[] = { "Origin: https://console.example", NULL };
	static const char *const evil[] = { "Origin: https://evil.example", NULL };
	static const char *const pre_ok[] = { "Origin: https://console.example",
					      "Access-Control-Request-Method: POST",
					      "Access-Control-Request-Headers: content-type", NULL };
	static const char *const pre_evil[] = { "Origin: https://evil.example",
						"Access-Control-Request-Method: POST", NULL };
	char buf[256];
	struct resp r;

	http_do(fx, "GET", "/v1/items/x", ok, NULL, 0, &r);
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq(hdr(&r, "Access-Control-Allow-Origin", buf, sizeof(buf)),
			 "https://console.example");
	ck_assert_str_eq(hdr(&r, "Vary", buf, sizeof(buf)), "Origin");
	resp_free(&r);

	http_do(fx, "GET", "/v1/items/x", evil, NULL, 0, &r);
	ck_assert_int_eq(r.status, 200);
	ck_assert_ptr_null(hdr(&r, "Access-Control-Allow-Origin", buf, sizeof(buf)));
	resp_free(&r);

	http_do(fx, "OPTIONS", "/v1/items/x", pre_ok, NULL, 0, &r);
	ck_assert_int_eq(r.rc, CURLE_OK);
	ck_assert_int_eq(r.status, 204);
	ck_assert_str_eq(hdr(&r, "Access-Control-Allow-Origin", buf, sizeof(buf)),
			 "https://console.example");
	ck_assert_str_eq(hdr(&r, "Access-Control-Allow-Methods", buf, sizeof(buf)),
			 "GET, HEAD, POST, OPTIONS");
	ck_assert_ptr_nonnull(hdr(&r, "Access-Control-Allow-Headers", buf, sizeof(buf)));
	ck_assert_ptr_nonnull(strcasestr(buf, "content-type"));
	assert_security_headers(&r);
	resp_free(&r);

	http_do(fx, "OPTIONS", "/v1/items/x", pre_evil, NULL, 0, &r);
	ck_assert_int_eq(r.status, 204);
	ck_assert_ptr_null(hdr(&r, "Access-Control-Allow-Origin", buf, sizeof(buf)));
	ck_assert_ptr_null(hdr(&r, "Access-Control-Allow-Methods", buf, sizeof(buf)));
	ck_assert_ptr_null(hdr(&r, "Access-Control-Allow-Headers", buf, sizeof(buf)));
	resp_free(&r);

	/* Preflight for an unknown path is still a 404. */
	http_do(fx, "OPTIONS", "/nope", pre_ok, NULL, 0, &r);
	cJSON_Delete(assert_error(&r, 404, "not_found"));
	resp_free(&r);
}

START_TEST(test_cors)
{
	static const char *const origins[] = { "https://console.example" };
	struct fx fx;

	fx_init(&fx, NULL);
	ck_assert_int_eq(dl_http_server_set_cors(fx.s, origins, 1, NULL), 0);
	fx_run(&fx, c_cors);
	fx_fini(&fx);
}
END_TEST

static void c_async(struct fx *fx)
{
	struct resp r;
	struct timespec a, b;
	cJSON *doc;

	clock_gettime(CLOCK_MONOTONIC, &a);
	http_do(fx, "GET", "/v1/async?ms=200", NULL, NULL, 0, &r);
	clock_gettime(CLOCK_MONOTONIC, &b);
	ck_assert_int_eq(r.status, 200);
	doc = cJSON_Parse(r.body);
	ck_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(doc, "late")));
	ck_assert(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(doc, "closed")));
	ck_assert((b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000 >= 190);
	cJSON_Delete(doc);
	resp_free(&r);

	http_do(fx, "GET", "/stats", NULL, NULL, 0, &r);
	doc = cJSON_Parse(r.body);
	ck_assert_int_eq((int)jnum(doc, "inflight"), 1); /* /stats itself */
	cJSON_Delete(doc);
	resp_free(&r);
}

START_TEST(test_async_reply)
{
	struct fx fx;

	fx_init(&fx, NULL);
	fx_run(&fx, c_async);
	ck_assert_int_eq(fx.late_rc, 0);
	ck_assert_uint_eq(fx.inflight_seen, 1);
	ck_assert_uint_eq(dl_http_server_inflight(fx.s), 0);
	ck_assert_int_eq(fx.obs[0].status, 200);
	ck_assert_str_eq(fx.obs[0].route, "async");
	fx_fini(&fx);
}
END_TEST

static void c_disconnect(struct fx *fx)
{
	struct resp r;
	cJSON *doc;

	/* The client gives up after 100 ms; the server replies at 400 ms. */
	http_do_ex(fx, "GET", "/v1/async?ms=400", NULL, NULL, 0, BODY_FIXED, 100, &r);
	ck_assert_int_eq(r.rc, CURLE_OPERATION_TIMEDOUT);
	resp_free(&r);
	usleep(600 * 1000);
	http_do(fx, "GET", "/stats", NULL, NULL, 0, &r);
	ck_assert_int_eq(r.status, 200);
	doc = cJSON_Parse(r.body);
	ck_assert_int_eq((int)jnum(doc, "inflight"), 1);  /* /stats only */
	ck_assert_int_eq((int)jnum(doc, "connections"), 1); /* the dropped one is closed */
	cJSON_Delete(doc);
	resp_free(&r);
}

START_TEST(test_client_disconnect_before_async_reply)
{
	struct fx fx;

	fx_init(&fx, NULL);
	fx_run(&fx, c_disconnect);
	ck_assert_ptr_null(fx.held);
	/* The close was noticed while the handler held the request: the reply is dropped. */
	ck_assert_int_eq(fx.late_rc, -EPIPE);
	ck_assert_uint_eq(dl_http_server_inflight(fx.s), 0);
	ck_assert_int_eq(fx.nobs, 2);
	ck_assert_str_eq(fx.obs[0].route, "async");
	ck_assert_int_eq(fx.obs[0].status, DL_HTTP_STATUS_CLIENT_CLOSED);
	ck_assert_int_eq(fx.obs[1].status, 200);
	fx_fini(&fx);
}
END_TEST

/* The server is freed while a handler still holds a request: the request becomes closed and
 * the later reply only frees it. */
static void c_hold_then_quit(struct fx *fx)
{
	struct resp r;

	http_do_ex(fx, "GET", "/v1/async?ms=5000", NULL, NULL, 0, BODY_FIXED, 200, &r);
	ck_assert_int_eq(r.rc, CURLE_OPERATION_TIMEDOUT);
	resp_free(&r);
}

START_TEST(test_free_with_held_request)
{
	struct fx fx;
	dl_http_req *held;

	fx_init(&fx, NULL);
	fx_run(&fx, c_hold_then_quit);
	held = fx.held;
	ck_assert_ptr_nonnull(held);
	evtimer_del(fx.late);
	dl_http_server_free(fx.s);
	fx.s = NULL;
	ck_assert(dl_http_req_closed(held));
	ck_assert_str_eq(dl_http_req_route(held), "async");
	ck_assert_int_eq(dl_http_reply_error(held, 500, "x", "y"), -EPIPE);
	fx_fini(&fx);
}
END_TEST

static int raw_connect(int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	ck_assert_int_ge(fd, 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

static void c_conn_cap(struct fx *fx)
{
	int a = raw_connect(fx->port), b = raw_connect(fx->port);
	struct resp r;
	char buf[64];
	cJSON *doc;

	usleep(100 * 1000); /* let the loop accept both */
	http_do(fx, "GET", "/v1/items/x", NULL, NULL, 0, &r);
	doc = assert_error(&r, 503, "too_many_connections");
	ck_assert_str_eq(hdr(&r, "Retry-After", buf, sizeof(buf)), "1");
	ck_assert_str_eq(hdr(&r, "Connection", buf, sizeof(buf)), "close");
	assert_security_headers(&r);
	cJSON_Delete(doc);
	resp_free(&r);

	close(a);
	close(b);
	usleep(100 * 1000);
	http_do(fx, "GET", "/stats", NULL, NULL, 0, &r);
	ck_assert_int_eq(r.status, 200);
	doc = cJSON_Parse(r.body);
	ck_assert_int_eq((int)jnum(doc, "connections"), 1);
	cJSON_Delete(doc);
	resp_free(&r);
}

START_TEST(test_connection_cap)
{
	dl_http_limits lim = { .max_connections = 2 };
	struct fx fx;

	fx_init(&fx, &lim);
	fx_run(&fx, c_conn_cap);
	ck_assert_str_eq(fx.obs[0].route, DL_HTTP_ROUTE_REJECTED);
	ck_assert_int_eq(fx.obs[0].status, 503);
	fx_fini(&fx);
}
END_TEST

static void c_drain(struct fx *fx)
{
	struct resp r;
	char buf[64];

	http_do(fx, "GET", "/v1/async?ms=200", NULL, NULL, 0, &r);
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq(hdr(&r, "Connection", buf, sizeof(buf)), "close");
	resp_free(&r);
	http_do(fx, "GET", "/v1/items/x", NULL, NULL, 0, &r);
	ck_assert_int_eq(r.rc, CURLE_COULDNT_CONNECT);
	resp_free(&r);
}

START_TEST(test_drain_keeps_inflight)
{
	struct fx fx;
	int port = -1;

	fx_init(&fx, NULL);
	fx.stop_in_handler = true;
	fx_run(&fx, c_drain);
	ck_assert_int_eq(fx.late_rc, 0);
	ck_assert_uint_eq(fx.inflight_seen, 1);
	ck_assert_uint_eq(dl_http_server_inflight(fx.s), 0);
	ck_assert_int_eq(dl_http_server_listen(fx.s, "127.0.0.1", 0, &port), -ESHUTDOWN);
	ck_assert_int_eq(port, -1);
	fx_fini(&fx);
}
END_TEST

static void c_keepalive(struct fx *fx)
{
	static const char *const ct[] = { "Content-Type: application/json", NULL };
	struct resp r;
	cJSON *doc;
	int port = -1;

	reuse_handle = curl_easy_init();
	for (int i = 0; i < 3; i++) {
		http_do(fx, "GET", "/v1/items/k", NULL, NULL, 0, &r);
		ck_assert_int_eq(r.status, 200);
		doc = cJSON_Parse(r.body);
		if (port == -1)
			port = (int)jnum(doc, "peer_port");
		ck_assert_int_eq((int)jnum(doc, "peer_port"), port); /* same connection */
		cJSON_Delete(doc);
		resp_free(&r);
		http_do(fx, "GET", "/nope", NULL, NULL, 0, &r);
		cJSON_Delete(assert_error(&r, 404, "not_found"));
		resp_free(&r);
		http_do(fx, "POST", "/v1/json", ct, "[1]", 3, &r);
		ck_assert_int_eq(r.status, 200);
		ck_assert_str_eq(r.body, "[1]");
		resp_free(&r);
	}
	http_do(fx, "GET", "/stats", NULL, NULL, 0, &r);
	doc = cJSON_Parse(r.body);
	ck_assert_int_eq((int)jnum(doc, "connections"), 1);
	cJSON_Delete(doc);
	resp_free(&r);
	curl_easy_cleanup(reuse_handle);
	reuse_handle = NULL;
}

START_TEST(test_keepalive_connection_reuse)
{
	struct fx fx;

	fx_init(&fx, NULL);
	fx_run(&fx, c_keepalive);
	ck_assert_int_eq(fx.nobs, 10);
	fx_fini(&fx);
}
END_TEST

static void h_noop(dl_http_req *req, void *opaque)
{
	(void)opaque;
	dl_http_reply_text(req, 204, NULL, NULL, 0);
}

START_TEST(test_api_errors)
{
	struct event_base *base = event_base_new();
	dl_http_server *s = (dl_http_server *)0x1, *s2 = NULL;
	dl_http_limits bad = { .max_header_bytes = 10 };
	char err[256] = "";
	int port = -7, port2 = -7;

	ck_assert_int_eq(dl_http_server_new(base, &bad, err, sizeof(err), &s), -EINVAL);
	ck_assert_ptr_eq(s, (dl_http_server *)0x1);
	ck_assert_int_gt(strlen(err), 0);
	bad = (dl_http_limits){ .request_timeout_s = -1 };
	ck_assert_int_eq(dl_http_server_new(base, &bad, err, sizeof(err), &s), -EINVAL);
	ck_assert_int_eq(dl_http_server_new(base, NULL, err, sizeof(err), &s), 0);

	ck_assert_int_eq(dl_http_route(s, "GET", "/a/{id}", h_noop, NULL, "a"), 0);
	ck_assert_int_eq(dl_http_route(s, "GET", "/a/{id}", h_noop, NULL, "dup"), -EINVAL);
	ck_assert_int_eq(dl_http_route(s, "HEAD", "/b", h_noop, NULL, NULL), -EINVAL);
	ck_assert_int_eq(dl_http_route(s, "BREW", "/b", h_noop, NULL, NULL), -EINVAL);
	ck_assert_int_eq(dl_http_route(s, "GET", "b", h_noop, NULL, NULL), -EINVAL);
	ck_assert_int_eq(dl_http_route(s, "GET", "/b//c", h_noop, NULL, NULL), -EINVAL);
	ck_assert_int_eq(dl_http_route(s, "GET", "/b/x{id}", h_noop, NULL, NULL), -EINVAL);
	ck_assert_int_eq(dl_http_route(s, "GET", "/", h_noop, NULL, "root"), 0);

	ck_assert_int_eq(dl_http_server_listen(s, "127.0.0.1", 70000, &port), -EINVAL);
	ck_assert_int_eq(port, -7);
	ck_assert_int_eq(dl_http_server_listen(s, "127.0.0.1", 0, &port), 0);
	ck_assert_int_eq(dl_http_server_new(base, NULL, err, sizeof(err), &s2), 0);
	ck_assert_int_eq(dl_http_server_listen(s2, "127.0.0.1", port, &port2), -EADDRINUSE);
	ck_assert_int_eq(port2, -7);

	ck_assert_int_eq(dl_http_server_set_cors(s, NULL, 1, NULL), -EINVAL);
	ck_assert_int_eq(dl_http_server_connections(s), 0);
	ck_assert_int_eq(dl_http_server_inflight(s), 0);
	dl_http_server_free(s2);
	dl_http_server_free(s);
	dl_http_server_free(NULL);
	event_base_free(base);
}
END_TEST

/* ---- streams ---- */

static void c_stream(struct fx *fx)
{
	struct resp r;
	char buf[128];

	http_do(fx, "GET", "/v1/stream", NULL, NULL, 0, &r);
	ck_assert_int_eq(r.rc, CURLE_OK);
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq(r.body, ": hello\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\n");
	ck_assert_str_eq(hdr(&r, "Content-Type", buf, sizeof(buf)), "text/event-stream");
	ck_assert_str_eq(hdr(&r, "Cache-Control", buf, sizeof(buf)), "no-cache");
	ck_assert_str_eq(hdr(&r, "X-Accel-Buffering", buf, sizeof(buf)), "no");
	ck_assert_str_eq(hdr(&r, "Transfer-Encoding", buf, sizeof(buf)), "chunked");
	ck_assert_str_eq(hdr(&r, "X-Extra", buf, sizeof(buf)), "yes");
	ck_assert_str_eq(hdr(&r, "X-Content-Type-Options", buf, sizeof(buf)), "nosniff");
	ck_assert_ptr_nonnull(hdr(&r, "X-Request-Id", buf, sizeof(buf)));
	ck_assert_ptr_null(hdr(&r, "Content-Length", buf, sizeof(buf)));
	resp_free(&r);
	/* HEAD: the headers only, and the stream ends at once for the client. */
	http_do(fx, "HEAD", "/v1/stream", NULL, NULL, 0, &r);
	ck_assert_int_eq(r.rc, CURLE_OK);
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq(hdr(&r, "Content-Type", buf, sizeof(buf)), "text/event-stream");
	ck_assert_ptr_null(r.body);
	resp_free(&r);
}

START_TEST(test_stream_chunks_and_headers)
{
	struct fx fx;

	fx_init(&fx, NULL);
	fx_run(&fx, c_stream);
	ck_assert_uint_eq(fx.st_streams_seen, 1);
	ck_assert_ptr_null(fx.st);
	ck_assert_uint_eq(dl_http_server_streams(fx.s), 0);
	ck_assert_uint_eq(dl_http_server_inflight(fx.s), 0);
	ck_assert_int_eq(fx.nobs, 2);
	ck_assert_str_eq(fx.obs[0].route, "stream");
	ck_assert_str_eq(fx.obs[0].method, "GET");
	ck_assert_int_eq(fx.obs[0].status, 200);
	ck_assert_str_eq(fx.obs[1].method, "HEAD");
	ck_assert_int_eq(fx.obs[1].status, 200);
	fx_fini(&fx);
}
END_TEST

static void c_stream_gone(struct fx *fx)
{
	struct resp r;

	/* The client reads the start of a stream that never ends, then gives up. */
	http_do_ex(fx, "GET", "/v1/stream?mode=3", NULL, NULL, 0, BODY_FIXED, 300, &r);
	ck_assert_int_eq(r.rc, CURLE_OPERATION_TIMEDOUT);
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq(r.body, ": hello\n\n");
	resp_free(&r);
	usleep(300 * 1000);
}

START_TEST(test_stream_client_gone)
{
	struct fx fx;

	fx_init(&fx, NULL);
	fx_run(&fx, c_stream_gone);
	ck_assert_int_eq(fx.st_gone, 1);
	ck_assert_ptr_null(fx.st);
	ck_assert_uint_eq(dl_http_server_streams(fx.s), 0);
	ck_assert_uint_eq(dl_http_server_inflight(fx.s), 0);
	ck_assert_uint_eq(dl_http_server_connections(fx.s), 0);
	ck_assert_int_eq(fx.nobs, 1);
	ck_assert_int_eq(fx.obs[0].status, 200);
	fx_fini(&fx);
}
END_TEST

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
	struct fx *fx = arg;

	(void)fd;
	(void)what;
	ck_assert_ptr_nonnull(fx->st);
	dl_http_server_stop_accepting(fx->s);
	/* Told on a later turn, not from inside stop_accepting. */
	ck_assert_int_eq(fx->st_drain, 0);
}

static void c_stream_drain(struct fx *fx)
{
	struct resp r;
	char buf[64];

	http_do_ex(fx, "GET", "/v1/stream?mode=3", NULL, NULL, 0, BODY_FIXED, 5000, &r);
	ck_assert_int_eq(r.rc, CURLE_OK); /* ended cleanly, well before the client's timeout */
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq(r.body, ": hello\n\ndata: bye\n\n");
	ck_assert_str_eq(hdr(&r, "Content-Type", buf, sizeof(buf)), "text/event-stream");
	resp_free(&r);
}

START_TEST(test_stream_told_of_drain)
{
	struct fx fx;
	struct event *stop;
	struct timeval tv = { 0, 10 * 1000 };

	fx_init(&fx, NULL);
	stop = evtimer_new(fx.base, on_stop, &fx);
	/* Run the loop until the stream started, then drain 10 ms later. */
	fx.client = c_stream_drain;
	ck_assert_int_eq(pthread_create(&fx.thread, NULL, client_main, &fx), 0);
	while (fx.st == NULL && !atomic_load(&fx.done))
		event_base_loop(fx.base, EVLOOP_ONCE);
	evtimer_add(stop, &tv);
	event_base_dispatch(fx.base);
	pthread_join(fx.thread, NULL);
	ck_assert_int_eq(fx.st_drain, 1);
	ck_assert_int_eq(fx.st_gone, 0);
	ck_assert_uint_eq(dl_http_server_inflight(fx.s), 0);
	event_free(stop);
	fx_fini(&fx);
}
END_TEST

static void c_stream_idle(struct fx *fx)
{
	struct resp r;

	http_do(fx, "GET", "/v1/stream?mode=2", NULL, NULL, 0, &r);
	ck_assert_int_eq(r.rc, CURLE_OK);
	ck_assert_str_eq(r.body, ": hello\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\n");
	resp_free(&r);
}

START_TEST(test_stream_outlives_request_timeout)
{
	dl_http_limits lim = { .request_timeout_s = 1 };
	struct fx fx;

	fx_init(&fx, &lim);
	fx_run(&fx, c_stream_idle);
	ck_assert_int_eq(fx.st_gone, 0);
	fx_fini(&fx);
}
END_TEST

static void c_stream_flood(struct fx *fx)
{
	int fd = raw_connect(fx->port);
	static const char get[] = "GET /v1/stream?mode=4 HTTP/1.1\r\nHost: x\r\n\r\n";
	char buf[256];
	ssize_t n;

	ck_assert_int_eq(write(fd, get, sizeof(get) - 1), (ssize_t)sizeof(get) - 1);
	n = read(fd, buf, sizeof(buf) - 1); /* the status line, then stop reading */
	ck_assert_int_gt(n, 12);
	buf[n] = '\0';
	ck_assert(strncmp(buf, "HTTP/1.1 200", 12) == 0);
	usleep(600 * 1000);
	close(fd);
	usleep(200 * 1000);
}

START_TEST(test_stream_queued_bytes)
{
	struct fx fx;

	fx_init(&fx, NULL);
	fx_run(&fx, c_stream_flood);
	/* 32 MiB written; loopback socket buffers take a few MiB at most. */
	ck_assert_uint_gt(fx.st_queued, (size_t)16 << 20);
	ck_assert_uint_le(fx.st_queued, ((size_t)32 << 20) + 4096);
	ck_assert_uint_eq(dl_http_server_inflight(fx.s), 0);
	fx_fini(&fx);
}
END_TEST

/* Two servers (as two replicas would) share a port only when both ask for SO_REUSEPORT. */
START_TEST(test_reuseport_shares_a_port)
{
	struct event_base *base = event_base_new();
	dl_http_server *a = NULL, *b = NULL, *c = NULL;
	char errbuf[128];
	int port = 0, port2 = 0;

	ck_assert_int_eq(dl_http_server_new(base, NULL, errbuf, sizeof(errbuf), &a), 0);
	ck_assert_int_eq(dl_http_server_new(base, NULL, errbuf, sizeof(errbuf), &b), 0);
	ck_assert_int_eq(dl_http_server_new(base, NULL, errbuf, sizeof(errbuf), &c), 0);
	dl_http_server_set_reuseport(a, true);
	dl_http_server_set_reuseport(b, true);
	ck_assert_int_eq(dl_http_server_listen(a, "127.0.0.1", 0, &port), 0);
	ck_assert_int_gt(port, 0);
	ck_assert_int_eq(dl_http_server_listen(b, "127.0.0.1", port, &port2), 0);
	ck_assert_int_eq(port2, port);
	ck_assert_int_eq(dl_http_server_listen(c, "127.0.0.1", port, NULL), -EADDRINUSE);
	dl_http_server_free(c);
	dl_http_server_free(b);
	dl_http_server_free(a);
	event_base_free(base);
}
END_TEST

static Suite *dl_http_suite(void)
{
	Suite *s = suite_create("dl_http");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_api_errors);
	tcase_add_test(tc, test_routing_and_params);
	tcase_add_test(tc, test_404_405_json);
	tcase_add_test(tc, test_head_for_get);
	tcase_add_test(tc, test_body_limit_413_json);
	tcase_add_test(tc, test_header_limit);
	tcase_add_test(tc, test_json_body_depth_and_errors);
	tcase_add_test(tc, test_request_ids);
	tcase_add_test(tc, test_error_body_exact);
	tcase_add_test(tc, test_cors);
	tcase_add_test(tc, test_async_reply);
	tcase_add_test(tc, test_client_disconnect_before_async_reply);
	tcase_add_test(tc, test_free_with_held_request);
	tcase_add_test(tc, test_connection_cap);
	tcase_add_test(tc, test_drain_keeps_inflight);
	tcase_add_test(tc, test_keepalive_connection_reuse);
	tcase_add_test(tc, test_stream_chunks_and_headers);
	tcase_add_test(tc, test_stream_client_gone);
	tcase_add_test(tc, test_stream_told_of_drain);
	tcase_add_test(tc, test_stream_outlives_request_timeout);
	tcase_add_test(tc, test_stream_queued_bytes);
	tcase_add_test(tc, test_reuseport_shares_a_port);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr;
	int failed;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	sr = srunner_create(dl_http_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	curl_global_cleanup();
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
