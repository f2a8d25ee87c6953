/* Write stephost step plugins in C.
 *
 * A step plugin is a WebAssembly component of the world `step-plugin` in
 * wit/stephost.wit. wit-bindgen generates the raw C bindings of that world
 * (step_plugin.h) when build-component.sh builds; this header wraps them
 * the way the Rust, Python and JavaScript SDKs do, so that a step reads as
 * the decision it makes instead of as canonical-ABI bookkeeping:
 *
 *     #include "stephost.h"
 *
 *     STEPHOST_EXPORT("shout", "0.1.0", "Upper-cases `text`", NULL);
 *
 *     stephost_outcome stephost_run(const stephost_context *ctx, const stephost_document *input)
 *     {
 *         stephost_json *doc = stephost_parse_document(input);
 *         if (!doc)
 *             return stephost_failed();
 *         ...
 *         return stephost_complete_json(doc);
 *     }
 *
 * Errors: a helper that fails records a failure (code and text) and
 * returns NULL or false; `return stephost_failed();` fails the step with
 * it, as a Rust step does with `?` and a Python or JavaScript step by not
 * catching the Failure. The codes are the other SDKs' (docs/errors.md).
 * A crash (abort, a bad pointer) traps instead: host code `trap`.
 *
 * Memory: every call runs in a fresh instance that goes away when the call
 * returns, so the helpers allocate and never free, and a step need not
 * either. Strings the helpers return are NUL-terminated.
 */
#ifndef STEPHOST_H
#define STEPHOST_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "step_plugin.h"

/* The version of the contract this SDK speaks (stephost:plugin@0.1.0). */
#define STEPHOST_SDK_VERSION "0.1.0"

#define STEPHOST_JSON_TYPE "application/json"

typedef stephost_plugin_types_outcome_t stephost_outcome;
typedef stephost_plugin_types_step_context_t stephost_context;
typedef stephost_plugin_types_document_t stephost_document;
typedef stephost_plugin_types_callback_t stephost_callback;
typedef struct stephost_json stephost_json;

/* Bytes the SDK allocated; `data` is followed by a NUL. */
typedef struct {
    uint8_t *data;
    size_t len;
} stephost_buffer;

/* ------------------------------------------------------------ the step */

/* What `describe` answers. */
typedef struct {
    const char *name;
    const char *version;
    const char *description;
    const char *config_schema; /* JSON Schema of the config, or NULL */
} stephost_info;

/* Names the plugin: once, at file scope, in the step's source. */
#define STEPHOST_EXPORT(name, version, description, config_schema) \
    const stephost_info stephost_exported = {name, version, description, config_schema}

extern const stephost_info stephost_exported;

typedef enum {
    STEPHOST_EVENT_CALLBACK, /* `callback` is set */
    STEPHOST_EVENT_TIMEOUT,
    STEPHOST_EVENT_TIMER,
} stephost_event_kind;

typedef struct {
    stephost_event_kind kind;
    const stephost_callback *callback;
} stephost_event;

/* The step: defined by the plugin. */
stephost_outcome stephost_run(const stephost_context *ctx, const stephost_document *input);

/* Defined by a plugin that suspends or retries; without it, a resume fails
 * with `unexpected-resume`. `state` is what `suspend` or `retry_after`
 * handed back. */
stephost_outcome stephost_resume(const stephost_context *ctx, const stephost_document *input,
                                 const stephost_buffer *state, const stephost_event *event);

/* ------------------------------------------------------------ outcomes */

/* Go on with `body` as the document. */
stephost_outcome stephost_complete(const char *content_type, const uint8_t *body, size_t len);
/* Go on with `value` as a JSON document (canonical JSON); fails with
 * `invalid-output` if it cannot be written (a string that is not UTF-8, a
 * number that is not finite). */
stephost_outcome stephost_complete_json(const stephost_json *value);
/* Fail the execution with `code` and a printf-style text. */
stephost_outcome stephost_fail(const char *code, const char *format, ...)
    __attribute__((format(printf, 2, 3)));
/* Wait for the callback registered as `correlation_id`, for `timeout_ms`
 * or, if negative, the host's default. */
stephost_outcome stephost_suspend(const char *correlation_id, int64_t timeout_ms);
/* The same, with `state` handed back to `resume`. */
stephost_outcome stephost_suspend_with_state(const char *correlation_id, int64_t timeout_ms,
                                             const uint8_t *state, size_t len);
/* Be resumed with a timer event after `delay_ms` (a durable timer). */
stephost_outcome stephost_retry_after(uint64_t delay_ms, const uint8_t *state, size_t len);
/* Only from resume with a callback: refuse it (its sender gets 400 and the
 * reason) and keep waiting. */
stephost_outcome stephost_reject_callback(const char *format, ...)
    __attribute__((format(printf, 1, 2)));

/* ------------------------------------------------------------ failures */

/* Records a failure for `stephost_failed`; what the helpers call when they
 * return NULL or false. */
void stephost_set_failure(const char *code, const char *format, ...)
    __attribute__((format(printf, 2, 3)));
/* Fails the step with the failure a helper recorded last. */
stephost_outcome stephost_failed(void);
/* The code and text of that failure ("" before any). */
const char *stephost_error_code(void);
const char *stephost_error_text(void);

/* ------------------------------------------------------------ JSON */

typedef enum {
    STEPHOST_JSON_NULL,
    STEPHOST_JSON_BOOL,
    STEPHOST_JSON_NUMBER,
    STEPHOST_JSON_STRING,
    STEPHOST_JSON_ARRAY,
    STEPHOST_JSON_OBJECT,
} stephost_json_kind;

typedef struct {
    char *key; /* UTF-8, NUL-terminated */
    size_t key_len;
    stephost_json *value;
} stephost_json_member;

struct stephost_json {
    stephost_json_kind kind;
    bool boolean;
    double number;
    /* Written without fraction or exponent (an int, as Python reads it). */
    bool integral;
    char *string; /* UTF-8, NUL-terminated; `length` bytes */
    size_t length;
    size_t count;                  /* of `items` (array) or `members` (object) */
    stephost_json **items;         /* array */
    stephost_json_member *members; /* object, in input order */
    size_t capacity;
};

/* Deeper nesting than any document needs, shallow enough that recursion
 * cannot exhaust the instance's stack. */
#define STEPHOST_JSON_MAX_DEPTH 256

/* Parses JSON (strict: RFC 8259, UTF-8); NULL and an `invalid-json`
 * failure, whose text says what and where, if it is not. Numbers are
 * doubles, as in JavaScript: integers beyond 2^53 lose precision. */
stephost_json *stephost_json_parse(const uint8_t *data, size_t len);
/* The body of `doc` parsed as JSON, whatever its content type says. */
stephost_json *stephost_parse_document(const stephost_document *doc);
/* The step's config; an empty or null config reads as {}. NULL and an
 * `invalid-config` failure if it is not a JSON object. */
stephost_json *stephost_config(const stephost_context *ctx);

/* The member `key` of an object (the last, if repeated), else NULL. */
stephost_json *stephost_json_get(const stephost_json *object, const char *key);
/* The member `key` if it is a string, else NULL. */
const char *stephost_json_get_string(const stephost_json *object, const char *key);
/* Whether `v` is a non-negative integer up to 2^53, written without
 * fraction or exponent; then stores it. */
bool stephost_json_u64(const stephost_json *v, uint64_t *out);

stephost_json *stephost_json_null(void);
stephost_json *stephost_json_bool(bool value);
stephost_json *stephost_json_number(double value);
stephost_json *stephost_json_string(const char *text);
stephost_json *stephost_json_string_n(const char *text, size_t len);
stephost_json *stephost_json_array(void);
stephost_json *stephost_json_object(void);
void stephost_json_push(stephost_json *array, stephost_json *item);
/* Sets (replaces, or appends) member `key`. */
void stephost_json_set(stephost_json *object, const char *key, stephost_json *value);

/* `value` as canonical JSON, the form to sign: keys sorted by UTF-16 code
 * units, no whitespace, UTF-8, numbers as JavaScript writes them. The
 * Python and JavaScript SDKs write the same bytes. False and an
 * `invalid-output` failure if it cannot be written. */
bool stephost_canonical_json(const stephost_json *value, stephost_buffer *out);

/* ------------------------------------------------------------ http */

typedef struct {
    const char *name;
    const char *value;
} stephost_header;

typedef struct {
    const char *method; /* GET, POST, ... */
    const char *url;
    const stephost_header *headers;
    size_t header_count;
    const uint8_t *body;
    size_t body_len;
    uint32_t timeout_ms;     /* 0: the host's limit */
    bool skip_tls_validation; /* only for partners with self-signed certificates */
} stephost_request;

typedef struct {
    uint16_t status;
    const uint8_t *body;
    size_t body_len;
    stephost_plugin_http_response_t raw; /* headers, names in lower case */
} stephost_response;

/* Sends one request through the host and waits for the whole response.
 * False, when no response could be had, with failure `egress-denied` (the
 * host refused the target), `body-too-large` (over the host's limit) or
 * `http-error` (bad request, timeout, no connection). */
bool stephost_send(const stephost_request *req, stephost_response *out);
/* Whether the status is 2xx. */
bool stephost_response_ok(const stephost_response *res);
/* The body as text (invalid UTF-8 replaced), cut to `max_chars` code
 * points with an ellipsis, for error messages. */
char *stephost_response_text(const stephost_response *res, size_t max_chars);
/* The first value of header `name` (case-insensitive), else NULL. */
char *stephost_response_header(const stephost_response *res, const char *name);

/* ------------------------------------------------------------ signing, secrets, callbacks, log */

#define STEPHOST_SHA1 STEPHOST_PLUGIN_SIGNING_HMAC_ALG_SHA1
#define STEPHOST_SHA256 STEPHOST_PLUGIN_SIGNING_HMAC_ALG_SHA256
#define STEPHOST_SHA512 STEPHOST_PLUGIN_SIGNING_HMAC_ALG_SHA512

/* The raw HMAC of `data` keyed by the granted secret `secret_name`: the
 * host signs, the key never enters the sandbox. False and a
 * `signing-error` failure if the secret is unknown or not granted. */
bool stephost_hmac_with_secret(stephost_plugin_signing_hmac_alg_t alg, const char *secret_name,
                               const uint8_t *data, size_t len, stephost_buffer *mac);
/* The same with key bytes the plugin already has. */
bool stephost_hmac_with_key(stephost_plugin_signing_hmac_alg_t alg, const uint8_t *key,
                            size_t key_len, const uint8_t *data, size_t len, stephost_buffer *mac);
/* Lower-case hex of `data`. */
char *stephost_hex(const uint8_t *data, size_t len);
/* A granted secret's value, else NULL. Prefer hmac_with_secret to sign. */
char *stephost_secret(const char *name);

typedef struct {
    char *correlation_id; /* for stephost_suspend */
    char *url;            /* for the partner only: it embeds a secret */
} stephost_ticket;

/* Registers a callback for this step; durable before it returns, so the
 * URL may go to the partner at once. False and a `callback-error`
 * failure if the host could not. */
bool stephost_register_callback(bool require_token, stephost_ticket *ticket);

#define STEPHOST_TRACE STEPHOST_PLUGIN_LOG_LEVEL_TRACE
#define STEPHOST_DEBUG STEPHOST_PLUGIN_LOG_LEVEL_DEBUG
#define STEPHOST_INFO STEPHOST_PLUGIN_LOG_LEVEL_INFO
#define STEPHOST_WARN STEPHOST_PLUGIN_LOG_LEVEL_WARN
#define STEPHOST_ERROR STEPHOST_PLUGIN_LOG_LEVEL_ERROR

/* One line in the daemon's log, tagged with the execution and step. */
void stephost_log(stephost_plugin_log_level_t level, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

/* ------------------------------------------------------------ strings */

/* A NUL-terminated copy of a string of the bindings (ctx->step_run_id). */
char *stephost_str(const step_plugin_string_t *s);
/* printf into a new string. */
char *stephost_format(const char *format, ...) __attribute__((format(printf, 1, 2)));
char *stephost_vformat(const char *format, va_list args);
/* calloc that traps instead of returning NULL. */
void *stephost_alloc(size_t size);
/* The length of the well-formed UTF-8 sequence at `p`, else 0. */
size_t stephost_utf8_len(const uint8_t *p, const uint8_t *end);

#endif
