/* JSON for C plugins, the tree and its parser: C has no JSON of its own,
 * and every document, config and callback body a step reads is JSON. The
 * parser is strict (RFC 8259, UTF-8) so that what it accepts, the
 * canonical writer (stephost_canonical.c) can write back.
 *
 * Nothing here is freed: a plugin runs in a fresh instance for every call,
 * and the instance and all its memory go when the call returns. */

#include "stephost.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void *stephost_alloc(size_t size)
{
    void *p = calloc(1, size ? size : 1);
    if (!p)
        abort(); /* out of memory: the host reports the trap */
    return p;
}

/* ------------------------------------------------------------ building */

static stephost_json *node(stephost_json_kind kind)
{
    stephost_json *v = stephost_alloc(sizeof *v);
    v->kind = kind;
    return v;
}

stephost_json *stephost_json_null(void) { return node(STEPHOST_JSON_NULL); }

stephost_json *stephost_json_bool(bool value)
{
    stephost_json *v = node(STEPHOST_JSON_BOOL);
    v->boolean = value;
    return v;
}

stephost_json *stephost_json_number(double value)
{
    stephost_json *v = node(STEPHOST_JSON_NUMBER);
    v->number = value;
    v->integral = isfinite(value) && value == trunc(value);
    return v;
}

stephost_json *stephost_json_string_n(const char *text, size_t len)
{
    stephost_json *v = node(STEPHOST_JSON_STRING);
    v->string = stephost_alloc(len + 1);
    memcpy(v->string, text, len);
    v->length = len;
    return v;
}

stephost_json *stephost_json_string(const char *text)
{
    return stephost_json_string_n(text, strlen(text));
}

stephost_json *stephost_json_array(void) { return node(STEPHOST_JSON_ARRAY); }
stephost_json *stephost_json_object(void) { return node(STEPHOST_JSON_OBJECT); }

static void grow(stephost_json *v)
{
    if (v->count < v->capacity)
        return;
    v->capacity = v->capacity ? v->capacity * 2 : 4;
    stephost_json **items = stephost_alloc(v->capacity * sizeof *items);
    stephost_json_member *members = stephost_alloc(v->capacity * sizeof *members);
    if (v->count) {
        memcpy(items, v->items, v->count * sizeof *items);
        memcpy(members, v->members, v->count * sizeof *members);
    }
    v->items = items;
    v->members = members;
}

void stephost_json_push(stephost_json *array, stephost_json *item)
{
    grow(array);
    array->items[array->count++] = item;
}

static stephost_json_member *find(const stephost_json *object, const char *key, size_t len)
{
    if (!object || object->kind != STEPHOST_JSON_OBJECT)
        return NULL;
    /* From the end: of duplicate keys the last counts, as in JavaScript
     * and Python. */
    for (size_t i = object->count; i-- > 0;) {
        stephost_json_member *m = &object->members[i];
        if (m->key_len == len && memcmp(m->key, key, len) == 0)
            return m;
    }
    return NULL;
}

static void set_n(stephost_json *object, const char *key, size_t len, stephost_json *value)
{
    stephost_json_member *m = find(object, key, len);
    if (m) {
        m->value = value;
        return;
    }
    grow(object);
    m = &object->members[object->count++];
    m->key = stephost_alloc(len + 1);
    memcpy(m->key, key, len);
    m->key_len = len;
    m->value = value;
}

void stephost_json_set(stephost_json *object, const char *key, stephost_json *value)
{
    set_n(object, key, strlen(key), value);
}

stephost_json *stephost_json_get(const stephost_json *object, const char *key)
{
    stephost_json_member *m = find(object, key, strlen(key));
    return m ? m->value : NULL;
}

const char *stephost_json_get_string(const stephost_json *object, const char *key)
{
    stephost_json *v = stephost_json_get(object, key);
    return v && v->kind == STEPHOST_JSON_STRING ? v->string : NULL;
}

bool stephost_json_u64(const stephost_json *v, uint64_t *out)
{
    /* Integers above 2^53 are not exact in a double; no timeout or count
     * needs them. */
    if (!v || v->kind != STEPHOST_JSON_NUMBER || !v->integral || v->number < 0 ||
        v->number > 9007199254740992.0)
        return false;
    *out = (uint64_t)v->number;
    return true;
}

/* ------------------------------------------------------------- parsing */

typedef struct {
    const uint8_t *p, *end, *start;
    char error[160];
} parser;

static bool fail_at(parser *ps, const char *what)
{
    if (!ps->error[0])
        snprintf(ps->error, sizeof ps->error, "%s at byte %zu", what,
                 (size_t)(ps->p - ps->start));
    return false;
}

static void skip_space(parser *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static bool literal(parser *ps, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0)
        return fail_at(ps, "unexpected character");
    ps->p += n;
    return true;
}

static int hex_digit(uint8_t c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool hex4(parser *ps, uint32_t *out)
{
    if (ps->end - ps->p < 4)
        return fail_at(ps, "short \\u escape");
    uint32_t value = 0;
    for (int i = 0; i < 4; i++) {
        int d = hex_digit(ps->p[i]);
        if (d < 0)
            return fail_at(ps, "bad \\u escape");
        value = value << 4 | (uint32_t)d;
    }
    ps->p += 4;
    *out = value;
    return true;
}

static size_t put_utf8(char *out, uint32_t cp)
{
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

size_t stephost_utf8_len(const uint8_t *p, const uint8_t *end)
{
    uint8_t c = p[0];
    size_t n;
    uint32_t cp, min;
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) { n = 2; cp = c & 0x1F; min = 0x80; }
    else if ((c & 0xF0) == 0xE0) { n = 3; cp = c & 0x0F; min = 0x800; }
    else if ((c & 0xF8) == 0xF0) { n = 4; cp = c & 0x07; min = 0x10000; }
    else return 0;
    if ((size_t)(end - p) < n) return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (p[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return n;
}

/* A string's contents, after its opening quote; NUL-terminated copy. */
static bool parse_string(parser *ps, char **out, size_t *out_len)
{
    /* Decoded text is never longer than its source. */
    const uint8_t *close = ps->p;
    while (close < ps->end && *close != '"')
        close += *close == '\\' && close + 1 < ps->end ? 2 : 1;
    char *buf = stephost_alloc((size_t)(close - ps->p) + 1);
    size_t len = 0;
    for (;;) {
        if (ps->p >= ps->end)
            return fail_at(ps, "unterminated string");
        uint8_t c = *ps->p;
        if (c == '"') {
            ps->p++;
            break;
        }
        if (c < 0x20)
            return fail_at(ps, "control character in string");
        if (c != '\\') {
            size_t n = stephost_utf8_len(ps->p, ps->end);
            if (!n)
                return fail_at(ps, "invalid UTF-8");
            memcpy(buf + len, ps->p, n);
            len += n;
            ps->p += n;
            continue;
        }
        ps->p++;
        if (ps->p >= ps->end)
            return fail_at(ps, "unterminated string");
        char e = (char)*ps->p++;
        const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
        const char *at = e ? strchr(from, e) : NULL;
        if (at) {
            buf[len++] = to[at - from];
            continue;
        }
        if (e != 'u')
            return fail_at(ps, "bad escape");
        uint32_t cp;
        if (!hex4(ps, &cp))
            return false;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            uint32_t low;
            if (ps->end - ps->p < 2 || ps->p[0] != '\\' || ps->p[1] != 'u')
                return fail_at(ps, "lone surrogate escape");
            ps->p += 2;
            if (!hex4(ps, &low))
                return false;
            if (low < 0xDC00 || low > 0xDFFF)
                return fail_at(ps, "lone surrogate escape");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            return fail_at(ps, "lone surrogate escape");
        }
        len += put_utf8(buf + len, cp);
    }
    buf[len] = 0;
    *out = buf;
    *out_len = len;
    return true;
}

static bool digits(parser *ps)
{
    const uint8_t *from = ps->p;
    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')
        ps->p++;
    return ps->p > from;
}

static bool parse_number(parser *ps, stephost_json **out)
{
    const uint8_t *from = ps->p;
    bool integral = true;
    if (*ps->p == '-')
        ps->p++;
    if (ps->p < ps->end && *ps->p == '0')
        ps->p++;
    else if (!digits(ps))
        return fail_at(ps, "bad number");
    if (ps->p < ps->end && *ps->p == '.') {
        ps->p++;
        integral = false;
        if (!digits(ps))
            return fail_at(ps, "bad number");
    }
    if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E')) {
        ps->p++;
        integral = false;
        if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-'))
            ps->p++;
        if (!digits(ps))
            return fail_at(ps, "bad number");
    }
    size_t n = (size_t)(ps->p - from);
    char *text = stephost_alloc(n + 1);
    memcpy(text, from, n);
    errno = 0;
    double value = strtod(text, NULL);
    free(text);
    if (!isfinite(value))
        return fail_at(ps, "number out of range");
    *out = stephost_json_number(value);
    /* As Python reads it: an int is written without fraction or exponent. */
    (*out)->integral = integral;
    return true;
}

static bool parse_value(parser *ps, stephost_json **out, int depth)
{
    skip_space(ps);
    if (ps->p >= ps->end)
        return fail_at(ps, "unexpected end of input");
    if (depth > STEPHOST_JSON_MAX_DEPTH)
        return fail_at(ps, "nested too deeply");
    switch (*ps->p) {
    case 'n':
        *out = stephost_json_null();
        return literal(ps, "null");
    case 't':
        *out = stephost_json_bool(true);
        return literal(ps, "true");
    case 'f':
        *out = stephost_json_bool(false);
        return literal(ps, "false");
    case '"': {
        ps->p++;
        stephost_json *v = node(STEPHOST_JSON_STRING);
        *out = v;
        return parse_string(ps, &v->string, &v->length);
    }
    case '[': {
        ps->p++;
        stephost_json *v = *out = stephost_json_array();
        skip_space(ps);
        if (ps->p < ps->end && *ps->p == ']') {
            ps->p++;
            return true;
        }
        for (;;) {
            stephost_json *item;
            if (!parse_value(ps, &item, depth + 1))
                return false;
            stephost_json_push(v, item);
            skip_space(ps);
            if (ps->p < ps->end && *ps->p == ',') { ps->p++; continue; }
            if (ps->p < ps->end && *ps->p == ']') { ps->p++; return true; }
            return fail_at(ps, "expected ',' or ']'");
        }
    }
    case '{': {
        ps->p++;
        stephost_json *v = *out = stephost_json_object();
        skip_space(ps);
        if (ps->p < ps->end && *ps->p == '}') {
            ps->p++;
            return true;
        }
        for (;;) {
            char *key;
            size_t key_len;
            stephost_json *item;
            skip_space(ps);
            if (ps->p >= ps->end || *ps->p != '"')
                return fail_at(ps, "expected a string key");
            ps->p++;
            if (!parse_string(ps, &key, &key_len))
                return false;
            skip_space(ps);
            if (ps->p >= ps->end || *ps->p != ':')
                return fail_at(ps, "expected ':'");
            ps->p++;
            if (!parse_value(ps, &item, depth + 1))
                return false;
            /* Appended even if the key repeats: the last one counts
             * (find, canonical), and a search per key would make parsing
             * quadratic in the number of keys. */
            grow(v);
            v->members[v->count++] = (stephost_json_member){key, key_len, item};
            skip_space(ps);
            if (ps->p < ps->end && *ps->p == ',') { ps->p++; continue; }
            if (ps->p < ps->end && *ps->p == '}') { ps->p++; return true; }
            return fail_at(ps, "expected ',' or '}'");
        }
    }
    default:
        if (*ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9'))
            return parse_number(ps, out);
        return fail_at(ps, "unexpected character");
    }
}

stephost_json *stephost_json_parse(const uint8_t *data, size_t len)
{
    parser ps = {.p = data, .end = data + len, .start = data};
    stephost_json *value = NULL;
    bool ok = parse_value(&ps, &value, 0);
    if (ok) {
        skip_space(&ps);
        if (ps.p != ps.end)
            ok = fail_at(&ps, "extra data after the value");
    }
    if (!ok) {
        stephost_set_failure("invalid-json", "%s", ps.error);
        return NULL;
    }
    return value;
}

