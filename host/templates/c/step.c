/* `{{name}}`: a stephost step plugin.
 *
 * The sample step greets: it completes with its JSON object input plus a
 * `greeting` field built from the config's `greeting` (default `Hello`)
 * and the input's `name` (default `world`). Replace stephost_run with your
 * step; to wait for a partner, call stephost_register_callback, send the
 * partner the ticket's URL, return stephost_suspend(...), and define
 * stephost_resume (see docs/writing-plugins.md in the stephost
 * repository). stephost/stephost.h documents every helper. */

#include "stephost.h"

STEPHOST_EXPORT("{{name}}", "0.1.0", "A stephost step plugin", NULL);

stephost_outcome stephost_run(const stephost_context *ctx, const stephost_document *input)
{
    stephost_json *config = stephost_config(ctx);
    if (!config)
        return stephost_failed();
    const char *greeting = stephost_json_get_string(config, "greeting");
    stephost_json *doc = stephost_parse_document(input);
    if (!doc || doc->kind != STEPHOST_JSON_OBJECT)
        return stephost_fail("invalid-document", "the input must be a JSON object");
    const char *name = stephost_json_get_string(doc, "name");
    char *text = stephost_format("%s, %s!", greeting ? greeting : "Hello", name ? name : "world");
    stephost_json_set(doc, "greeting", stephost_json_string(text));
    return stephost_complete_json(doc);
}
