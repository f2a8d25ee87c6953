/* The C SDK's glue to the generated bindings: the step exports call the
 * plugin's stephost_run and stephost_resume, and the host imports are
 * wrapped so that a step deals in C strings and records failures with the
 * codes every SDK reports. */

#include "stephost.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ------------------------------------------------------------ strings */

char *stephost_vformat(const char *format, va_list args)
{
    va_list again;
    va_copy(again, args);
    int n = vsnprintf(NULL, 0, format, args);
    char *text = stephost_alloc(n > 0 ? (size_t)n + 1 : 1);
    if (n > 0)
        vsnprintf(text, (size_t)n + 1, format, again);
    va_end(again);
    return text;
}

char *stephost_format(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    char *text = stephost_vformat(format, args);
    va_end(args);
    return text;
}

char *stephost_str(const step_plugin_string_t *s)
{
    char *text = stephost_alloc(s->len + 1);
    memcpy(text, s->ptr, s->len);
    return text;
}

/* A string of the bindings that owns a copy of `text`: the canonical ABI's
 * post-return frees what an export returns. */
static step_plugin_string_t owned(const char *text)
{
    step_plugin_string_t s;
    step_plugin_string_dup(&s, text);
    return s;
}

/* A string of the bindings borrowing `text`, for an import's argument. */
static step_plugin_string_t borrowed(const char *text)
{
    return (step_plugin_string_t){(uint8_t *)text, strlen(text)};
}

/* ------------------------------------------------------------ failures */

static const char *failure_code = "";
static char *failure_text = "";

void stephost_set_failure(const char *code, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    failure_code = code;
    failure_text = stephost_vformat(format, args);
    va_end(args);
}

const char *stephost_error_code(void) { return failure_code; }
const char *stephost_error_text(void) { return failure_text; }

stephost_outcome stephost_failed(void)
{
    if (!*failure_code) {
        /* A bug in the step: trap, with the reason in the trap's text. */
        fputs("stephost_failed() called, but no helper has failed\n", stderr);
        abort();
    }
    return stephost_fail(failure_code, "%s", failure_text);
}

/* ------------------------------------------------------------ outcomes */

static stephost_outcome fail_with(const char *code, const char *text)
{
    stephost_outcome out = {.tag = STEPHOST_PLUGIN_TYPES_OUTCOME_FAIL};
    out.val.fail.error_code.is_some = true;
    out.val.fail.error_code.val = owned(code);
    out.val.fail.error_text = owned(text);
    return out;
}

stephost_outcome stephost_fail(const char *code, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    char *text = stephost_vformat(format, args);
    va_end(args);
    return fail_with(code, text);
}

stephost_outcome stephost_complete(const char *content_type, const uint8_t *body, size_t len)
{
    stephost_outcome out = {.tag = STEPHOST_PLUGIN_TYPES_OUTCOME_COMPLETE};
    out.val.complete.content_type = owned(content_type);
    out.val.complete.body.ptr = malloc(len ? len : 1);
    if (!out.val.complete.body.ptr)
        abort();
    memcpy(out.val.complete.body.ptr, body, len);
    out.val.complete.body.len = len;
    return out;
}

stephost_outcome stephost_complete_json(const stephost_json *value)
{
    stephost_buffer json;
    if (!stephost_canonical_json(value, &json))
        return stephost_failed();
    return stephost_complete(STEPHOST_JSON_TYPE, json.data, json.len);
}

static step_plugin_list_u8_t bytes_copy(const uint8_t *data, size_t len)
{
    step_plugin_list_u8_t list = {malloc(len ? len : 1), len};
    if (!list.ptr)
        abort();
    if (len)
        memcpy(list.ptr, data, len);
    return list;
}

stephost_outcome stephost_suspend_with_state(const char *correlation_id, int64_t timeout_ms,
                                             const uint8_t *state, size_t len)
{
    stephost_outcome out = {.tag = STEPHOST_PLUGIN_TYPES_OUTCOME_SUSPEND};
    out.val.suspend.correlation_id = owned(correlation_id);
    out.val.suspend.state = bytes_copy(state, len);
    out.val.suspend.timeout_ms.is_some = timeout_ms >= 0;
    out.val.suspend.timeout_ms.val = timeout_ms >= 0 ? (uint64_t)timeout_ms : 0;
    return out;
}

stephost_outcome stephost_suspend(const char *correlation_id, int64_t timeout_ms)
{
    return stephost_suspend_with_state(correlation_id, timeout_ms, NULL, 0);
}

stephost_outcome stephost_retry_after(uint64_t delay_ms, const uint8_t *state, size_t len)
{
    stephost_outcome out = {.tag = STEPHOST_PLUGIN_TYPES_OUTCOME_RETRY_AFTER};
    out.val.retry_after.delay_ms = delay_ms;
    out.val.retry_after.state = bytes_copy(state, len);
    return out;
}

stephost_outcome stephost_reject_callback(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    char *reason = stephost_vformat(format, args);
    va_end(args);
    stephost_outcome out = {.tag = STEPHOST_PLUGIN_TYPES_OUTCOME_REJECT_CALLBACK};
    out.val.reject_callback = owned(reason);
    return out;
}

/* ------------------------------------------------------------ exports */

void exports_stephost_plugin_step_describe(exports_stephost_plugin_step_plugin_info_t *ret)
{
    const stephost_info *info = &stephost_exported;
    ret->name = owned(info->name);
    ret->version = owned(info->version);
    ret->description = owned(info->description ? info->description : "");
    ret->config_schema.is_some = info->config_schema != NULL;
    if (info->config_schema)
        ret->config_schema.val = owned(info->config_schema);
}

void exports_stephost_plugin_step_run(exports_stephost_plugin_step_step_context_t *ctx,
                                      exports_stephost_plugin_step_document_t *input,
                                      exports_stephost_plugin_step_outcome_t *ret)
{
    *ret = stephost_run(ctx, input);
}

/* Weak, so that a plugin's own resume replaces it. */
__attribute__((weak)) stephost_outcome stephost_resume(const stephost_context *ctx,
                                                       const stephost_document *input,
                                                       const stephost_buffer *state,
                                                       const stephost_event *event)
{
    (void)input, (void)state, (void)event;
    return stephost_fail("unexpected-resume", "step `%s` never suspends", stephost_str(&ctx->step));
}

void exports_stephost_plugin_step_resume(exports_stephost_plugin_step_step_context_t *ctx,
                                         exports_stephost_plugin_step_document_t *input,
                                         step_plugin_list_u8_t *state,
                                         exports_stephost_plugin_step_resume_event_t *event,
                                         exports_stephost_plugin_step_outcome_t *ret)
{
    stephost_buffer saved = {state->ptr, state->len};
    stephost_event e = {.kind = STEPHOST_EVENT_TIMER};
    if (event->tag == STEPHOST_PLUGIN_TYPES_RESUME_EVENT_CALLBACK) {
        e.kind = STEPHOST_EVENT_CALLBACK;
        e.callback = &event->val.callback;
    } else if (event->tag == STEPHOST_PLUGIN_TYPES_RESUME_EVENT_TIMEOUT) {
        e.kind = STEPHOST_EVENT_TIMEOUT;
    }
    *ret = stephost_resume(ctx, input, &saved, &e);
}

/* ------------------------------------------------------------ documents, config */

stephost_json *stephost_parse_document(const stephost_document *doc)
{
    return stephost_json_parse(doc->body.ptr, doc->body.len);
}

stephost_json *stephost_config(const stephost_context *ctx)
{
    const uint8_t *p = ctx->config.ptr, *end = p + ctx->config.len;
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    if (p == end)
        return stephost_json_object();
    char *step = stephost_str(&ctx->step);
    stephost_json *config = stephost_json_parse(p, (size_t)(end - p));
    if (!config) {
        stephost_set_failure("invalid-config", "step `%s`: invalid config: %s", step,
                             stephost_error_text());
        return NULL;
    }
    if (config->kind == STEPHOST_JSON_NULL)
        return stephost_json_object();
    if (config->kind != STEPHOST_JSON_OBJECT) {
        stephost_set_failure("invalid-config", "step `%s`: config must be a JSON object", step);
        return NULL;
    }
    return config;
}

/* ------------------------------------------------------------ http */

bool stephost_send(const stephost_request *req, stephost_response *out)
{
    stephost_plugin_http_request_t raw = {
        .method = borrowed(req->method),
        .url = borrowed(req->url),
        .body = {(uint8_t *)req->body, req->body_len},
        .timeout_ms = {req->timeout_ms > 0, req->timeout_ms},
        .validate_tls = !req->skip_tls_validation,
    };
    step_plugin_tuple2_string_string_t *headers =
        stephost_alloc(req->header_count * sizeof *headers);
    for (size_t i = 0; i < req->header_count; i++) {
        headers[i].f0 = borrowed(req->headers[i].name);
        headers[i].f1 = borrowed(req->headers[i].value);
    }
    raw.headers = (step_plugin_list_tuple2_string_string_t){headers, req->header_count};
    stephost_plugin_http_http_error_t err;
    if (stephost_plugin_http_send(&raw, &out->raw, &err)) {
        out->status = out->raw.status;
        out->body = out->raw.body.ptr;
        out->body_len = out->raw.body.len;
        return true;
    }
    char *detail = "";
    if (err.tag != STEPHOST_PLUGIN_HTTP_HTTP_ERROR_TIMEOUT &&
        err.tag != STEPHOST_PLUGIN_HTTP_HTTP_ERROR_BODY_TOO_LARGE)
        detail = stephost_str(&err.val.denied); /* every string case shares the slot */
    switch (err.tag) {
    case STEPHOST_PLUGIN_HTTP_HTTP_ERROR_DENIED:
        stephost_set_failure("egress-denied", "denied by host policy: %s", detail);
        break;
    case STEPHOST_PLUGIN_HTTP_HTTP_ERROR_BODY_TOO_LARGE:
        stephost_set_failure("body-too-large",
                             "response body exceeds the host's limit of %llu bytes",
                             (unsigned long long)err.val.body_too_large);
        break;
    case STEPHOST_PLUGIN_HTTP_HTTP_ERROR_INVALID_REQUEST:
        stephost_set_failure("http-error", "invalid request: %s", detail);
        break;
    case STEPHOST_PLUGIN_HTTP_HTTP_ERROR_TIMEOUT:
        stephost_set_failure("http-error", "no complete response within the timeout");
        break;
    default:
        stephost_set_failure("http-error", "connection failed: %s", detail);
    }
    return false;
}

bool stephost_response_ok(const stephost_response *res)
{
    return res->status >= 200 && res->status < 300;
}

char *stephost_response_text(const stephost_response *res, size_t max_chars)
{
    /* At most 3 bytes per input byte (U+FFFD), plus the ellipsis. */
    char *text = stephost_alloc(res->body_len * 3 + 4);
    const uint8_t *p = res->body, *end = p + res->body_len;
    size_t len = 0, chars = 0;
    while (p < end) {
        if (chars == max_chars) {
            memcpy(text + len, "\xE2\x80\xA6", 3);
            len += 3;
            break;
        }
        size_t n = stephost_utf8_len(p, end);
        if (n) {
            memcpy(text + len, p, n);
            len += n;
            p += n;
        } else {
            memcpy(text + len, "\xEF\xBF\xBD", 3);
            len += 3;
            p++;
        }
        chars++;
    }
    text[len] = 0;
    return text;
}

char *stephost_response_header(const stephost_response *res, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < res->raw.headers.len; i++) {
        const step_plugin_tuple2_string_string_t *h = &res->raw.headers.ptr[i];
        if (h->f0.len == n && strncasecmp((const char *)h->f0.ptr, name, n) == 0)
            return stephost_str(&h->f1);
    }
    return NULL;
}

/* ------------------------------------------------------------ signing, secrets, callbacks, log */

static bool hmac(stephost_plugin_signing_hmac_alg_t alg, stephost_plugin_signing_key_ref_t *key,
                 const uint8_t *data, size_t len, stephost_buffer *mac)
{
    step_plugin_list_u8_t bytes = {(uint8_t *)data, len}, ret;
    step_plugin_string_t err;
    if (!stephost_plugin_signing_hmac(alg, key, &bytes, &ret, &err)) {
        stephost_set_failure("signing-error", "%s", stephost_str(&err));
        return false;
    }
    mac->data = ret.ptr;
    mac->len = ret.len;
    return true;
}

bool stephost_hmac_with_secret(stephost_plugin_signing_hmac_alg_t alg, const char *secret_name,
                               const uint8_t *data, size_t len, stephost_buffer *mac)
{
    stephost_plugin_signing_key_ref_t key = {.tag = STEPHOST_PLUGIN_SIGNING_KEY_REF_SECRET};
    key.val.secret = borrowed(secret_name);
    return hmac(alg, &key, data, len, mac);
}

bool stephost_hmac_with_key(stephost_plugin_signing_hmac_alg_t alg, const uint8_t *key_bytes,
                            size_t key_len, const uint8_t *data, size_t len, stephost_buffer *mac)
{
    stephost_plugin_signing_key_ref_t key = {.tag = STEPHOST_PLUGIN_SIGNING_KEY_REF_INLINE};
    key.val.inline_ = (step_plugin_list_u8_t){(uint8_t *)key_bytes, key_len};
    return hmac(alg, &key, data, len, mac);
}

char *stephost_hex(const uint8_t *data, size_t len)
{
    static const char digits[] = "0123456789abcdef";
    char *text = stephost_alloc(len * 2 + 1);
    for (size_t i = 0; i < len; i++) {
        text[2 * i] = digits[data[i] >> 4];
        text[2 * i + 1] = digits[data[i] & 15];
    }
    return text;
}

char *stephost_secret(const char *name)
{
    step_plugin_string_t key = borrowed(name), value;
    return stephost_plugin_secrets_get(&key, &value) ? stephost_str(&value) : NULL;
}

bool stephost_register_callback(bool require_token, stephost_ticket *ticket)
{
    stephost_plugin_callbacks_callback_options_t opts = {require_token};
    stephost_plugin_callbacks_ticket_t raw;
    step_plugin_string_t err;
    if (!stephost_plugin_callbacks_register(&opts, &raw, &err)) {
        stephost_set_failure("callback-error", "could not register a callback: %s",
                             stephost_str(&err));
        return false;
    }
    ticket->correlation_id = stephost_str(&raw.correlation_id);
    ticket->url = stephost_str(&raw.url);
    return true;
}

void stephost_log(stephost_plugin_log_level_t level, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    step_plugin_string_t message = borrowed(stephost_vformat(format, args));
    va_end(args);
    stephost_plugin_log_log(level, &message);
}
