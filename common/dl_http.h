/* SPDX-License-Identifier: Apache-2.0 */
/* dl_http: an HTTP/1.1 server on libevent's evhttp with routing, limits, request ids, JSON
 * bodies and errors, security and CORS headers, async replies and graceful drain. */
#ifndef DL_COMMON_HTTP_H
#define DL_COMMON_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>
#include <event2/event.h>

typedef struct dl_http_server dl_http_server;
typedef struct dl_http_req dl_http_req;

/* Limits a client can push on. A zero field takes the default shown.
 * - Body and header sizes are enforced by evhttp while it reads, before any handler runs: an
 *   oversized body (declared Content-Length, chunked, or Expect: 100-continue) is read and
 *   dropped, then answered 413 "payload_too_large"; oversized headers get 431
 *   "header_too_large"; a request evhttp cannot parse gets 400 "bad_request". evhttp in
 *   libevent 2.1 writes these as HTML pages; dl_http replaces each in the output buffer, before
 *   it reaches the socket, by the JSON error body with the security headers and a new request
 *   id. The connection is closed after such an answer.
 * - A connection accepted while max_connections are already served is kept only to answer
 *   its first request 503 "too_many_connections" with Retry-After: 1 and Connection: close
 *   (an idle one is closed by the request timeout).
 * - request_timeout_s bounds idle keep-alive connections and slow reads/writes; it does not
 *   bound how long a handler may hold a request. */
typedef struct dl_http_limits {
	size_t max_body_bytes;    /* request body after transfer decoding; default 1 MiB */
	size_t max_header_bytes;  /* request line plus header lines; default 16 KiB */
	unsigned max_connections; /* open client connections served at once; default 1024 */
	int request_timeout_s;    /* read/write inactivity on a connection; default 30 */
} dl_http_limits;

/* Route names the observer sees for requests that reached no handler. */
#define DL_HTTP_ROUTE_UNMATCHED "_unmatched" /* 404, 405, OPTIONS answered by dl_http */
#define DL_HTTP_ROUTE_REJECTED "_rejected"   /* refused before routing: size, syntax, 503 cap */

/* Status the observer sees for a request whose client went away before the reply. */
#define DL_HTTP_STATUS_CLIENT_CLOSED 499

/* A route handler. It owns req from this call until it calls exactly one dl_http_reply_*
 * function, which consumes req; it may return first and reply later from the same loop
 * (an async reply). While req is held, a client that closes its side of the connection
 * (detected with EV_CLOSED on epoll) has the connection dropped at once: req becomes closed
 * (dl_http_req_closed), its strings stay valid, and the eventual reply only frees it and
 * returns -EPIPE. Runs on the loop thread. */
typedef void (*dl_http_handler_fn)(dl_http_req *req, void *opaque);

/* Called once per finished request: after the reply was handed to the connection, or when the
 * client went away first (status DL_HTTP_STATUS_CLIENT_CLOSED). method is "-" and route_name
 * DL_HTTP_ROUTE_REJECTED when the request was refused before it could be parsed. The strings
 * are valid during the call only. Runs on the loop thread. */
typedef void (*dl_http_observer_fn)(const char *route_name, const char *method, int status,
				    double duration_s, const char *request_id, void *opaque);

/* Creates a server on base with limits (NULL = all defaults). It listens nowhere until
 * dl_http_server_listen(). Returns 0 and *ret, or -EINVAL (bad limit) / -ENOMEM with text in
 * errbuf; *ret untouched on failure. The caller owns the server (dl_http_server_free) and base
 * must outlive it. Loop thread only, like every function in this header. */
int dl_http_server_new(struct event_base *base, const dl_http_limits *limits, char *errbuf,
		       size_t errlen, dl_http_server **ret);

/* Listens on addr ("127.0.0.1", "0.0.0.0", "::1") and port (0 = any free port; the port
 * actually bound goes to *ret_port when ret_port is not NULL). May be called more than once.
 * Returns 0, -EINVAL (bad address or port), -ESHUTDOWN after dl_http_server_stop_accepting(),
 * or the negative errno of the failed bind (for example -EADDRINUSE); *ret_port untouched then. */
int dl_http_server_listen(dl_http_server *s, const char *addr, int port, int *ret_port);

/* With on, later dl_http_server_listen() calls bind with SO_REUSEPORT, so several processes
 * (replicas of a service on one host) can listen on the same port and the kernel spreads the
 * connections between them. Off by default. */
void dl_http_server_set_reuseport(dl_http_server *s, bool on);

/* Adds a route: method ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"; a GET route also
 * answers HEAD), pattern of literal segments and {name} segments ("/v1/anomalies/{id}", matched
 * exactly, segment by segment, no trailing slash folding), the handler with its opaque, and
 * route_name for metrics (copied; NULL = the pattern). Routes are tried in the order added.
 * Unknown paths get 404, known paths with another method 405 with an Allow header (both JSON).
 * Returns 0, -EINVAL (bad method or pattern, duplicate method+pattern) or -ENOMEM. */
int dl_http_route(dl_http_server *s, const char *method, const char *pattern,
		  dl_http_handler_fn fn, void *opaque, const char *route_name);

/* The routes added so far, in order: dl_http_server_route() gives route i's method and
 * pattern (owned by the server, valid until it is freed), or returns -ENOENT past the end. */
size_t dl_http_server_nroutes(const dl_http_server *s);
int dl_http_server_route(const dl_http_server *s, size_t i, const char **ret_method,
			 const char **ret_pattern);

/* Sets the CORS allow-list: exact origins such as "https://console.driftlock.dev" (compared
 * case-insensitively, copied). A request whose Origin is listed gets
 * Access-Control-Allow-Origin (and Vary: Origin); a preflight OPTIONS from a listed origin is
 * answered 204 with the path's methods and allow_headers (NULL = "Authorization, Content-Type,
 * Content-Encoding, Idempotency-Key, X-Request-Id"). Others get no CORS headers at all.
 * n == 0 turns CORS off. Replaces an earlier list. Returns 0, -EINVAL or -ENOMEM (old list kept). */
int dl_http_server_set_cors(dl_http_server *s, const char *const *origins, size_t n,
			    const char *allow_headers);

/* Sets (or with fn NULL clears) the per-request observer; see dl_http_observer_fn. */
void dl_http_server_set_observer(dl_http_server *s, dl_http_observer_fn fn, void *opaque);

/* Starts draining: closes the listening sockets, keeps serving requests already accepted and
 * answers each later one with "Connection: close". Every open stream (and every stream started
 * later) is told DL_HTTP_STREAM_DRAINING on a following loop turn, so its owner can end it and
 * the drain, which waits for dl_http_server_inflight() to reach 0, completes. Idempotent. */
void dl_http_server_stop_accepting(dl_http_server *s);

/* Requests dispatched to a handler and not replied to yet, open streams included (clients
 * gone excluded). */
size_t dl_http_server_inflight(const dl_http_server *s);

/* Client connections currently open (served plus those being refused with 503). */
size_t dl_http_server_connections(const dl_http_server *s);

/* Closes every connection and frees the server. Requests still held by handlers become closed
 * (dl_http_req_closed() is true) and must still be consumed by a dl_http_reply_* call, which
 * then only frees them; the observer is not called from here. Accepts NULL. */
void dl_http_server_free(dl_http_server *s);

/* Request accessors. Strings are owned by req and valid until its reply, even after the client
 * went away. Names of headers and parameters are exact for params, case-insensitive for
 * headers. NULL when absent. */
const char *dl_http_req_method(const dl_http_req *req); /* "GET", "HEAD", "POST", ... */
const char *dl_http_req_path(const dl_http_req *req);   /* as sent, without the query */
const char *dl_http_req_route(const dl_http_req *req);  /* the route_name matched */
const char *dl_http_req_param(const dl_http_req *req, const char *name);  /* decoded {name} */
const char *dl_http_req_query(const dl_http_req *req, const char *name);  /* decoded, first */
const char *dl_http_req_header(const dl_http_req *req, const char *name);
/* The body (NUL-terminated for convenience; *ret_len excludes the NUL; may be empty). */
const char *dl_http_req_body(const dl_http_req *req, size_t *ret_len);
/* The client's address as text; its port goes to *ret_port when not NULL. */
const char *dl_http_req_peer(const dl_http_req *req, int *ret_port);
/* The request id: the client's X-Request-Id when it is 1-128 chars of [A-Za-z0-9._:-],
 * else a new UUIDv7. Echoed in X-Request-Id on the response. */
const char *dl_http_req_id(const dl_http_req *req);
/* True once the client closed the connection; a reply is then dropped. */
bool dl_http_req_closed(const dl_http_req *req);

/* Adds a response header sent with the reply (after validation: name is a token, value has no
 * CR/LF). Security, CORS, Content-Type, Content-Length and X-Request-Id are set by dl_http.
 * Returns 0, -EINVAL or -ENOMEM. */
int dl_http_req_set_header(dl_http_req *req, const char *name, const char *value);

/* Parses the body as JSON: checks that Content-Type is application/json (parameters such as
 * charset allowed) and that arrays/objects nest at most max_depth deep (<= 0 means 32; capped
 * at 1000), counting with a pre-scan BEFORE cJSON parses, then parses the whole body (trailing
 * non-whitespace is an error). Returns 0 and *ret (the caller frees it with cJSON_Delete), or
 * -EMEDIUMTYPE (wrong content type: reply 415), -E2BIG (too deep), -EINVAL (empty or invalid
 * JSON; errbuf names the byte offset), -ENOMEM. *ret untouched on failure. The caller replies. */
int dl_http_req_json(dl_http_req *req, int max_depth, cJSON **ret, char *errbuf, size_t errlen);

/* Replies. Each consumes req in every case (freed; do not use it afterwards), and adds the
 * security headers (X-Content-Type-Options, X-Frame-Options, Referrer-Policy, Cache-Control:
 * no-store, Content-Security-Policy), X-Request-Id and CORS headers. A HEAD request gets the
 * headers with Content-Length but no body; 204 and 304 never carry a body.
 * Return 0; -EPIPE when the client had gone and the reply was dropped; -EINVAL for a status
 * outside 100-599 (a 500 error is sent instead); -ENOMEM (a bodiless 500 is sent instead). */
int dl_http_reply_json(dl_http_req *req, int status, const cJSON *body);
int dl_http_reply_json_text(dl_http_req *req, int status, const char *json, size_t len);
int dl_http_reply_text(dl_http_req *req, int status, const char *content_type, const char *text,
		       size_t len);
/* Sends {"error":{"code":code,"message":<fmt...>,"request_id":<id>}}; with details (any JSON,
 * usually an array; copied, NULL = none) it goes inside "error" as "details". */
int dl_http_reply_error(dl_http_req *req, int status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
int dl_http_reply_error_details(dl_http_req *req, int status, const char *code,
				const cJSON *details, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

/* ---- streamed responses (Server-Sent Events and the like) ----
 *
 * A handler may answer with a stream instead of a reply: the status and headers are sent at
 * once, then the body as it is written, chunked (HTTP/1.1; an HTTP/1.0 client gets the body
 * until the connection closes, a HEAD request the headers only). While a stream is open its
 * connection has no read timeout (the client sends nothing); the write timeout stays
 * request_timeout_s, and what the client does not read piles up in the connection's output
 * buffer, which dl_http_stream_queued() reports so the owner can drop a slow client. */
typedef struct dl_http_stream dl_http_stream;

/* What a stream's owner is told (dl_http_stream_fn's event). */
enum dl_http_stream_event {
	/* The client went away (closed, reset, or a write failed or timed out). The stream is
	 * closed: writes return -EPIPE. The owner must still call dl_http_stream_end(), and may
	 * do so from inside this callback. */
	DL_HTTP_STREAM_CLIENT_GONE = 1,
	/* The server is draining (dl_http_server_stop_accepting): end the stream soon. */
	DL_HTTP_STREAM_DRAINING = 2,
};

/* Called on the loop thread with one of enum dl_http_stream_event. It may call
 * dl_http_stream_end(st) for this stream, and must not free or end other streams. */
typedef void (*dl_http_stream_fn)(dl_http_stream *st, int event, void *opaque);

/* Answers req with a stream: sends status (200-599, not 204/304) and the headers (those set
 * with dl_http_req_set_header, the security headers with Cache-Control: no-cache instead of
 * no-store, X-Accel-Buffering: no so proxies do not buffer, X-Request-Id, CORS, and
 * Content-Type: content_type, NULL = "text/event-stream"). Consumes req in every case.
 * Returns 0 and *ret: the owner writes with dl_http_stream_write and must end it once with
 * dl_http_stream_end. Fails with -EPIPE (the client had gone; req freed), -EINVAL (bad status
 * or content type, or on_event NULL; a 500 error is sent instead) or -ENOMEM (a bodiless 500
 * is sent); *ret untouched then. Loop thread. */
int dl_http_stream_start(dl_http_req *req, int status, const char *content_type,
			 dl_http_stream_fn on_event, void *opaque, dl_http_stream **ret);

/* Appends len bytes (copied) to the body. Returns 0, -EPIPE when the stream is closed (client
 * gone), -ENOMEM. Never blocks: what the socket does not take waits in the output buffer. */
int dl_http_stream_write(dl_http_stream *st, const void *data, size_t len);

/* Bytes written and not yet taken by the socket (0 once closed). */
size_t dl_http_stream_queued(const dl_http_stream *st);

/* True once the client went away (see DL_HTTP_STREAM_CLIENT_GONE). */
bool dl_http_stream_closed(const dl_http_stream *st);

/* The request the stream answers, for its headers, query, peer and id (dl_http_req_*
 * accessors only; valid until dl_http_stream_end). */
const dl_http_req *dl_http_stream_req(const dl_http_stream *st);

/* Ends the body (the last chunk) and frees the stream; the connection closes or serves the next
 * request once the output is flushed. The observer is called with the stream's status, also
 * when the client had gone (it saw the status). A closed stream is only freed. Accepts NULL. */
void dl_http_stream_end(dl_http_stream *st);

/* Streams open (started, not ended; closed ones the owner has not ended included). */
size_t dl_http_server_streams(const dl_http_server *s);

#endif /* DL_COMMON_HTTP_H */
