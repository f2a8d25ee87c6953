/* The C side of the SDK code probe: the cases of `src/lib.rs`, each left
 * for the SDK to report (a helper's failure handed on with
 * stephost_failed, the default resume). */

#include "stephost.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

STEPHOST_EXPORT("code-probe", "0.1.0", "", NULL);

/* No stephost_resume: the SDK's default answers one. */
stephost_outcome stephost_run(const stephost_context *ctx, const stephost_document *input)
{
    (void)input;
    stephost_json *config = stephost_config(ctx);
    if (!config)
        return stephost_failed();
    const char *url = stephost_json_get_string(config, "url");
    const char *c = stephost_json_get_string(config, "case");
    stephost_request get = {.method = "GET", .url = url ? url : ""};
    stephost_response response;
    stephost_buffer mac;
    if (!c) {
        return stephost_fail("unknown-case", "no case");
    } else if (strcmp(c, "send") == 0) {
        if (!stephost_send(&get, &response))
            return stephost_failed();
    } else if (strcmp(c, "parse-response") == 0) {
        if (!stephost_send(&get, &response) ||
            !stephost_json_parse(response.body, response.body_len))
            return stephost_failed();
    } else if (strcmp(c, "sign-with-ungranted-secret") == 0) {
        if (!stephost_hmac_with_secret(STEPHOST_SHA256, "not-granted", (const uint8_t *)"data", 4,
                                       &mac))
            return stephost_failed();
    } else if (strcmp(c, "unwritable-output") == 0) {
        stephost_json *output = stephost_json_object();
        stephost_json_set(output, "value", stephost_json_number(NAN));
        return stephost_complete_json(output);
    } else if (strcmp(c, "resume-without-resume") == 0) {
        return stephost_retry_after(1, NULL, 0);
    } else if (strcmp(c, "uncaught") == 0) {
        abort();
    } else {
        return stephost_fail("unknown-case", "%s", c);
    }
    return stephost_complete_json(stephost_json_string("no failure"));
}
