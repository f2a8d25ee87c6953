/* `c-sign-and-forward`: sign a JSON document with a secret the plugin
 * never sees, hand it to a partner, and wait for the partner's answer.
 *
 * The same step as `python-sign-and-forward` and `js-sign-and-forward`,
 * written in C to prove that a plugin author picks their language: all
 * three build against the same wit/ and behave identically, byte for byte
 * on the wire. */

#include "stephost.h"

#define CONFIG_SCHEMA                                                                              \
    "{\n"                                                                                          \
    "  \"type\": \"object\",\n"                                                                    \
    "  \"required\": [\"url\", \"secret\"],\n"                                                     \
    "  \"properties\": {\n"                                                                        \
    "    \"url\": {\"type\": \"string\", \"description\": \"Where to POST the signed "            \
    "document\"},\n"                                                                               \
    "    \"secret\": {\"type\": \"string\", \"description\": \"Name of the granted secret to "    \
    "sign with (HMAC-SHA256)\"},\n"                                                                \
    "    \"timeout_ms\": {\"type\": \"integer\", \"minimum\": 0, \"description\": \"How long to " \
    "wait for the callback; the daemon's default when absent\"}\n"                                 \
    "  }\n"                                                                                        \
    "}"

STEPHOST_EXPORT("c-sign-and-forward", "0.1.0",
                "Signs its JSON input with HMAC-SHA256 via the host, POSTs it to a partner with "
                "X-Signature and X-Callback-Url, and merges the partner's callback under `partner`.",
                CONFIG_SCHEMA);

/* Enough of a partner's error body to diagnose, not enough to flood the
 * status log. */
#define MAX_BODY_CHARS 512

/* The input as a JSON object with a string `id`, else NULL with an
 * `invalid-document` failure recorded. */
static stephost_json *valid_document(const stephost_document *input)
{
    stephost_json *doc = stephost_parse_document(input);
    if (!doc) {
        stephost_set_failure("invalid-document", "the document is not JSON: %s",
                             stephost_error_text());
        return NULL;
    }
    if (doc->kind != STEPHOST_JSON_OBJECT || !stephost_json_get_string(doc, "id")) {
        stephost_set_failure("invalid-document",
                             "the document must be a JSON object with a string field `id`");
        return NULL;
    }
    return doc;
}

stephost_outcome stephost_run(const stephost_context *ctx, const stephost_document *input)
{
    stephost_json *config = stephost_config(ctx);
    if (!config)
        return stephost_failed();
    const char *url = stephost_json_get_string(config, "url");
    const char *secret = stephost_json_get_string(config, "secret");
    if (!url || !secret)
        return stephost_fail("invalid-config", "config needs string fields `url` and `secret`");
    stephost_json *timeout = stephost_json_get(config, "timeout_ms");
    uint64_t timeout_ms = 0;
    bool has_timeout = timeout && timeout->kind != STEPHOST_JSON_NULL;
    if (has_timeout && !stephost_json_u64(timeout, &timeout_ms))
        return stephost_fail("invalid-config", "`timeout_ms` must be a non-negative integer");

    stephost_json *doc = valid_document(input);
    stephost_buffer body, mac;
    if (!doc || !stephost_canonical_json(doc, &body) ||
        !stephost_hmac_with_secret(STEPHOST_SHA256, secret, body.data, body.len, &mac))
        return stephost_failed();
    /* Registered before the partner hears of it, so a partner that calls
     * back at once still finds the callback. */
    stephost_ticket ticket;
    if (!stephost_register_callback(false, &ticket))
        return stephost_failed();
    stephost_header headers[] = {
        {"Content-Type", STEPHOST_JSON_TYPE},
        {"X-Signature", stephost_format("sha256=%s", stephost_hex(mac.data, mac.len))},
        {"X-Callback-Url", ticket.url},
        {"X-Step-Run-Id", stephost_str(&ctx->step_run_id)},
    };
    stephost_request request = {
        .method = "POST",
        .url = url,
        .headers = headers,
        .header_count = sizeof headers / sizeof headers[0],
        .body = body.data,
        .body_len = body.len,
    };
    stephost_response response;
    if (!stephost_send(&request, &response))
        return stephost_failed();
    if (!stephost_response_ok(&response))
        return stephost_fail("partner-error", "partner answered HTTP %u: %s", response.status,
                             stephost_response_text(&response, MAX_BODY_CHARS));
    /* The input comes back to resume unchanged, so there is no state to
     * carry across the suspension. */
    return stephost_suspend(ticket.correlation_id, has_timeout ? (int64_t)timeout_ms : -1);
}

stephost_outcome stephost_resume(const stephost_context *ctx, const stephost_document *input,
                                 const stephost_buffer *state, const stephost_event *event)
{
    (void)ctx, (void)state;
    if (event->kind == STEPHOST_EVENT_TIMEOUT)
        return stephost_fail("callback-timeout", "the partner did not call back before the timeout");
    if (event->kind != STEPHOST_EVENT_CALLBACK)
        return stephost_fail("unexpected-timer", "sign-and-forward never sets a timer");
    const stephost_callback *callback = event->callback;
    stephost_json *answer = stephost_json_parse(callback->body.ptr, callback->body.len);
    if (!answer)
        return stephost_reject_callback("callback body must be JSON: %s", stephost_error_text());
    if (answer->kind != STEPHOST_JSON_OBJECT)
        return stephost_reject_callback("callback body must be a JSON object");
    stephost_json *doc = valid_document(input);
    if (!doc)
        return stephost_failed();
    stephost_json_set(doc, "partner", answer);
    return stephost_complete_json(doc);
}
