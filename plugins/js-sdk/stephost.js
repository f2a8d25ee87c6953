// Write stephost step plugins in JavaScript.
//
// A step plugin is a WebAssembly component of the
// `stephost:plugin/step-plugin` world (`wit/stephost.wit`).
// componentize-js turns an ES module into one, mapping each WIT import to
// a module specifier (`stephost:plugin/http@0.1.0`) and the exported `step`
// interface to the module's `step` export. This module wraps the raw
// imports the way the Rust SDK (`stephost-guest`) does, so that a step reads
// as the decision it makes:
//
//     import * as stephost from './stephost.js';
//
//     class Shout {
//       run(ctx, doc) {
//         return stephost.completeJson({ text: stephost.parseJson(doc).text.toUpperCase() });
//       }
//     }
//
//     export const step = stephost.exportStep(new Shout(), { name: 'shout', version: '0.1.0' });
//
// A plugin runs in a fresh sandbox for every call: nothing survives between
// `run` and `resume` except the `state` bytes handed back in `suspend` or
// `retryAfter`. Throwing a `Failure` anywhere in a step fails it with that
// code; any other exception fails it with code `plugin-exception` and the
// stack, so a bug reads as a failed execution with a reason instead of a
// bare trap.
//
// The codes this module fails a step with are the ones the Rust and Python
// SDKs report for the same condition (`docs/errors.md` in the stephost
// repository lists them; a test there checks all three).

import { register } from 'stephost:plugin/callbacks@0.1.0';
import { send as hostSend } from 'stephost:plugin/http@0.1.0';
import { log as hostLog } from 'stephost:plugin/log@0.1.0';
import { get as getSecret } from 'stephost:plugin/secrets@0.1.0';
import { hmac } from 'stephost:plugin/signing@0.1.0';

export const JSON_TYPE = 'application/json';

const encoder = new TextEncoder();

// ------------------------------------------------------------------ failures

/** Throw to fail the step: the execution fails with this code and text. */
export class Failure extends Error {
  constructor(code, text, { documentStatus, technicalStatus } = {}) {
    super(`${code}: ${text}`);
    this.code = code;
    this.text = text;
    this.documentStatus = documentStatus;
    this.technicalStatus = technicalStatus;
  }

  outcome() {
    return {
      tag: 'fail',
      val: {
        errorCode: this.code,
        errorText: this.text,
        documentStatus: this.documentStatus,
        technicalStatus: this.technicalStatus,
      },
    };
  }
}

// ------------------------------------------------------------------ outcomes

/** Go on to the next step with `doc` ({ contentType, body }). */
export function complete(doc) {
  return { tag: 'complete', val: doc };
}

/**
 * Go on to the next step with `value` as a JSON document; fails the step
 * with code `invalid-output` if `value` cannot be written as JSON.
 */
export function completeJson(value) {
  let doc;
  try {
    doc = jsonDocument(value);
  } catch (e) {
    return fail('invalid-output', `output is not JSON: ${e.message}`);
  }
  return complete(doc);
}

/** Fail the execution; the remaining steps do not run. */
export function fail(code, text, statuses = {}) {
  return new Failure(code, text, statuses).outcome();
}

/**
 * Wait for the callback registered under `correlationId` (from
 * `registerCallback`), for at most `timeoutMs` or the host's default.
 * `state` (a Uint8Array) comes back to `resume`.
 */
export function suspend(correlationId, { state = new Uint8Array(), timeoutMs } = {}) {
  return {
    tag: 'suspend',
    val: {
      correlationId,
      state,
      // A WIT u64 is a BigInt in JavaScript.
      timeoutMs: timeoutMs === undefined || timeoutMs === null ? undefined : BigInt(timeoutMs),
    },
  };
}

/** Be resumed with a `timer` event after `delayMs`; the timer is durable. */
export function retryAfter(delayMs, state = new Uint8Array()) {
  return { tag: 'retry-after', val: { delayMs: BigInt(delayMs), state } };
}

/**
 * Only from `resume` with a callback: refuse it (its sender gets 400 and
 * `reason`) and keep waiting for a valid one.
 */
export function rejectCallback(reason) {
  return { tag: 'reject-callback', val: reason };
}

// ------------------------------------------------------------------ documents

/** A JSON document (`application/json`) holding `value`. */
export function jsonDocument(value) {
  return { contentType: JSON_TYPE, body: encoder.encode(JSON.stringify(value)) };
}

/** Bytes as UTF-8 text; throws on invalid UTF-8 rather than guessing. */
export function utf8(bytes) {
  return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
}

/**
 * The body of `doc` parsed as JSON, whatever its content type says; throws
 * if it is not (see `parsed`).
 */
export function parseJson(doc) {
  return parsed(doc.body);
}

// Bytes parsed as JSON. What it throws is the usual SyntaxError (or
// TypeError, for bytes that are not UTF-8) to a step that catches it; it
// carries the `invalid-json` failure the step fails with if it lets the
// error escape, as a Rust step that propagates a serde error with `?`.
function parsed(bytes) {
  try {
    return JSON.parse(utf8(bytes));
  } catch (e) {
    e.failure = new Failure('invalid-json', e.message);
    throw e;
  }
}

/**
 * `value` as canonical JSON bytes, the form to sign: object keys sorted
 * (by UTF-16 code units, JavaScript's default sort), no insignificant
 * whitespace, UTF-8. The Python SDK writes the very same bytes, so a
 * partner verifies either.
 */
export function canonicalJson(value) {
  return encoder.encode(canonical(value));
}

function canonical(value) {
  if (Array.isArray(value)) {
    return `[${value.map(canonical).join(',')}]`;
  }
  if (value !== null && typeof value === 'object') {
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

// ------------------------------------------------------------------ context

/** The step's view of the call it serves, with its JSON fields parsed on demand. */
export class Context {
  constructor(raw) {
    this.raw = raw;
    this.executionId = raw.executionId;
    this.workflow = raw.workflow;
    this.step = raw.step;
    this.attempt = raw.attempt;
    // Stable across retries, resumes and crash re-runs of this step: send
    // it to partners as an idempotency key.
    this.stepRunId = raw.stepRunId;
  }

  /**
   * The step's config as JSON; an empty config reads as `{}`. Throws
   * `Failure('invalid-config')` if it is not a JSON object.
   */
  config() {
    const text = this.raw.config.trim();
    if (!text) {
      return {};
    }
    let value;
    try {
      value = JSON.parse(text);
    } catch (e) {
      throw new Failure('invalid-config', `step \`${this.step}\`: invalid config: ${e.message}`);
    }
    if (value === null) {
      return {};
    }
    if (typeof value !== 'object' || Array.isArray(value)) {
      throw new Failure('invalid-config', `step \`${this.step}\`: config must be a JSON object`);
    }
    return value;
  }

  /** The metadata for templating, or `null` if the host sent none. */
  metadata() {
    try {
      return JSON.parse(this.raw.metadata);
    } catch {
      return null;
    }
  }
}

// ------------------------------------------------------------------ resume events

/** A callback request as the partner sent it. */
export class Callback {
  constructor(raw) {
    this.correlationId = raw.correlationId;
    this.method = raw.method;
    this.headers = raw.headers;
    this.body = raw.body;
  }

  /** The first value of header `name`, compared case-insensitively. */
  header(name) {
    return header(this.headers, name);
  }

  /** The body parsed as JSON; throws if it is not (see `parsed`). */
  json() {
    return parsed(this.body);
  }
}

/**
 * Why `resume` is called: `kind` is `'callback'` (then `callback` is set),
 * `'timeout'` or `'timer'`.
 */
export class Event {
  constructor(raw) {
    this.kind = raw.tag;
    this.callback = raw.tag === 'callback' ? new Callback(raw.val) : undefined;
  }
}

// ------------------------------------------------------------------ http

/** A partner's answer, whatever its status. */
export class Response {
  constructor(raw) {
    this.status = raw.status;
    this.headers = raw.headers;
    this.body = raw.body;
  }

  /** Whether the status is 2xx. */
  get ok() {
    return this.status >= 200 && this.status < 300;
  }

  /** The first value of header `name`, compared case-insensitively. */
  header(name) {
    return header(this.headers, name);
  }

  /** The body parsed as JSON; throws if it is not (see `parsed`). */
  json() {
    return parsed(this.body);
  }

  /** The body as text (invalid UTF-8 replaced), cut to `maxChars` with an ellipsis, for messages. */
  text(maxChars) {
    const text = new TextDecoder().decode(this.body);
    return maxChars !== undefined && text.length > maxChars ? `${text.slice(0, maxChars)}…` : text;
  }
}

const HTTP_ERRORS = {
  'invalid-request': (v) => `invalid request: ${v}`,
  denied: (v) => `denied by host policy: ${v}`,
  timeout: () => 'no complete response within the timeout',
  connection: (v) => `connection failed: ${v}`,
  'body-too-large': (v) => `response body exceeds the host's limit of ${v} bytes`,
};

/**
 * Send one request through the host and wait for the complete response.
 * `headers` is an array of [name, value] pairs; `body` a string or bytes.
 * When no response could be had, throws `Failure('egress-denied')` if the
 * host refused the target, `Failure('body-too-large')` if the response
 * exceeded the host's limit, and `Failure('http-error')` otherwise (bad
 * request, timeout, no connection): the codes the Rust SDK gives.
 */
export function send({ method, url, headers = [], body = '', timeoutMs, validateTls = true }) {
  const request = {
    method,
    url,
    headers,
    body: typeof body === 'string' ? encoder.encode(body) : body,
    timeoutMs,
    validateTls,
  };
  try {
    return new Response(hostSend(request));
  } catch (e) {
    // componentize-js throws a WIT `result` error with the error value as
    // `payload`.
    const err = e.payload;
    if (err === undefined) {
      throw e;
    }
    const message = HTTP_ERRORS[err.tag](err.val);
    if (err.tag === 'denied') {
      throw new Failure('egress-denied', message);
    }
    if (err.tag === 'body-too-large') {
      throw new Failure('body-too-large', message);
    }
    throw new Failure('http-error', message);
  }
}

function header(headers, name) {
  const wanted = name.toLowerCase();
  const found = headers.find(([k]) => k.toLowerCase() === wanted);
  return found ? found[1] : undefined;
}

// ------------------------------------------------------------------ signing, secrets, callbacks, log

/**
 * The raw HMAC of `data` (string or bytes) with `alg` (`'sha1'`,
 * `'sha256'`, `'sha512'`), keyed by the granted secret `secretName`: the
 * host signs, and the key never enters the sandbox. Throws
 * `Failure('signing-error')` if the secret is unknown or not granted.
 */
export function hmacWithSecret(alg, secretName, data) {
  return sign(alg, { tag: 'secret', val: secretName }, data);
}

/** The raw HMAC of `data` with key bytes the plugin already has. */
export function hmacWithKey(alg, key, data) {
  return sign(alg, { tag: 'inline', val: key }, data);
}

function sign(alg, key, data) {
  try {
    return hmac(alg, key, typeof data === 'string' ? encoder.encode(data) : data);
  } catch (e) {
    if (e.payload === undefined) {
      throw e;
    }
    throw new Failure('signing-error', e.payload);
  }
}

/** Lower-case hex, the usual form of a signature header. */
export function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * The value of a granted secret, or `undefined`. Prefer `hmacWithSecret`
 * when the secret is only needed to sign.
 */
export function secret(name) {
  return getSecret(name);
}

/**
 * Register a callback for this step; returns `{ correlationId, url }`.
 * Durable before it returns, so the URL may go to the partner at once.
 * Throws `Failure('callback-error')`.
 */
export function registerCallback({ requireToken = false } = {}) {
  try {
    return register({ requireToken });
  } catch (e) {
    if (e.payload === undefined) {
      throw e;
    }
    throw new Failure('callback-error', `could not register a callback: ${e.payload}`);
  }
}

/**
 * One line in the daemon's log, tagged with the execution and step.
 * `level` is `'trace'`, `'debug'`, `'info'`, `'warn'` or `'error'`.
 */
export function log(level, message) {
  hostLog(level, message);
}

// ------------------------------------------------------------------ export

/**
 * The object to export as `step` for a step with `run(ctx, doc)` and, if it
 * suspends, `resume(ctx, doc, state, event)`: `ctx` is a `Context`, `doc`
 * a WIT document ({ contentType, body }), `state` a Uint8Array and `event`
 * an `Event`.
 */
export function exportStep(step, { name, version, description = '', configSchema }) {
  return {
    describe() {
      return { name, version, description, configSchema };
    },
    run(ctx, input) {
      return guard(() => step.run(new Context(ctx), input));
    },
    resume(ctx, input, state, event) {
      if (typeof step.resume !== 'function') {
        return fail('unexpected-resume', `step \`${ctx.step}\` never suspends`);
      }
      return guard(() => step.resume(new Context(ctx), input, state, new Event(event)));
    },
  };
}

function guard(call) {
  try {
    return call();
  } catch (e) {
    if (e instanceof Failure) {
      return e.outcome();
    }
    if (e && e.failure instanceof Failure) {
      return e.failure.outcome();
    }
    return fail('plugin-exception', e && e.stack ? `${e}\n${e.stack}` : String(e));
  }
}
