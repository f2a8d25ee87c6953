// `js-sign-and-forward`: sign a JSON document with a secret the plugin never
// sees, hand it to a partner, and wait for the partner's answer.
//
// The same step as `python-sign-and-forward`, written in JavaScript to
// prove that a plugin author picks their language: both build against the
// same `wit/` and behave identically, byte for byte on the wire.

import * as stephost from '../js-sdk/stephost.js';

const CONFIG_SCHEMA = `{
  "type": "object",
  "required": ["url", "secret"],
  "properties": {
    "url": {"type": "string", "description": "Where to POST the signed document"},
    "secret": {"type": "string", "description": "Name of the granted secret to sign with (HMAC-SHA256)"},
    "timeout_ms": {"type": "integer", "minimum": 0, "description": "How long to wait for the callback; the daemon's default when absent"}
  }
}`;

// Enough of a partner's error body to diagnose, not enough to flood the
// status log.
const MAX_BODY_CHARS = 512;

class SignAndForward {
  run(ctx, doc) {
    const config = ctx.config();
    if (typeof config.url !== 'string' || typeof config.secret !== 'string') {
      throw new stephost.Failure('invalid-config', 'config needs string fields `url` and `secret`');
    }
    const timeoutMs = config.timeout_ms;
    if (timeoutMs !== undefined && timeoutMs !== null && !(Number.isSafeInteger(timeoutMs) && timeoutMs >= 0)) {
      throw new stephost.Failure('invalid-config', '`timeout_ms` must be a non-negative integer');
    }
    const document = validDocument(doc);
    const body = stephost.canonicalJson(document);
    const signature = stephost.hex(stephost.hmacWithSecret('sha256', config.secret, body));
    // Registered before the partner hears of it, so a partner that calls
    // back at once still finds the callback.
    const ticket = stephost.registerCallback();
    const response = stephost.send({
      method: 'POST',
      url: config.url,
      headers: [
        ['Content-Type', stephost.JSON_TYPE],
        ['X-Signature', `sha256=${signature}`],
        ['X-Callback-Url', ticket.url],
        ['X-Step-Run-Id', ctx.stepRunId],
      ],
      body,
    });
    if (!response.ok) {
      throw new stephost.Failure(
        'partner-error',
        `partner answered HTTP ${response.status}: ${response.text(MAX_BODY_CHARS)}`,
      );
    }
    // The input comes back to resume unchanged, so there is no state to
    // carry across the suspension.
    return stephost.suspend(ticket.correlationId, { timeoutMs });
  }

  resume(ctx, doc, state, event) {
    if (event.kind === 'timeout') {
      return stephost.fail('callback-timeout', 'the partner did not call back before the timeout');
    }
    if (event.kind !== 'callback') {
      return stephost.fail('unexpected-timer', 'sign-and-forward never sets a timer');
    }
    let answer;
    try {
      answer = event.callback.json();
    } catch (e) {
      return stephost.rejectCallback(`callback body must be JSON: ${e.message}`);
    }
    if (answer === null || typeof answer !== 'object' || Array.isArray(answer)) {
      return stephost.rejectCallback('callback body must be a JSON object');
    }
    const document = validDocument(doc);
    document.partner = answer;
    return stephost.completeJson(document);
  }
}

function validDocument(doc) {
  let value;
  try {
    value = stephost.parseJson(doc);
  } catch (e) {
    throw new stephost.Failure('invalid-document', `the document is not JSON: ${e.message}`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value) || typeof value.id !== 'string') {
    throw new stephost.Failure('invalid-document', 'the document must be a JSON object with a string field `id`');
  }
  return value;
}

export const step = stephost.exportStep(new SignAndForward(), {
  name: 'js-sign-and-forward',
  version: '0.1.0',
  description:
    "Signs its JSON input with HMAC-SHA256 via the host, POSTs it to a partner with X-Signature and X-Callback-Url, and merges the partner's callback under `partner`.",
  configSchema: CONFIG_SCHEMA,
});
