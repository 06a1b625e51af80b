/* SPDX-License-Identifier: Apache-2.0 */
/* dl_http: an HTTP/1.1 server on libevent's evhttp with routing, limits, request ids, JSON
 * bodies and errors, security and CORS headers, async replies and graceful drain. */
#include "common/dl_http.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <event2/util.h>

#include "common/dl_id.h"

#define DL_HTTP_DEFAULT_BODY ((size_t)1 << 20)
#define DL_HTTP_DEFAULT_HEADERS ((size_t)16 << 10)
#define DL_HTTP_DEFAULT_CONNECTIONS 1024u
#define DL_HTTP_DEFAULT_TIMEOUT_S 30
#define DL_HTTP_DEFAULT_DEPTH 32
#define DL_HTTP_MAX_DEPTH 1000 /* cJSON's own CJSON_NESTING_LIMIT */
#define DL_HTTP_MAX_SEGMENTS 32
#define DL_HTTP_STREAM_MAX_WRITE ((size_t)1 << 20) /* bytes per stream write turn */
#define DL_HTTP_ID_MAX 128
#define DL_HTTP_CORS_HEADERS \
	"Authorization, Content-Type, Content-Encoding, Idempotency-Key, X-Request-Id"

/* Every response carries these; the API never serves content a browser should render. */
static const char *const security_headers[][2] = {
	{ "X-Content-Type-Options", "nosniff" },
	{ "X-Frame-Options", "DENY" },
	{ "Referrer-Policy", "no-referrer" },
	{ "Cache-Control", "no-store" },
	{ "Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'" },
};

struct dl_http_seg {
	char *text; /* literal text, or the parameter name */
	bool param;
};

struct dl_http_route {
	char method[8];
	char *pattern;
	struct dl_http_seg *segs;
	size_t nsegs;
	dl_http_handler_fn fn;
	void *opaque;
	char *name;
};

/* What dl_http knows about one client connection. It is created in the bufferevent callback,
 * before evhttp has made its evhttp_connection, and "adopted" on the next loop turn: then the
 * evhttp_connection is known (it is the bufferevent's callback argument), and a close callback
 * and an output watcher are set on it. */
struct dl_http_conn {
	dl_http_server *s;
	struct bufferevent *bev;
	struct evhttp_connection *evcon;
	struct evbuffer_cb_entry *out_cb;
	struct evbuffer_cb_entry *in_cb;
	size_t in_since_reply; /* bytes received since the last response began */
	size_t in_since_reply_at_fix;
	bool adopted;
	bool rejected; /* over max_connections: its requests get 503 */
	bool fix_pending;
	bool fixing;
	struct dl_http_conn *prev, *next;
	struct dl_http_conn *adopt_next;
	struct dl_http_conn *fix_next;
};

struct dl_http_req {
	dl_http_server *s;            /* NULL once closed */
	struct evhttp_request *evreq; /* NULL once closed */
	struct evhttp_connection *evcon;
	char method[16];
	char *path;
	char *route_name;
	struct evkeyvalq params;
	struct evkeyvalq query;
	struct evkeyvalq in_headers;
	struct evkeyvalq out_headers;
	char *body;
	size_t body_len;
	char peer[64];
	int peer_port;
	char id[DL_HTTP_ID_MAX + 1];
	char *cors_origin;
	bool head;
	bool closed;
	bool conn_close;
	struct timespec start;
	struct event *watch; /* EV_CLOSED on the socket while a handler holds req */
	struct dl_http_stream *stream; /* set once the reply became a stream */
	dl_http_req *prev, *next;
};

/* A streamed response. It lives on one of the server's two lists: streams (told nothing yet,
 * or already told of the drain) and drain_notify (to be told DL_HTTP_STREAM_DRAINING on the
 * next tick); on neither once its request is closed. */
struct dl_http_stream {
	dl_http_req *req;
	int status;
	dl_http_stream_fn fn;
	void *opaque;
	struct dl_http_stream **list; /* the list head it is on, NULL when on none */
	struct dl_http_stream *prev, *next;
};

struct dl_http_server {
	struct event_base *base;
	struct evhttp *http;
	dl_http_limits limits;
	struct evhttp_bound_socket **bound;
	size_t nbound;
	bool reuseport; /* listen with SO_REUSEPORT (several processes share a port) */
	struct dl_http_route *routes;
	size_t nroutes;
	char **cors;
	size_t ncors;
	char *cors_headers;
	dl_http_observer_fn obs;
	void *obs_opaque;
	struct event *tick;
	struct dl_http_conn *conns;
	struct dl_http_conn *adopt_head;
	struct dl_http_conn *fix_head;
	size_t nconn;
	size_t nadmitted;
	size_t nrejected;
	dl_http_req *inflight;
	size_t ninflight;
	dl_http_req *dispatching; /* the request whose handler is running */
	struct dl_http_stream *streams;
	struct dl_http_stream *drain_notify;
	size_t nstreams;
	bool draining;
	bool freeing;
};

static void set_err(char *errbuf, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void stream_unlink(dl_http_server *s, struct dl_http_stream *st);
static void stream_notify_drain(dl_http_server *s);

static void set_err(char *errbuf, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (errbuf == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(errbuf, errlen, fmt, ap);
	va_end(ap);
}

static double elapsed_s(const struct timespec *start)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - start->tv_sec) +
	       (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

static void new_request_id(char out[DL_HTTP_ID_MAX + 1])
{
	static unsigned long long fallback_seq;
	char id[DL_ID_UUID_LEN + 1];

	if (dl_id_new(id) == 0) {
		memcpy(out, id, sizeof(id));
		return;
	}
	/* Only when the random generator fails: still unique within the process. */
	snprintf(out, DL_HTTP_ID_MAX + 1, "req-%llx-%llx", (unsigned long long)time(NULL),
		 ++fallback_seq);
}

static bool is_token_char(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool is_header_name(const char *s)
{
	if (s == NULL || *s == '\0')
		return false;
	for (; *s != '\0'; s++)
		if (!is_token_char((unsigned char)*s))
			return false;
	return true;
}

static bool is_header_value(const char *s)
{
	if (s == NULL)
		return false;
	for (; *s != '\0'; s++)
		if (*s == '\r' || *s == '\n')
			return false;
	return true;
}

static const char *method_name(enum evhttp_cmd_type t)
{
	switch (t) {
	case EVHTTP_REQ_GET: return "GET";
	case EVHTTP_REQ_POST: return "POST";
	case EVHTTP_REQ_HEAD: return "HEAD";
	case EVHTTP_REQ_PUT: return "PUT";
	case EVHTTP_REQ_DELETE: return "DELETE";
	case EVHTTP_REQ_OPTIONS: return "OPTIONS";
	case EVHTTP_REQ_TRACE: return "TRACE";
	case EVHTTP_REQ_CONNECT: return "CONNECT";
	case EVHTTP_REQ_PATCH: return "PATCH";
	}
	return "UNKNOWN";
}

static bool cors_allowed(const dl_http_server *s, const char *origin)
{
	if (origin == NULL)
		return false;
	for (size_t i = 0; i < s->ncors; i++)
		if (strcasecmp(s->cors[i], origin) == 0)
			return true;
	return false;
}

/* ---- error bodies ---- */

/* Builds {"error":{"code","message","request_id"[,"details"]}}; NULL on allocation failure. */
static char *error_body(const char *code, const char *message, const char *request_id,
			const cJSON *details)
{
	cJSON *root = cJSON_CreateObject();
	cJSON *err = cJSON_AddObjectToObject(root, "error");
	char *out = NULL;

	if (err == NULL)
		goto out_delete;
	if (cJSON_AddStringToObject(err, "code", code) == NULL ||
	    cJSON_AddStringToObject(err, "message", message) == NULL ||
	    cJSON_AddStringToObject(err, "request_id", request_id) == NULL)
		goto out_delete;
	if (details != NULL) {
		cJSON *copy = cJSON_Duplicate(details, 1);

		if (copy == NULL)
			goto out_delete;
		cJSON_AddItemToObject(err, "details", copy);
	}
	out = cJSON_PrintUnformatted(root);
out_delete:
	cJSON_Delete(root);
	return out;
}

/* ---- requests ---- */

static void req_unlink(dl_http_req *req)
{
	dl_http_server *s = req->s;

	if (s == NULL)
		return;
	if (req->prev != NULL)
		req->prev->next = req->next;
	else if (s->inflight == req)
		s->inflight = req->next;
	if (req->next != NULL)
		req->next->prev = req->prev;
	req->prev = req->next = NULL;
	s->ninflight--;
}

/* The client is gone (or the server is freed) while a handler holds req: the evhttp request
 * is freed with its connection, so forget it; the handler's reply will only free req. */
static void req_mark_closed(dl_http_req *req, bool notify)
{
	dl_http_server *s = req->s;
	struct dl_http_stream *st = req->stream;

	req_unlink(req);
	if (req->watch != NULL) {
		event_free(req->watch);
		req->watch = NULL;
	}
	/* A stream whose write failed or timed out: evhttp detached the request from the
	 * connection it frees (the reply was not finished), so the request is ours to free;
	 * evhttp_send_reply_end() on a detached request does just that. */
	if (st != NULL && req->evreq != NULL && evhttp_request_get_connection(req->evreq) == NULL)
		evhttp_send_reply_end(req->evreq);
	if (st != NULL && s != NULL)
		stream_unlink(s, st);
	req->closed = true;
	req->evreq = NULL;
	req->evcon = NULL;
	req->s = NULL;
	if (notify && s != NULL && s->obs != NULL && !s->freeing)
		s->obs(req->route_name, req->method,
		       st != NULL ? st->status : DL_HTTP_STATUS_CLIENT_CLOSED,
		       elapsed_s(&req->start), req->id, s->obs_opaque);
	/* Last: the owner may end (free) the stream from its callback. */
	if (notify && st != NULL && s != NULL && !s->freeing)
		st->fn(st, DL_HTTP_STREAM_CLIENT_GONE, st->opaque);
}

static void req_free(dl_http_req *req)
{
	if (req == NULL)
		return;
	if (req->watch != NULL)
		event_free(req->watch);
	free(req->path);
	free(req->route_name);
	evhttp_clear_headers(&req->params);
	evhttp_clear_headers(&req->query);
	evhttp_clear_headers(&req->in_headers);
	evhttp_clear_headers(&req->out_headers);
	free(req->body);
	free(req->cors_origin);
	free(req);
}

/* Copies the handler's headers to evhttp's output headers and adds the security, request id,
 * CORS and Connection headers; cache_control NULL keeps the security default. Stops treating
 * req as the request being dispatched (its handler answers it now). */
static struct evkeyvalq *req_out_headers(dl_http_req *req, const char *cache_control)
{
	dl_http_server *s = req->s;
	struct evkeyvalq *hdrs = evhttp_request_get_output_headers(req->evreq);
	struct evkeyval *kv;

	if (s->dispatching == req)
		s->dispatching = NULL;
	TAILQ_FOREACH(kv, &req->out_headers, next)
		evhttp_add_header(hdrs, kv->key, kv->value);
	for (size_t i = 0; i < sizeof(security_headers) / sizeof(security_headers[0]); i++) {
		const char *v = security_headers[i][1];

		if (cache_control != NULL && strcmp(security_headers[i][0], "Cache-Control") == 0)
			v = cache_control;
		evhttp_remove_header(hdrs, security_headers[i][0]);
		evhttp_add_header(hdrs, security_headers[i][0], v);
	}
	evhttp_remove_header(hdrs, "X-Request-Id");
	evhttp_add_header(hdrs, "X-Request-Id", req->id);
	if (s->ncors > 0)
		evhttp_add_header(hdrs, "Vary", "Origin");
	if (req->cors_origin != NULL) {
		evhttp_add_header(hdrs, "Access-Control-Allow-Origin", req->cors_origin);
		evhttp_add_header(hdrs, "Access-Control-Expose-Headers",
				  "X-Request-Id, Retry-After");
	}
	if (s->draining || req->conn_close) {
		evhttp_remove_header(hdrs, "Connection");
		evhttp_add_header(hdrs, "Connection", "close");
	}
	return hdrs;
}

/* Hands the response to evhttp and consumes req. ctype NULL means no body. */
static int req_send(dl_http_req *req, int status, const char *ctype, const char *body,
		    size_t len)
{
	dl_http_server *s = req->s;
	struct evhttp_request *evreq = req->evreq;
	struct evkeyvalq *hdrs;
	struct evbuffer *buf = NULL;
	bool bodiless = status < 200 || status == 204 || status == 304;
	char num[32];
	int ret = 0;

	if (req->closed) {
		req_free(req);
		return -EPIPE;
	}
	if (req->watch != NULL) {
		event_free(req->watch);
		req->watch = NULL;
	}
	hdrs = req_out_headers(req, NULL);
	evhttp_remove_header(hdrs, "Content-Type");
	evhttp_remove_header(hdrs, "Content-Length");
	if (!bodiless && ctype != NULL) {
		evhttp_add_header(hdrs, "Content-Type", ctype);
		snprintf(num, sizeof(num), "%zu", len);
		evhttp_add_header(hdrs, "Content-Length", num);
		if (!req->head && len > 0) {
			buf = evbuffer_new();
			if (buf == NULL || evbuffer_add(buf, body, len) != 0) {
				evhttp_remove_header(hdrs, "Content-Length");
				evhttp_remove_header(hdrs, "Content-Type");
				status = 500;
				ret = -ENOMEM;
			}
		}
	} else if (!bodiless) {
		evhttp_add_header(hdrs, "Content-Length", "0");
	}
	/* Unlinked first: if evhttp fails the connection from inside the send, the close
	 * callback must not find this request. */
	req_unlink(req);
	evhttp_send_reply(evreq, status, NULL, ret == 0 ? buf : NULL);
	if (buf != NULL)
		evbuffer_free(buf);
	if (s->obs != NULL && !s->freeing)
		s->obs(req->route_name, req->method, status, elapsed_s(&req->start), req->id,
		       s->obs_opaque);
	req_free(req);
	return ret;
}

int dl_http_reply_text(dl_http_req *req, int status, const char *content_type, const char *text,
		       size_t len)
{
	if (status < 100 || status > 599) {
		char *body = error_body("internal_error", "invalid response status", req->id, NULL);
		int ret;

		ret = req_send(req, 500, body ? "application/json" : NULL, body,
			       body ? strlen(body) : 0);
		free(body);
		return ret == -EPIPE ? ret : -EINVAL;
	}
	if (text == NULL)
		len = 0;
	return req_send(req, status, content_type ? content_type : "text/plain; charset=utf-8",
			text, len);
}

int dl_http_reply_json_text(dl_http_req *req, int status, const char *json, size_t len)
{
	return dl_http_reply_text(req, status, "application/json", json, len);
}

int dl_http_reply_json(dl_http_req *req, int status, const cJSON *body)
{
	char *text = body ? cJSON_PrintUnformatted(body) : NULL;
	int ret;

	if (body != NULL && text == NULL) {
		ret = dl_http_reply_error(req, 500, "internal_error", "could not encode the response");
		return ret == -EPIPE ? ret : -ENOMEM;
	}
	ret = dl_http_reply_json_text(req, status, text, text ? strlen(text) : 0);
	cJSON_free(text);
	return ret;
}

static int reply_error_va(dl_http_req *req, int status, const char *code, const cJSON *details,
			  const char *fmt, va_list ap)
{
	char message[1024];
	char *body;
	int ret;

	vsnprintf(message, sizeof(message), fmt, ap);
	body = error_body(code, message, req->id, details);
	if (body == NULL) {
		ret = req_send(req, 500, NULL, NULL, 0);
		return ret == -EPIPE ? ret : -ENOMEM;
	}
	ret = dl_http_reply_json_text(req, status, body, strlen(body));
	free(body);
	return ret;
}

int dl_http_reply_error(dl_http_req *req, int status, const char *code, const char *fmt, ...)
{
	va_list ap;
	int ret;

	va_start(ap, fmt);
	ret = reply_error_va(req, status, code, NULL, fmt, ap);
	va_end(ap);
	return ret;
}

int dl_http_reply_error_details(dl_http_req *req, int status, const char *code,
				const cJSON *details, const char *fmt, ...)
{
	va_list ap;
	int ret;

	va_start(ap, fmt);
	ret = reply_error_va(req, status, code, details, fmt, ap);
	va_end(ap);
	return ret;
}

const char *dl_http_req_method(const dl_http_req *req) { return req->method; }
const char *dl_http_req_path(const dl_http_req *req) { return req->path; }
const char *dl_http_req_route(const dl_http_req *req) { return req->route_name; }
const char *dl_http_req_id(const dl_http_req *req) { return req->id; }
bool dl_http_req_closed(const dl_http_req *req) { return req->closed; }

const char *dl_http_req_param(const dl_http_req *req, const char *name)
{
	struct evkeyval *kv;

	TAILQ_FOREACH(kv, &req->params, next)
		if (strcmp(kv->key, name) == 0)
			return kv->value;
	return NULL;
}

const char *dl_http_req_query(const dl_http_req *req, const char *name)
{
	struct evkeyval *kv;

	/* evhttp_find_header() is case-insensitive; query names are not. */
	TAILQ_FOREACH(kv, &req->query, next)
		if (strcmp(kv->key, name) == 0)
			return kv->value;
	return NULL;
}

const char *dl_http_req_header(const dl_http_req *req, const char *name)
{
	return evhttp_find_header(&req->in_headers, name);
}

const char *dl_http_req_body(const dl_http_req *req, size_t *ret_len)
{
	if (ret_len != NULL)
		*ret_len = req->body_len;
	return req->body;
}

const char *dl_http_req_peer(const dl_http_req *req, int *ret_port)
{
	if (ret_port != NULL)
		*ret_port = req->peer_port;
	return req->peer;
}

int dl_http_req_set_header(dl_http_req *req, const char *name, const char *value)
{
	if (!is_header_name(name) || !is_header_value(value))
		return -EINVAL;
	if (evhttp_add_header(&req->out_headers, name, value) != 0)
		return -ENOMEM;
	return 0;
}

static bool is_json_type(const char *ct)
{
	static const char want[] = "application/json";
	size_t n = sizeof(want) - 1;

	if (ct == NULL)
		return false;
	while (*ct == ' ' || *ct == '\t')
		ct++;
	if (strncasecmp(ct, want, n) != 0)
		return false;
	ct += n;
	while (*ct == ' ' || *ct == '\t')
		ct++;
	return *ct == '\0' || *ct == ';';
}

int dl_http_req_json(dl_http_req *req, int max_depth, cJSON **ret, char *errbuf, size_t errlen)
{
	const char *p = req->body;
	const char *end = NULL;
	size_t len = req->body_len;
	int depth = 0;
	bool in_str = false, esc = false;
	cJSON *root;

	if (!is_json_type(dl_http_req_header(req, "Content-Type"))) {
		set_err(errbuf, errlen, "Content-Type must be application/json");
		return -EMEDIUMTYPE;
	}
	if (max_depth <= 0)
		max_depth = DL_HTTP_DEFAULT_DEPTH;
	if (max_depth > DL_HTTP_MAX_DEPTH)
		max_depth = DL_HTTP_MAX_DEPTH;
	if (len == 0) {
		set_err(errbuf, errlen, "the request body is empty");
		return -EINVAL;
	}
	/* Count nesting before cJSON recurses into it: brackets inside strings do not count. */
	for (size_t i = 0; i < len; i++) {
		char c = p[i];

		if (in_str) {
			if (esc)
				esc = false;
			else if (c == '\\')
				esc = true;
			else if (c == '"')
				in_str = false;
			continue;
		}
		if (c == '"') {
			in_str = true;
		} else if (c == '[' || c == '{') {
			if (++depth > max_depth) {
				set_err(errbuf, errlen,
					"JSON nesting deeper than %d levels at byte %zu", max_depth,
					i);
				return -E2BIG;
			}
		} else if ((c == ']' || c == '}') && depth > 0) {
			depth--;
		}
	}
	root = cJSON_ParseWithLengthOpts(p, len, &end, 0);
	if (root == NULL) {
		size_t off = (end != NULL && end >= p) ? (size_t)(end - p) : 0;

		set_err(errbuf, errlen, "invalid JSON at byte %zu", off);
		return -EINVAL;
	}
	for (size_t off = (size_t)(end - p); off < len; off++) {
		if (p[off] != ' ' && p[off] != '\t' && p[off] != '\r' && p[off] != '\n') {
			cJSON_Delete(root);
			set_err(errbuf, errlen, "unexpected data after the JSON value at byte %zu",
				off);
			return -EINVAL;
		}
	}
	*ret = root;
	return 0;
}

/* ---- connections ---- */

/* Removes c from the server's lists and counts and frees it. */
static void conn_forget(struct dl_http_conn *c)
{
	dl_http_server *s = c->s;
	struct dl_http_conn **pp;

	if (c->prev != NULL)
		c->prev->next = c->next;
	else if (s->conns == c)
		s->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	for (pp = &s->fix_head; *pp != NULL; pp = &(*pp)->fix_next) {
		if (*pp == c) {
			*pp = c->fix_next;
			break;
		}
	}
	s->nconn--;
	if (c->rejected)
		s->nrejected--;
	else
		s->nadmitted--;
	free(c);
}

/* evhttp is freeing the connection: requests still held by handlers become closed (their
 * evhttp_request is freed with the connection), and the connection is forgotten. */
static void on_conn_close(struct evhttp_connection *evcon, void *arg)
{
	struct dl_http_conn *c = arg;
	dl_http_server *s = c->s;
	dl_http_req *req, *next;

	for (req = s->inflight; req != NULL; req = next) {
		next = req->next;
		if (req->evcon != evcon)
			continue;
		req_mark_closed(req, true);
	}
	if (c->out_cb != NULL)
		evbuffer_remove_cb_entry(bufferevent_get_output(c->bev), c->out_cb);
	if (c->in_cb != NULL)
		evbuffer_remove_cb_entry(bufferevent_get_input(c->bev), c->in_cb);
	conn_forget(c);
}

/* Input watcher: counts what the client sent, so a 400 from evhttp after more than
 * max_header_bytes arrived can be told apart as an oversized header (431). */
static void on_input(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct dl_http_conn *c = arg;

	(void)buf;
	c->in_since_reply += info->n_added;
}

/* Output watcher: a response starts on an empty output buffer; look at it before it is
 * written (socket writes happen on a later loop turn than this tick). */
static void on_output(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct dl_http_conn *c = arg;
	dl_http_server *s = c->s;

	(void)buf;
	if (c->fixing || c->fix_pending || info->n_added == 0 || info->orig_size != 0)
		return;
	c->in_since_reply_at_fix = c->in_since_reply;
	c->in_since_reply = 0;
	c->fix_pending = true;
	c->fix_next = s->fix_head;
	s->fix_head = c;
	event_active(s->tick, EV_TIMEOUT, 1);
}

static const char *evhttp_error_code(int status, char *msg, size_t msglen,
				     const dl_http_limits *lim)
{
	switch (status) {
	case 431:
		snprintf(msg, msglen, "the request headers exceed %zu bytes",
			 lim->max_header_bytes);
		return "header_too_large";
	case 413:
		snprintf(msg, msglen,
			 "the request is too large: headers are limited to %zu bytes and the "
			 "body to %zu bytes",
			 lim->max_header_bytes, lim->max_body_bytes);
		return "payload_too_large";
	case 400:
		snprintf(msg, msglen, "the HTTP request is malformed");
		return "bad_request";
	case 417:
		snprintf(msg, msglen, "only \"Expect: 100-continue\" is supported");
		return "expectation_failed";
	case 501:
		snprintf(msg, msglen, "the HTTP method is not implemented");
		return "not_implemented";
	case 503:
		snprintf(msg, msglen, "the server is unavailable");
		return "unavailable";
	default:
		snprintf(msg, msglen, "the HTTP request could not be served");
		return "http_error";
	}
}

/* evhttp answers requests it cannot parse, or that exceed its size limits, itself, with an
 * HTML page (libevent 2.1 has no hook for it). Such a page is recognised in the output buffer
 * (a response without X-Request-Id, Content-Type text/html, body "<HTML><HEAD>": every
 * response dl_http makes has X-Request-Id) and replaced, before it is written, by the JSON
 * error with the security headers and a new request id. */
static void fix_evhttp_error(struct dl_http_conn *c)
{
	dl_http_server *s = c->s;
	struct evbuffer *out = bufferevent_get_output(c->bev);
	struct evbuffer *resp = NULL;
	struct evbuffer_ptr end;
	char head[2048 + 16], reason[64], msg[256], id[DL_HTTP_ID_MAX + 1];
	size_t total = evbuffer_get_length(out), head_len, clen, n, rlen;
	const char *code, *p, *eol, *reason_override = NULL;
	char *body = NULL;
	int status;

	end = evbuffer_search(out, "\r\n\r\n", 4, NULL);
	if (end.pos < 0 || (size_t)end.pos + 4 + 12 >= sizeof(head))
		return;
	head_len = (size_t)end.pos + 4;
	n = total < head_len + 12 ? total : head_len + 12;
	if (evbuffer_copyout(out, head, n) != (ev_ssize_t)n || n < head_len + 12)
		return;
	head[n] = '\0';
	if (strncmp(head, "HTTP/1.", 7) != 0 || strncmp(head + head_len, "<HTML><HEAD>", 12) != 0)
		return;
	head[head_len] = '\0';
	if (strcasestr(head, "\r\nX-Request-Id:") != NULL ||
	    strcasestr(head, "\r\nContent-Type: text/html") == NULL)
		return;
	if (head_len < 13 || head[8] != ' ' || head[9] < '1' || head[9] > '5' || head[10] < '0' ||
	    head[10] > '9' || head[11] < '0' || head[11] > '9')
		return;
	status = (head[9] - '0') * 100 + (head[10] - '0') * 10 + (head[11] - '0');
	/* evhttp reports headers over its limit as a plain 400. */
	if (status == 400 && c->in_since_reply_at_fix > s->limits.max_header_bytes) {
		status = 431;
		reason_override = "Request Header Fields Too Large";
	}
	p = strcasestr(head, "\r\nContent-Length:");
	if (p == NULL)
		return;
	clen = strtoul(p + 17, NULL, 10);
	if (clen > total - head_len)
		return;
	eol = strstr(head + 12, "\r\n");
	rlen = (eol != NULL && eol > head + 13) ? (size_t)(eol - (head + 13)) : 0;
	if (rlen >= sizeof(reason))
		rlen = sizeof(reason) - 1;
	memcpy(reason, head + 13, rlen);
	reason[rlen] = '\0';
	if (reason_override != NULL)
		snprintf(reason, sizeof(reason), "%s", reason_override);

	new_request_id(id);
	code = evhttp_error_code(status, msg, sizeof(msg), &s->limits);
	body = error_body(code, msg, id, NULL);
	resp = evbuffer_new();
	if (body == NULL || resp == NULL)
		goto out_free;
	evbuffer_add_printf(resp, "%.8s %d %s\r\n", head, status, reason);
	for (size_t i = 0; i < sizeof(security_headers) / sizeof(security_headers[0]); i++)
		evbuffer_add_printf(resp, "%s: %s\r\n", security_headers[i][0],
				    security_headers[i][1]);
	evbuffer_add_printf(resp,
			    "X-Request-Id: %s\r\nContent-Type: application/json\r\n"
			    "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
			    id, strlen(body), body);
	c->fixing = true;
	evbuffer_drain(out, head_len + clen);
	evbuffer_prepend_buffer(out, resp);
	c->fixing = false;
	if (s->obs != NULL && !s->freeing)
		s->obs(DL_HTTP_ROUTE_REJECTED, "-", status, 0.0, id, s->obs_opaque);
out_free:
	if (resp != NULL)
		evbuffer_free(resp);
	free(body);
}

/* Adopts the connections accepted since the last turn: finds each evhttp_connection (the
 * callback argument evhttp set on our bufferevent) and sets the close callback and the output
 * watcher. bufferevent_free() clears a bufferevent's callbacks, and our reference keeps the
 * struct alive, so a connection evhttp already dropped is recognised and just forgotten. */
static void adopt_pending(dl_http_server *s)
{
	struct dl_http_conn *c;

	while ((c = s->adopt_head) != NULL) {
		bufferevent_data_cb rcb = NULL, wcb = NULL;
		bufferevent_event_cb ecb = NULL;
		void *arg = NULL;
		struct bufferevent *bev = c->bev;

		s->adopt_head = c->adopt_next;
		c->adopt_next = NULL;
		bufferevent_getcb(bev, &rcb, &wcb, &ecb, &arg);
		if (ecb == NULL || arg == NULL ||
		    evhttp_connection_get_bufferevent(arg) != bev) {
			conn_forget(c);
			bufferevent_decref(bev);
			continue;
		}
		c->evcon = arg;
		c->adopted = true;
		evhttp_connection_set_closecb(c->evcon, on_conn_close, c);
		c->out_cb = evbuffer_add_cb(bufferevent_get_output(bev), on_output, c);
		c->in_cb = evbuffer_add_cb(bufferevent_get_input(bev), on_input, c);
		bufferevent_decref(bev);
	}
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	dl_http_server *s = arg;
	struct dl_http_conn *c;

	(void)fd;
	(void)what;
	adopt_pending(s);
	while ((c = s->fix_head) != NULL) {
		s->fix_head = c->fix_next;
		c->fix_next = NULL;
		c->fix_pending = false;
		fix_evhttp_error(c);
	}
	stream_notify_drain(s);
}

/* evhttp's bufferevent factory: called once per accepted connection, before evhttp has set the
 * connection up. Counts it and decides whether it is over max_connections. */
static struct bufferevent *on_new_bev(struct event_base *base, void *arg)
{
	dl_http_server *s = arg;
	struct dl_http_conn *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL; /* evhttp makes its own; the connection goes uncounted */
	c->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL) {
		free(c);
		return NULL;
	}
	bufferevent_incref(c->bev);
	c->s = s;
	c->rejected = s->nadmitted >= s->limits.max_connections;
	if (c->rejected)
		s->nrejected++;
	else
		s->nadmitted++;
	s->nconn++;
	c->next = s->conns;
	if (s->conns != NULL)
		s->conns->prev = c;
	s->conns = c;
	c->adopt_next = s->adopt_head;
	s->adopt_head = c;
	event_active(s->tick, EV_TIMEOUT, 1);
	return c->bev;
}

static struct dl_http_conn *find_conn(dl_http_server *s, struct evhttp_connection *evcon)
{
	for (struct dl_http_conn *c = s->conns; c != NULL; c = c->next)
		if (c->evcon == evcon)
			return c;
	return NULL;
}

/* ---- routing ---- */

static const char *const route_methods[] = { "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE",
					     "OPTIONS" };

/* Splits a path ("/a/b") into segments in place; returns the count or -1 when there are too
 * many or the path does not start with '/'. "/" has zero segments. */
static int split_path(char *path, char *segs[DL_HTTP_MAX_SEGMENTS])
{
	int n = 0;
	char *p;

	if (path[0] != '/')
		return -1;
	p = path + 1;
	if (*p == '\0')
		return 0;
	for (;;) {
		char *slash = strchr(p, '/');

		if (n == DL_HTTP_MAX_SEGMENTS)
			return -1;
		segs[n++] = p;
		if (slash == NULL)
			break;
		*slash = '\0';
		p = slash + 1;
	}
	return n;
}

static bool route_matches(const struct dl_http_route *r, char *const *segs, int nsegs)
{
	if ((size_t)nsegs != r->nsegs)
		return false;
	for (int i = 0; i < nsegs; i++) {
		if (r->segs[i].param ? segs[i][0] == '\0' : strcmp(r->segs[i].text, segs[i]) != 0)
			return false;
	}
	return true;
}

static void route_free_fields(struct dl_http_route *r)
{
	for (size_t i = 0; i < r->nsegs; i++)
		free(r->segs[i].text);
	free(r->segs);
	free(r->pattern);
	free(r->name);
}

int dl_http_route(dl_http_server *s, const char *method, const char *pattern,
		  dl_http_handler_fn fn, void *opaque, const char *route_name)
{
	struct dl_http_route r = { 0 }, *grown;
	char *copy = NULL, *segs[DL_HTTP_MAX_SEGMENTS];
	bool known = false;
	int n, ret = -ENOMEM;

	if (method == NULL || pattern == NULL || fn == NULL || strcmp(method, "HEAD") == 0)
		return -EINVAL;
	for (size_t i = 0; i < sizeof(route_methods) / sizeof(route_methods[0]); i++)
		known = known || strcmp(method, route_methods[i]) == 0;
	if (!known)
		return -EINVAL;
	for (size_t i = 0; i < s->nroutes; i++)
		if (strcmp(s->routes[i].method, method) == 0 &&
		    strcmp(s->routes[i].pattern, pattern) == 0)
			return -EINVAL;
	copy = strdup(pattern);
	if (copy == NULL)
		return -ENOMEM;
	n = split_path(copy, segs);
	if (n < 0) {
		ret = -EINVAL;
		goto out_free_copy;
	}
	snprintf(r.method, sizeof(r.method), "%s", method);
	r.fn = fn;
	r.opaque = opaque;
	r.pattern = strdup(pattern);
	r.name = strdup(route_name != NULL ? route_name : pattern);
	r.segs = calloc(n > 0 ? (size_t)n : 1, sizeof(*r.segs));
	if (r.pattern == NULL || r.name == NULL || r.segs == NULL)
		goto out_free_route;
	for (int i = 0; i < n; i++) {
		size_t len = strlen(segs[i]);
		bool param = len >= 3 && segs[i][0] == '{' && segs[i][len - 1] == '}';

		if (len == 0 || (!param && (strchr(segs[i], '{') || strchr(segs[i], '}')))) {
			ret = -EINVAL;
			goto out_free_route;
		}
		r.segs[i].param = param;
		r.segs[i].text = param ? strndup(segs[i] + 1, len - 2) : strdup(segs[i]);
		r.nsegs = (size_t)i + 1;
		if (r.segs[i].text == NULL)
			goto out_free_route;
	}
	grown = realloc(s->routes, (s->nroutes + 1) * sizeof(*s->routes));
	if (grown == NULL)
		goto out_free_route;
	s->routes = grown;
	s->routes[s->nroutes++] = r;
	free(copy);
	return 0;

out_free_route:
	route_free_fields(&r);
out_free_copy:
	free(copy);
	return ret;
}

/* Fills req->params from the matched route; false when a value does not decode cleanly. */
void dl_http_server_set_reuseport(dl_http_server *s, bool on)
{
	s->reuseport = on;
}

size_t dl_http_server_nroutes(const dl_http_server *s)
{
	return s->nroutes;
}

int dl_http_server_route(const dl_http_server *s, size_t i, const char **ret_method,
			 const char **ret_pattern)
{
	if (i >= s->nroutes)
		return -ENOENT;
	*ret_method = s->routes[i].method;
	*ret_pattern = s->routes[i].pattern;
	return 0;
}

static bool extract_params(dl_http_req *req, const struct dl_http_route *r, char *const *segs)
{
	for (size_t i = 0; i < r->nsegs; i++) {
		size_t len = 0;
		char *v;
		int rc;

		if (!r->segs[i].param)
			continue;
		v = evhttp_uridecode(segs[i], 0, &len);
		if (v == NULL)
			return false;
		rc = (strlen(v) == len) ? evhttp_add_header(&req->params, r->segs[i].text, v) : -1;
		free(v);
		if (rc != 0)
			return false;
	}
	return true;
}

static void append_allow(char *allow, size_t len, const char *m)
{
	size_t used = strlen(allow);

	snprintf(allow + used, len - used, "%s%s", used ? ", " : "", m);
}

/* Fills the request wrapper from evhttp's request; false on allocation failure. */
static bool req_fill(dl_http_server *s, dl_http_req *req, struct evhttp_request *evreq)
{
	struct evkeyval *kv;
	struct evbuffer *in = evhttp_request_get_input_buffer(evreq);
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(evreq);
	const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
	const char *xid, *origin;
	char *addr = NULL;
	ev_uint16_t port = 0;

	req->s = s;
	req->evreq = evreq;
	req->evcon = evhttp_request_get_connection(evreq);
	clock_gettime(CLOCK_MONOTONIC, &req->start);
	snprintf(req->method, sizeof(req->method), "%s",
		 method_name(evhttp_request_get_command(evreq)));
	req->head = evhttp_request_get_command(evreq) == EVHTTP_REQ_HEAD;
	TAILQ_FOREACH(kv, evhttp_request_get_input_headers(evreq), next)
		if (evhttp_add_header(&req->in_headers, kv->key, kv->value) != 0)
			return false;
	xid = evhttp_find_header(&req->in_headers, "X-Request-Id");
	if (dl_id_is_valid_token(xid, DL_HTTP_ID_MAX))
		snprintf(req->id, sizeof(req->id), "%s", xid);
	else
		new_request_id(req->id);
	if (req->evcon != NULL)
		evhttp_connection_get_peer(req->evcon, &addr, &port);
	snprintf(req->peer, sizeof(req->peer), "%s", addr != NULL ? addr : "");
	req->peer_port = port;
	req->path = strdup(path != NULL && path[0] != '\0' ? path : "/");
	req->body_len = evbuffer_get_length(in);
	req->body = malloc(req->body_len + 1);
	if (req->path == NULL || req->body == NULL)
		return false;
	if (evbuffer_remove(in, req->body, req->body_len) != (int)req->body_len)
		return false;
	req->body[req->body_len] = '\0';
	origin = evhttp_find_header(&req->in_headers, "Origin");
	if (cors_allowed(s, origin) && (req->cors_origin = strdup(origin)) == NULL)
		return false;
	return true;
}

/* The socket of a held request reported EV_CLOSED: the client closed (or half-closed) its
 * side, so nobody will read the reply. Drop the connection now, as evhttp in libevent 2.1 does
 * not read while a request is being handled and would only notice when the reply fails. */
static void on_client_gone(evutil_socket_t fd, short what, void *arg)
{
	dl_http_req *req = arg;
	struct evhttp_connection *evcon = req->evcon;

	(void)fd;
	(void)what;
	req_mark_closed(req, true);
	/* Runs on_conn_close for the connection (nothing else is held on it). */
	evhttp_connection_free(evcon);
}

/* A handler returned without replying: watch for the client going away meanwhile. Needs a
 * backend with early-close detection (epoll); without it the reply is still safe, just written
 * to a closed socket. */
static void watch_client(dl_http_server *s, dl_http_req *req)
{
	struct bufferevent *bev = evhttp_connection_get_bufferevent(req->evcon);
	evutil_socket_t fd = bev != NULL ? bufferevent_getfd(bev) : -1;

	if (fd < 0 || !(event_base_get_features(s->base) & EV_FEATURE_EARLY_CLOSE))
		return;
	req->watch = event_new(s->base, fd, EV_CLOSED, on_client_gone, req);
	if (req->watch != NULL && event_add(req->watch, NULL) != 0) {
		event_free(req->watch);
		req->watch = NULL;
	}
}

static void on_request(struct evhttp_request *evreq, void *arg)
{
	dl_http_server *s = arg;
	dl_http_req *req;
	char *pathcopy = NULL, *segs[DL_HTTP_MAX_SEGMENTS];
	char allow[64] = "";
	const struct dl_http_route *match = NULL;
	const struct evhttp_uri *uri;
	const char *query;
	unsigned mask = 0;
	int nsegs;

	adopt_pending(s);
	req = calloc(1, sizeof(*req));
	if (req == NULL) {
		evhttp_send_reply(evreq, 503, NULL, NULL);
		return;
	}
	TAILQ_INIT(&req->params);
	TAILQ_INIT(&req->query);
	TAILQ_INIT(&req->in_headers);
	TAILQ_INIT(&req->out_headers);
	if (!req_fill(s, req, evreq)) {
		req_free(req);
		evhttp_send_reply(evreq, 503, NULL, NULL);
		return;
	}
	req->next = s->inflight;
	if (s->inflight != NULL)
		s->inflight->prev = req;
	s->inflight = req;
	s->ninflight++;

	if (s->nrejected > 0) {
		struct dl_http_conn *c = find_conn(s, req->evcon);

		if (c != NULL && c->rejected) {
			req->conn_close = true;
			req->route_name = strdup(DL_HTTP_ROUTE_REJECTED);
			dl_http_req_set_header(req, "Retry-After", "1");
			dl_http_reply_error(req, 503, "too_many_connections",
					    "the server has too many open connections; retry later");
			return;
		}
	}

	pathcopy = strdup(req->path);
	nsegs = pathcopy != NULL ? split_path(pathcopy, segs) : -1;
	for (size_t i = 0; nsegs >= 0 && i < s->nroutes; i++) {
		const struct dl_http_route *r = &s->routes[i];

		if (!route_matches(r, segs, nsegs))
			continue;
		for (size_t m = 0; m < sizeof(route_methods) / sizeof(route_methods[0]); m++)
			if (strcmp(r->method, route_methods[m]) == 0)
				mask |= 1u << m;
		if (strcmp(r->method, "GET") == 0)
			mask |= 1u << 1; /* HEAD */
		if (match == NULL && (strcmp(r->method, req->method) == 0 ||
				      (req->head && strcmp(r->method, "GET") == 0)))
			match = r;
	}
	if (mask != 0) {
		mask |= 1u << 6; /* OPTIONS, answered below when no route takes it */
		for (size_t m = 0; m < sizeof(route_methods) / sizeof(route_methods[0]); m++)
			if (mask & (1u << m))
				append_allow(allow, sizeof(allow), route_methods[m]);
	}
	req->route_name = strdup(match != NULL ? match->name : DL_HTTP_ROUTE_UNMATCHED);
	if (req->route_name == NULL) {
		dl_http_reply_error(req, 503, "out_of_memory", "the server is out of memory");
		goto out_free_path;
	}
	if (match == NULL && mask == 0) {
		dl_http_reply_error(req, 404, "not_found", "no resource at %.200s", req->path);
		goto out_free_path;
	}
	if (match == NULL && strcmp(req->method, "OPTIONS") == 0) {
		dl_http_req_set_header(req, "Allow", allow);
		if (req->cors_origin != NULL &&
		    dl_http_req_header(req, "Access-Control-Request-Method") != NULL) {
			dl_http_req_set_header(req, "Access-Control-Allow-Methods", allow);
			dl_http_req_set_header(req, "Access-Control-Allow-Headers",
					       s->cors_headers != NULL ? s->cors_headers
								       : DL_HTTP_CORS_HEADERS);
			dl_http_req_set_header(req, "Access-Control-Max-Age", "600");
		}
		req_send(req, 204, NULL, NULL, 0);
		goto out_free_path;
	}
	if (match == NULL) {
		dl_http_req_set_header(req, "Allow", allow);
		dl_http_reply_error(req, 405, "method_not_allowed",
				    "method %s is not allowed on %.200s; allowed: %s", req->method,
				    req->path, allow);
		goto out_free_path;
	}
	if (!extract_params(req, match, segs)) {
		dl_http_reply_error(req, 400, "invalid_path",
				    "a path parameter is not valid percent-encoded text");
		goto out_free_path;
	}
	uri = evhttp_request_get_evhttp_uri(evreq);
	query = uri != NULL ? evhttp_uri_get_query(uri) : NULL;
	if (query != NULL && query[0] != '\0' && evhttp_parse_query_str(query, &req->query) != 0) {
		dl_http_reply_error(req, 400, "invalid_query",
				    "the query string is malformed: use name=value pairs joined "
				    "by &");
		goto out_free_path;
	}
	free(pathcopy);
	/* The handler owns req from here (it may reply now or later). */
	s->dispatching = req;
	match->fn(req, match->opaque);
	if (s->dispatching == req) {
		s->dispatching = NULL;
		watch_client(s, req);
	}
	return;

out_free_path:
	free(pathcopy);
}

/* ---- server ---- */

int dl_http_server_new(struct event_base *base, const dl_http_limits *limits, char *errbuf,
		       size_t errlen, dl_http_server **ret)
{
	dl_http_limits lim = { 0 };
	dl_http_server *s;

	if (base == NULL || ret == NULL) {
		set_err(errbuf, errlen, "dl_http_server_new: base and ret are required");
		return -EINVAL;
	}
	if (limits != NULL)
		lim = *limits;
	if (lim.max_body_bytes == 0)
		lim.max_body_bytes = DL_HTTP_DEFAULT_BODY;
	if (lim.max_header_bytes == 0)
		lim.max_header_bytes = DL_HTTP_DEFAULT_HEADERS;
	if (lim.max_connections == 0)
		lim.max_connections = DL_HTTP_DEFAULT_CONNECTIONS;
	if (lim.request_timeout_s == 0)
		lim.request_timeout_s = DL_HTTP_DEFAULT_TIMEOUT_S;
	if (lim.max_body_bytes > (size_t)INT_MAX || lim.max_header_bytes > (size_t)INT_MAX ||
	    lim.max_header_bytes < 256 || lim.request_timeout_s < 0 ||
	    lim.request_timeout_s > 86400) {
		set_err(errbuf, errlen,
			"HTTP limits out of range: body and headers up to %d bytes, headers at "
			"least 256, timeout 1-86400 s",
			INT_MAX);
		return -EINVAL;
	}
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		goto out_nomem;
	s->base = base;
	s->limits = lim;
	s->http = evhttp_new(base);
	if (s->http == NULL)
		goto out_free_server;
	s->tick = event_new(base, -1, 0, on_tick, s);
	if (s->tick == NULL)
		goto out_free_server;
	evhttp_set_max_body_size(s->http, (ev_ssize_t)lim.max_body_bytes);
	evhttp_set_max_headers_size(s->http, (ev_ssize_t)lim.max_header_bytes);
	evhttp_set_timeout(s->http, lim.request_timeout_s);
	evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
						    EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
						    EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
						    EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
	/* Read (and drop) an oversized body before answering 413, so the client, still
	 * sending, reads the answer instead of a connection reset. */
	evhttp_set_flags(s->http, EVHTTP_SERVER_LINGERING_CLOSE);
	evhttp_set_gencb(s->http, on_request, s);
	evhttp_set_bevcb(s->http, on_new_bev, s);
	*ret = s;
	return 0;

out_free_server:
	dl_http_server_free(s);
out_nomem:
	set_err(errbuf, errlen, "dl_http_server_new: out of memory");
	return -ENOMEM;
}

int dl_http_server_listen(dl_http_server *s, const char *addr, int port, int *ret_port)
{
	struct evhttp_bound_socket *bound, **grown;
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);
	int bound_port, ret = -ENOMEM;

	if (s->draining)
		return -ESHUTDOWN;
	if (addr == NULL || port < 0 || port > 65535)
		return -EINVAL;
	errno = 0;
	if (s->reuseport) {
		struct sockaddr_storage want;
		int wantlen = (int)sizeof(want);
		char spec[128];
		struct evconnlistener *l;

		/* libevent's parser refuses port 0 written out: leave it off for "any port". */
		if (port == 0)
			snprintf(spec, sizeof(spec), strchr(addr, ':') ? "[%s]" : "%s", addr);
		else
			snprintf(spec, sizeof(spec), strchr(addr, ':') ? "[%s]:%d" : "%s:%d", addr,
				 port);
		if (evutil_parse_sockaddr_port(spec, (struct sockaddr *)&want, &wantlen) != 0)
			return -EINVAL;
		l = evconnlistener_new_bind(s->base, NULL, NULL,
					    LEV_OPT_REUSEABLE | LEV_OPT_REUSEABLE_PORT |
						    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
					    -1, (struct sockaddr *)&want, wantlen);
		if (l == NULL)
			return errno != 0 ? -errno : -EINVAL;
		bound = evhttp_bind_listener(s->http, l);
		if (bound == NULL) {
			evconnlistener_free(l);
			return -ENOMEM;
		}
	} else {
		bound = evhttp_bind_socket_with_handle(s->http, addr, (ev_uint16_t)port);
	}
	if (bound == NULL)
		return errno != 0 ? -errno : -EINVAL;
	if (getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&ss, &sslen) != 0) {
		ret = -errno;
		goto out_unbind;
	}
	if (ss.ss_family == AF_INET)
		bound_port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	else if (ss.ss_family == AF_INET6)
		bound_port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	else {
		ret = -EAFNOSUPPORT;
		goto out_unbind;
	}
	grown = realloc(s->bound, (s->nbound + 1) * sizeof(*s->bound));
	if (grown == NULL)
		goto out_unbind;
	s->bound = grown;
	s->bound[s->nbound++] = bound;
	if (ret_port != NULL)
		*ret_port = bound_port;
	return 0;

out_unbind:
	evhttp_del_accept_socket(s->http, bound);
	return ret;
}

int dl_http_server_set_cors(dl_http_server *s, const char *const *origins, size_t n,
			    const char *allow_headers)
{
	char **list = NULL, *hdrs = NULL;

	if (n > 0 && origins == NULL)
		return -EINVAL;
	if (allow_headers != NULL && !is_header_value(allow_headers))
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (origins[i] == NULL || !is_header_value(origins[i]) || origins[i][0] == '\0')
			return -EINVAL;
	if (n > 0) {
		list = calloc(n, sizeof(*list));
		if (list == NULL)
			return -ENOMEM;
		for (size_t i = 0; i < n; i++) {
			list[i] = strdup(origins[i]);
			if (list[i] == NULL)
				goto out_free_list;
		}
	}
	if (allow_headers != NULL && (hdrs = strdup(allow_headers)) == NULL)
		goto out_free_list;
	for (size_t i = 0; i < s->ncors; i++)
		free(s->cors[i]);
	free(s->cors);
	free(s->cors_headers);
	s->cors = list;
	s->ncors = n;
	s->cors_headers = hdrs;
	return 0;

out_free_list:
	for (size_t i = 0; i < n; i++)
		free(list[i]);
	free(list);
	return -ENOMEM;
}

void dl_http_server_set_observer(dl_http_server *s, dl_http_observer_fn fn, void *opaque)
{
	s->obs = fn;
	s->obs_opaque = fn != NULL ? opaque : NULL;
}

void dl_http_server_stop_accepting(dl_http_server *s)
{
	for (size_t i = 0; i < s->nbound; i++)
		evhttp_del_accept_socket(s->http, s->bound[i]);
	s->nbound = 0;
	if (!s->draining && s->streams != NULL) {
		/* Told on the next tick, not from inside the caller's drain. */
		while (s->streams != NULL) {
			struct dl_http_stream *st = s->streams;

			stream_unlink(s, st);
			st->list = &s->drain_notify;
			st->next = s->drain_notify;
			if (s->drain_notify != NULL)
				s->drain_notify->prev = st;
			s->drain_notify = st;
			s->nstreams++;
		}
		event_active(s->tick, EV_TIMEOUT, 1);
	}
	s->draining = true;
}

size_t dl_http_server_inflight(const dl_http_server *s)
{
	return s->ninflight;
}

size_t dl_http_server_connections(const dl_http_server *s)
{
	return s->nconn;
}

size_t dl_http_server_streams(const dl_http_server *s)
{
	return s->nstreams;
}

void dl_http_server_free(dl_http_server *s)
{
	struct dl_http_conn *c;
	dl_http_req *req;

	if (s == NULL)
		return;
	s->freeing = true;
	/* Closing every connection runs on_conn_close for the adopted ones. */
	if (s->http != NULL)
		evhttp_free(s->http);
	while ((c = s->adopt_head) != NULL) {
		s->adopt_head = c->adopt_next;
		bufferevent_decref(c->bev);
		conn_forget(c);
	}
	while (s->conns != NULL)
		conn_forget(s->conns);
	while ((req = s->inflight) != NULL)
		req_mark_closed(req, false);
	if (s->tick != NULL)
		event_free(s->tick);
	for (size_t i = 0; i < s->nroutes; i++)
		route_free_fields(&s->routes[i]);
	free(s->routes);
	for (size_t i = 0; i < s->ncors; i++)
		free(s->cors[i]);
	free(s->cors);
	free(s->cors_headers);
	free(s->bound);
	free(s);
}

/* ---- streams ---- */

static void stream_link(dl_http_server *s, struct dl_http_stream **head, struct dl_http_stream *st)
{
	st->list = head;
	st->prev = NULL;
	st->next = *head;
	if (*head != NULL)
		(*head)->prev = st;
	*head = st;
	s->nstreams++;
}

/* Takes st off whichever of the server's lists it is on. */
static void stream_unlink(dl_http_server *s, struct dl_http_stream *st)
{
	if (st->list == NULL)
		return;
	if (st->prev != NULL)
		st->prev->next = st->next;
	else
		*st->list = st->next;
	if (st->next != NULL)
		st->next->prev = st->prev;
	st->prev = st->next = NULL;
	st->list = NULL;
	s->nstreams--;
}

/* Tells every stream waiting on drain_notify that the server drains, one at a time: each is
 * moved back to the streams list before its callback, which may end it (or, through a failed
 * write, close others, which leaves them off both lists). */
static void stream_notify_drain(dl_http_server *s)
{
	struct dl_http_stream *st;

	while ((st = s->drain_notify) != NULL) {
		stream_unlink(s, st);
		stream_link(s, &s->streams, st);
		st->fn(st, DL_HTTP_STREAM_DRAINING, st->opaque);
	}
}

int dl_http_stream_start(dl_http_req *req, int status, const char *content_type,
			 dl_http_stream_fn on_event, void *opaque, dl_http_stream **ret)
{
	dl_http_server *s = req->s;
	struct dl_http_stream *st;
	struct evkeyvalq *hdrs;
	struct bufferevent *bev;

	if (req->closed) {
		req_free(req);
		return -EPIPE;
	}
	if (status < 200 || status > 599 || status == 204 || status == 304 || on_event == NULL ||
	    ret == NULL || (content_type != NULL && !is_header_value(content_type))) {
		int rc = dl_http_reply_error(req, 500, "internal_error", "invalid stream response");

		return rc == -EPIPE ? rc : -EINVAL;
	}
	st = calloc(1, sizeof(*st));
	if (st == NULL) {
		int rc = req_send(req, 500, NULL, NULL, 0);

		return rc == -EPIPE ? rc : -ENOMEM;
	}
	st->req = req;
	st->status = status;
	st->fn = on_event;
	st->opaque = opaque;
	req->stream = st;
	if (s->dispatching == req) {
		s->dispatching = NULL;
		watch_client(s, req);
	}
	hdrs = req_out_headers(req, "no-cache");
	evhttp_remove_header(hdrs, "Content-Type");
	evhttp_remove_header(hdrs, "Content-Length");
	evhttp_add_header(hdrs, "Content-Type",
			  content_type != NULL ? content_type : "text/event-stream");
	evhttp_add_header(hdrs, "X-Accel-Buffering", "no");
	evhttp_send_reply_start(req->evreq, status, NULL);
	/* evhttp re-enables reading while it writes (to see a close) with the request timeout as
	 * read timeout, which would cut an idle stream: no read timeout, and a small read limit
	 * so a client sending while it streams cannot grow the input buffer. */
	bev = evhttp_connection_get_bufferevent(req->evcon);
	if (bev != NULL) {
		struct timeval wtv = { s->limits.request_timeout_s, 0 };

		bufferevent_set_timeouts(bev, NULL, &wtv);
		bufferevent_setwatermark(bev, EV_READ, 0, 4096);
		/* libevent writes at most 16 KiB per connection and loop turn by default: a
		 * stream fed faster than that would pile up even for a client reading at once. */
		bufferevent_set_max_single_write(bev, DL_HTTP_STREAM_MAX_WRITE);
	}
	stream_link(s, s->draining ? &s->drain_notify : &s->streams, st);
	if (s->draining)
		event_active(s->tick, EV_TIMEOUT, 1);
	*ret = st;
	return 0;
}

int dl_http_stream_write(dl_http_stream *st, const void *data, size_t len)
{
	dl_http_req *req = st->req;
	struct evbuffer *buf;

	if (req->closed)
		return -EPIPE;
	if (len == 0)
		return 0;
	buf = evbuffer_new();
	if (buf == NULL || evbuffer_add(buf, data, len) != 0) {
		if (buf != NULL)
			evbuffer_free(buf);
		return -ENOMEM;
	}
	evhttp_send_reply_chunk(req->evreq, buf);
	evbuffer_free(buf);
	return 0;
}

size_t dl_http_stream_queued(const dl_http_stream *st)
{
	struct bufferevent *bev;

	if (st->req->closed || st->req->evcon == NULL)
		return 0;
	bev = evhttp_connection_get_bufferevent(st->req->evcon);
	return bev != NULL ? evbuffer_get_length(bufferevent_get_output(bev)) : 0;
}

bool dl_http_stream_closed(const dl_http_stream *st)
{
	return st->req->closed;
}

const dl_http_req *dl_http_stream_req(const dl_http_stream *st)
{
	return st->req;
}

void dl_http_stream_end(dl_http_stream *st)
{
	dl_http_req *req;
	dl_http_server *s;

	if (st == NULL)
		return;
	req = st->req;
	s = req->s;
	if (!req->closed) {
		struct bufferevent *bev = evhttp_connection_get_bufferevent(req->evcon);

		stream_unlink(s, st);
		req_unlink(req);
		if (req->watch != NULL) {
			event_free(req->watch);
			req->watch = NULL;
		}
		if (bev != NULL) {
			struct timeval tv = { s->limits.request_timeout_s, 0 };

			/* Back to the connection's ordinary limits for a next request. */
			bufferevent_setwatermark(bev, EV_READ, 0, 0);
			bufferevent_set_timeouts(bev, &tv, &tv);
		}
		/* Unlinked first: if evhttp closes the connection from inside, the close
		 * callback must not find this request. */
		evhttp_send_reply_end(req->evreq);
		if (s->obs != NULL && !s->freeing)
			s->obs(req->route_name, req->method, st->status, elapsed_s(&req->start),
			       req->id, s->obs_opaque);
	}
	req->stream = NULL;
	req_free(req);
	free(st);
}
