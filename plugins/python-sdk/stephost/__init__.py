"""Write stephost step plugins in Python.

A step plugin is a WebAssembly component of the `stephost:plugin/step-plugin`
world (`wit/stephost.wit`). componentize-py turns a Python module into one
and generates the raw bindings (`wit_world`) while it builds; this package
wraps them the way the Rust SDK (`stephost-guest`) does, so that a step reads
as the decision it makes:

    import stephost

    class Shout:
        def run(self, ctx, doc):
            return stephost.complete_json({"text": stephost.parse_json(doc)["text"].upper()})

    Step = stephost.export(Shout, name="shout", version="0.1.0")

componentize-py looks for a class named `Step` (the exported WIT interface)
in the app module, hence the assignment.

A plugin runs in a fresh sandbox for every call: nothing survives between
`run` and `resume` except the `state` bytes handed back in `suspend` or
`retry_after`. Raising `Failure` anywhere in a step fails it with that code;
any other exception fails it with code `plugin-exception` and the traceback,
so a bug reads as a failed execution with a reason instead of a bare trap.

The codes this package fails a step with are the ones the Rust and
JavaScript SDKs report for the same condition (`docs/errors.md` in the
stephost repository lists them; a test there checks all three).
"""

import json
import traceback

# The version of the contract this package speaks (`stephost:plugin@0.1.0`);
# pyproject.toml says the same, and a test keeps the two equal.
__version__ = "0.1.0"

from componentize_py_types import Err
from wit_world.imports import callbacks as _callbacks
from wit_world.imports import http as _http
from wit_world.imports import log as _log
from wit_world.imports import secrets as _secrets
from wit_world.imports import signing as _signing
from wit_world.imports import types as _types

JSON = "application/json"

# ---------------------------------------------------------------- failures


class Failure(Exception):
    """Raise to fail the step: the execution fails with this code and text,
    and the rest of the workflow is skipped."""

    def __init__(self, code, text, document_status=None, technical_status=None):
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text
        self.document_status = document_status
        self.technical_status = technical_status

    def outcome(self):
        return _types.Outcome_Fail(
            _types.Failure(self.code, self.text, self.document_status, self.technical_status)
        )


class JsonFailure(Failure, ValueError):
    """What the JSON helpers raise for bytes that are not JSON: a plain
    `ValueError` to a step that catches it, and the `invalid-json` failure
    if the step lets it escape, as a Rust step that propagates a serde error
    with `?` does."""

    def __str__(self):
        return self.text


# ---------------------------------------------------------------- outcomes


def complete(doc):
    """Go on to the next step with `doc` (a WIT `Document`)."""
    return _types.Outcome_Complete(doc)


def complete_json(value):
    """Go on to the next step with `value` as a JSON document; fails the
    step with code `invalid-output` if `value` cannot be written as JSON."""
    try:
        doc = json_document(value)
    except (TypeError, ValueError) as e:
        return fail("invalid-output", f"output is not JSON: {e}")
    return complete(doc)


def fail(code, text, document_status=None, technical_status=None):
    """Fail the execution; the remaining steps do not run."""
    return Failure(code, text, document_status, technical_status).outcome()


def suspend(correlation_id, state=b"", timeout_ms=None):
    """Wait for the callback registered under `correlation_id` (from
    `register_callback`), for at most `timeout_ms` or the host's default.
    `state` (bytes) comes back to `resume`."""
    return _types.Outcome_Suspend(_types.Suspension(correlation_id, bytes(state), timeout_ms))


def retry_after(delay_ms, state=b""):
    """Be resumed with a `timer` event after `delay_ms`; the timer is
    durable."""
    return _types.Outcome_RetryAfter(_types.Retry(delay_ms, bytes(state)))


def reject_callback(reason):
    """Only from `resume` with a callback: refuse it (its sender gets 400 and
    `reason`) and keep waiting for a valid one."""
    return _types.Outcome_RejectCallback(reason)


# ---------------------------------------------------------------- documents


def json_document(value):
    """A JSON document (`application/json`) holding `value`."""
    return _types.Document(JSON, json.dumps(value, ensure_ascii=False).encode("utf-8"))


def parse_json(doc):
    """The body of `doc` parsed as JSON, whatever its content type says.
    Raises `JsonFailure` (a `ValueError`) if it is not JSON."""
    return _parse(doc.body)


def _parse(data):
    try:
        return json.loads(bytes(data).decode("utf-8"))
    except ValueError as e:
        raise JsonFailure("invalid-json", str(e)) from None


def canonical_json(value):
    """`value` as canonical JSON bytes, the form to sign: object keys sorted
    (by UTF-16 code units, as JavaScript sorts), no insignificant
    whitespace, UTF-8, integral numbers without a fraction. The JavaScript
    SDK writes the very same bytes, so a partner verifies either."""
    return _canonical(value).encode("utf-8")


def _canonical(value):
    if isinstance(value, dict):
        keys = sorted(value, key=_utf16_units)
        items = (json.dumps(k, ensure_ascii=False) + ":" + _canonical(value[k]) for k in keys)
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_canonical(v) for v in value) + "]"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return json.dumps(value, ensure_ascii=False)


def _utf16_units(text):
    # By hand: the sandbox's standard library has no UTF-16 codec.
    units = []
    for c in text:
        code = ord(c)
        if code > 0xFFFF:
            code -= 0x10000
            units += (0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF))
        else:
            units.append(code)
    return units


# ---------------------------------------------------------------- context


class Context:
    """The step's view of the call it serves, with its JSON fields parsed
    on demand."""

    def __init__(self, raw):
        self.raw = raw
        self.execution_id = raw.execution_id
        self.workflow = raw.workflow
        self.step = raw.step
        self.attempt = raw.attempt
        # Stable across retries, resumes and crash re-runs of this step:
        # send it to partners as an idempotency key.
        self.step_run_id = raw.step_run_id

    def config(self):
        """The step's config as JSON; an empty config reads as `{}`.
        Raises `Failure("invalid-config")` if it is not a JSON object."""
        text = self.raw.config.strip()
        if not text:
            return {}
        try:
            value = json.loads(text)
        except ValueError as e:
            raise Failure("invalid-config", f"step `{self.step}`: invalid config: {e}") from e
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise Failure("invalid-config", f"step `{self.step}`: config must be a JSON object")
        return value

    def metadata(self):
        """The metadata for templating, or `None` if the host sent none."""
        try:
            return json.loads(self.raw.metadata)
        except ValueError:
            return None


# ---------------------------------------------------------------- resume events


class Callback:
    """A callback request as the partner sent it."""

    def __init__(self, raw):
        self.correlation_id = raw.correlation_id
        self.method = raw.method
        self.headers = raw.headers
        self.body = bytes(raw.body)

    def header(self, name):
        """The first value of header `name`, compared case-insensitively."""
        return _header(self.headers, name)

    def json(self):
        """The body parsed as JSON; raises `JsonFailure` (a `ValueError`)
        if it is not."""
        return _parse(self.body)


class Event:
    """Why `resume` is called: `kind` is `"callback"` (then `callback` is
    set), `"timeout"` or `"timer"`."""

    def __init__(self, raw):
        if isinstance(raw, _types.ResumeEvent_Callback):
            self.kind, self.callback = "callback", Callback(raw.value)
        elif isinstance(raw, _types.ResumeEvent_Timeout):
            self.kind, self.callback = "timeout", None
        else:
            self.kind, self.callback = "timer", None


# ---------------------------------------------------------------- http


class Response:
    """A partner's answer, whatever its status."""

    def __init__(self, raw):
        self.status = raw.status
        self.headers = raw.headers
        self.body = bytes(raw.body)

    @property
    def ok(self):
        """Whether the status is 2xx."""
        return 200 <= self.status < 300

    def header(self, name):
        """The first value of header `name`, compared case-insensitively."""
        return _header(self.headers, name)

    def json(self):
        """The body parsed as JSON; raises `JsonFailure` (a `ValueError`)
        if it is not."""
        return _parse(self.body)

    def text(self, max_chars=None):
        """The body as text (invalid UTF-8 replaced), cut to `max_chars`
        with an ellipsis, for error messages."""
        text = self.body.decode("utf-8", errors="replace")
        if max_chars is not None and len(text) > max_chars:
            return text[:max_chars] + "…"
        return text


_HTTP_ERRORS = {
    _http.HttpError_InvalidRequest: lambda v: f"invalid request: {v}",
    _http.HttpError_Denied: lambda v: f"denied by host policy: {v}",
    _http.HttpError_Timeout: lambda v: "no complete response within the timeout",
    _http.HttpError_Connection: lambda v: f"connection failed: {v}",
    _http.HttpError_BodyTooLarge: lambda v: f"response body exceeds the host's limit of {v} bytes",
}


def send(method, url, headers=(), body=b"", timeout_ms=None, validate_tls=True):
    """Send one request through the host and wait for the complete response.
    `headers` is a list of (name, value) pairs. When no response could be
    had, raises `Failure("egress-denied")` if the host refused the target,
    `Failure("body-too-large")` if the response exceeded the host's limit,
    and `Failure("http-error")` otherwise (bad request, timeout, no
    connection): the codes the Rust SDK gives."""
    request = _http.Request(method, url, list(headers), bytes(body), timeout_ms, validate_tls)
    try:
        return Response(_http.send(request))
    except Err as e:
        error = e.value
        message = _HTTP_ERRORS[type(error)](getattr(error, "value", None))
        if isinstance(error, _http.HttpError_Denied):
            raise Failure("egress-denied", message) from None
        if isinstance(error, _http.HttpError_BodyTooLarge):
            raise Failure("body-too-large", message) from None
        raise Failure("http-error", message) from None


def _header(headers, name):
    name = name.lower()
    return next((v for k, v in headers if k.lower() == name), None)


# ---------------------------------------------------------------- signing, secrets, callbacks, log

SHA1 = _signing.HmacAlg.SHA1
SHA256 = _signing.HmacAlg.SHA256
SHA512 = _signing.HmacAlg.SHA512


def hmac_with_secret(alg, secret_name, data):
    """The raw HMAC of `data`, keyed by the granted secret `secret_name`:
    the host signs, and the key never enters the sandbox. Raises
    `Failure("signing-error")` if the secret is unknown or not granted."""
    return _hmac(alg, _signing.KeyRef_Secret(secret_name), data)


def hmac_with_key(alg, key, data):
    """The raw HMAC of `data` with key bytes the plugin already has."""
    return _hmac(alg, _signing.KeyRef_Inline(bytes(key)), data)


def _hmac(alg, key, data):
    try:
        return bytes(_signing.hmac(alg, key, bytes(data)))
    except Err as e:
        raise Failure("signing-error", e.value) from None


def secret(name):
    """The value of a granted secret, or `None`. Prefer `hmac_with_secret`
    when the secret is only needed to sign."""
    return _secrets.get(name)


def register_callback(require_token=False):
    """Register a callback for this step; returns a ticket with
    `correlation_id` and `url`. Durable before it returns, so the URL may go
    to the partner at once. Raises `Failure("callback-error")`."""
    try:
        return _callbacks.register(_callbacks.CallbackOptions(require_token))
    except Err as e:
        raise Failure("callback-error", f"could not register a callback: {e.value}") from None


def log(level, message):
    """One line in the daemon's log, tagged with the execution and step.
    `level` is `"trace"`, `"debug"`, `"info"`, `"warn"` or `"error"`."""
    _log.log(_log.Level[level.upper()], message)


# ---------------------------------------------------------------- export


def export(step_class, name, version, description="", config_schema=None):
    """The WIT-facing class for a step class with `run(ctx, doc)` and,
    if it suspends, `resume(ctx, doc, state, event)`. `ctx` is a `Context`,
    `doc` the WIT `Document`, `state` bytes and `event` an `Event`."""
    step = step_class()

    class Exported:
        def describe(self):
            return _types.PluginInfo(name, version, description, config_schema)

        def run(self, ctx, input):
            return _guard(lambda: step.run(Context(ctx), input))

        def resume(self, ctx, input, state, event):
            if not hasattr(step, "resume"):
                return fail("unexpected-resume", f"step `{ctx.step}` never suspends")
            return _guard(lambda: step.resume(Context(ctx), input, bytes(state), Event(event)))

    return Exported


def _guard(call):
    try:
        return call()
    except Failure as f:
        return f.outcome()
    except Exception:  # a bug must still end as a readable failure, not a trap
        return fail("plugin-exception", traceback.format_exc(limit=8))
