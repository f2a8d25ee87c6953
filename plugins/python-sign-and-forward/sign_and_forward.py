"""`python-sign-and-forward`: sign a JSON document with a secret the plugin
never sees, hand it to a partner, and wait for the partner's answer.

The same step as `js-sign-and-forward`, written in Python to prove that a
plugin author picks their language: both build against the same `wit/`
and behave identically, byte for byte on the wire.
"""

import stephost

CONFIG_SCHEMA = """{
  "type": "object",
  "required": ["url", "secret"],
  "properties": {
    "url": {"type": "string", "description": "Where to POST the signed document"},
    "secret": {"type": "string", "description": "Name of the granted secret to sign with (HMAC-SHA256)"},
    "timeout_ms": {"type": "integer", "minimum": 0, "description": "How long to wait for the callback; the daemon's default when absent"}
  }
}"""

# Enough of a partner's error body to diagnose, not enough to flood the
# status log.
MAX_BODY_CHARS = 512


class SignAndForward:
    def run(self, ctx, doc):
        config = ctx.config()
        url, secret, timeout_ms = config.get("url"), config.get("secret"), config.get("timeout_ms")
        if not isinstance(url, str) or not isinstance(secret, str):
            raise stephost.Failure("invalid-config", "config needs string fields `url` and `secret`")
        if timeout_ms is not None and (type(timeout_ms) is not int or timeout_ms < 0):
            raise stephost.Failure("invalid-config", "`timeout_ms` must be a non-negative integer")
        document = _valid_document(doc)
        body = stephost.canonical_json(document)
        signature = stephost.hmac_with_secret(stephost.SHA256, secret, body).hex()
        # Registered before the partner hears of it, so a partner that calls
        # back at once still finds the callback.
        ticket = stephost.register_callback()
        response = stephost.send(
            "POST",
            url,
            headers=[
                ("Content-Type", stephost.JSON),
                ("X-Signature", f"sha256={signature}"),
                ("X-Callback-Url", ticket.url),
                ("X-Step-Run-Id", ctx.step_run_id),
            ],
            body=body,
        )
        if not response.ok:
            raise stephost.Failure(
                "partner-error",
                f"partner answered HTTP {response.status}: {response.text(MAX_BODY_CHARS)}",
            )
        # The input comes back to resume unchanged, so there is no state to
        # carry across the suspension.
        return stephost.suspend(ticket.correlation_id, timeout_ms=timeout_ms)

    def resume(self, ctx, doc, state, event):
        if event.kind == "timeout":
            return stephost.fail("callback-timeout", "the partner did not call back before the timeout")
        if event.kind != "callback":
            return stephost.fail("unexpected-timer", "sign-and-forward never sets a timer")
        try:
            answer = event.callback.json()
        except ValueError as e:
            return stephost.reject_callback(f"callback body must be JSON: {e}")
        if not isinstance(answer, dict):
            return stephost.reject_callback("callback body must be a JSON object")
        document = _valid_document(doc)
        document["partner"] = answer
        return stephost.complete_json(document)


def _valid_document(doc):
    try:
        value = stephost.parse_json(doc)
    except ValueError as e:
        raise stephost.Failure("invalid-document", f"the document is not JSON: {e}") from None
    if not isinstance(value, dict) or not isinstance(value.get("id"), str):
        raise stephost.Failure("invalid-document", "the document must be a JSON object with a string field `id`")
    return value


Step = stephost.export(
    SignAndForward,
    name="python-sign-and-forward",
    version="0.1.0",
    description="Signs its JSON input with HMAC-SHA256 via the host, POSTs it to a partner with "
    "X-Signature and X-Callback-Url, and merges the partner's callback under `partner`.",
    config_schema=CONFIG_SCHEMA,
)
