/* SPDX-License-Identifier: MIT */
#pragma once

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>

/* The Varlink wire format (https://varlink.org): every message is one JSON object followed by a
 * NUL byte. A call is {"method": "io.pgtree.Tree", "parameters": {...}}; a reply is
 * {"parameters": {...}} or {"error": "io.pgtree.…", "parameters": {...}}. Pure. */

#define VARLINK_MAX_MESSAGE (64 * 1024)
#define VARLINK_INTERFACE "io.pgtree"

typedef struct VarlinkCall {
        char method[128];
        json_object *parameters;        /* owned; an empty object if none */
        bool oneway;                    /* no reply wanted */
        bool more;                      /* the client accepts several replies (Watch streams them) */
        char invalid_parameter[64];     /* a parameter that holds a string with a NUL in it, or "" */
} VarlinkCall;

/* Parses one message (without its NUL). On error returns -EBADMSG and fills why. */
int varlink_call_parse(const char *msg, size_t len, VarlinkCall *ret, char *why, size_t why_size);
void varlink_call_clear(VarlinkCall *c);

/* A reply or an error as a string with its terminating NUL counted in *len (owned by caller). */
char *varlink_reply(json_object *parameters, size_t *len);
char *varlink_error(const char *error, json_object *parameters, size_t *len);
/* A reply of a call made with "more": continues says that more replies follow. */
char *varlink_reply_continues(json_object *parameters, bool continues, size_t *len);
/* A call, for the client. */
char *varlink_call(const char *method, json_object *parameters, size_t *len);
/* Parses a reply: 0 with *parameters (owned) and *error (NULL or owned string). */
int varlink_reply_parse(const char *msg, size_t len, json_object **parameters, char **error);

/* A byte buffer that collects input and yields whole messages. */
typedef struct VarlinkBuffer {
        char *data;
        size_t len, cap;
} VarlinkBuffer;

/* Appends received bytes. -EMSGSIZE if more than max would be buffered without a NUL. */
int varlink_buffer_feed(VarlinkBuffer *b, const char *data, size_t n, size_t max);
/* Takes the next whole message out (copied to *msg, NUL-terminated, owned). 1 if one was there,
 * 0 if more bytes are needed. */
int varlink_buffer_next(VarlinkBuffer *b, char **msg, size_t *len);
void varlink_buffer_clear(VarlinkBuffer *b);

/* A client's connection to a Unix socket: the fd, or -errno (-ETIMEDOUT: the listener accepted
 * nothing within timeout_ms and its backlog is full). Sends on the fd wait at most timeout_ms. */
int varlink_connect_unix(const char *path, int timeout_ms);
/* One call on a connection of its own: connects to path, sends method(parameters) (consumed),
 * and reads the one reply within timeout_ms in all, messages of at most max bytes. 0 with
 * *parameters / *error as varlink_reply_parse gives them; -errno of the connect; -ETIMEDOUT
 * when no whole reply came in time; -EIO when the peer closed first or sent more than max. If
 * the send fails the reply is still read: pgtreed says why it refused a connection. */
int varlink_call_once(const char *path, const char *method, json_object *parameters, int timeout_ms, size_t max,
                      json_object **ret, char **error);

/* The io.pgtree interface description, in Varlink's IDL (for GetInterfaceDescription). */
const char *varlink_pgtree_description(void);
const char *varlink_service_description(void);
