/* The canonical JSON writer: the bytes a plugin signs and a partner
 * verifies, so they must be byte for byte what the Python and JavaScript
 * SDKs write for the same document: keys sorted by UTF-16 code units, no
 * whitespace, strings escaped as JSON.stringify escapes them, numbers as
 * JavaScript prints them. */

#include "stephost.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *data;
    size_t len, cap;
    const char *error;
} writer;

static void put(writer *w, const char *s, size_t n)
{
    if (w->len + n + 1 > w->cap) {
        size_t cap = w->cap ? w->cap : 256;
        while (cap < w->len + n + 1)
            cap *= 2;
        char *data = realloc(w->data, cap);
        if (!data)
            abort();
        w->data = data;
        w->cap = cap;
    }
    memcpy(w->data + w->len, s, n);
    w->len += n;
    w->data[w->len] = 0;
}

static void puts_(writer *w, const char *s) { put(w, s, strlen(s)); }

/* As JSON.stringify escapes: quote, backslash and control characters;
 * everything else, non-ASCII included, as it is. */
static bool put_string(writer *w, const char *s, size_t n)
{
    const uint8_t *p = (const uint8_t *)s, *end = p + n;
    put(w, "\"", 1);
    while (p < end) {
        size_t len = stephost_utf8_len(p, end);
        if (!len) {
            w->error = "a string is not UTF-8";
            return false;
        }
        char esc[8];
        switch (*p) {
        case '"': puts_(w, "\\\""); break;
        case '\\': puts_(w, "\\\\"); break;
        case '\b': puts_(w, "\\b"); break;
        case '\f': puts_(w, "\\f"); break;
        case '\n': puts_(w, "\\n"); break;
        case '\r': puts_(w, "\\r"); break;
        case '\t': puts_(w, "\\t"); break;
        default:
            if (*p < 0x20) {
                snprintf(esc, sizeof esc, "\\u%04x", *p);
                puts_(w, esc);
            } else {
                put(w, (const char *)p, len);
            }
        }
        p += len;
    }
    put(w, "\"", 1);
    return true;
}

/* ECMAScript's Number::toString: the shortest digits that read back as
 * the same double, placed as JavaScript places them (1e21 and up, and
 * below 1e-6, with an exponent). */
static bool put_number(writer *w, double x)
{
    if (!isfinite(x)) {
        w->error = "a number is not finite";
        return false;
    }
    if (x == 0) {
        puts_(w, "0"); /* -0 too, as JSON.stringify writes it */
        return true;
    }
    char sci[40];
    for (int precision = 1; precision <= 17; precision++) {
        snprintf(sci, sizeof sci, "%.*e", precision - 1, x);
        if (strtod(sci, NULL) == x)
            break;
    }
    /* sci is "[-]d[.ddd]e(+|-)XX": k digits, decimal exponent n. */
    char digits[20];
    int k = 0;
    const char *c = sci;
    if (*c == '-') {
        put(w, "-", 1);
        c++;
    }
    for (; *c != 'e'; c++)
        if (*c != '.')
            digits[k++] = *c;
    int n = atoi(c + 1) + 1;
    char out[48];
    if (k <= n && n <= 21) {
        put(w, digits, (size_t)k);
        for (int i = k; i < n; i++)
            put(w, "0", 1);
    } else if (0 < n && n <= 21) {
        put(w, digits, (size_t)n);
        put(w, ".", 1);
        put(w, digits + n, (size_t)(k - n));
    } else if (-6 < n && n <= 0) {
        put(w, "0.", 2);
        for (int i = 0; i < -n; i++)
            put(w, "0", 1);
        put(w, digits, (size_t)k);
    } else {
        put(w, digits, 1);
        if (k > 1) {
            put(w, ".", 1);
            put(w, digits + 1, (size_t)(k - 1));
        }
        snprintf(out, sizeof out, "e%c%d", n - 1 < 0 ? '-' : '+', abs(n - 1));
        puts_(w, out);
    }
    return true;
}

/* Walks a well-formed UTF-8 string as UTF-16 code units. */
typedef struct {
    const uint8_t *p, *end;
    int pending;
} units;

static int next_unit(units *u)
{
    if (u->pending >= 0) {
        int unit = u->pending;
        u->pending = -1;
        return unit;
    }
    if (u->p >= u->end)
        return -1;
    size_t n = stephost_utf8_len(u->p, u->end);
    uint32_t cp = *u->p;
    if (n > 1) {
        cp &= 0x7F >> n;
        for (size_t i = 1; i < n; i++)
            cp = cp << 6 | (u->p[i] & 0x3F);
    }
    u->p += n ? n : 1;
    if (cp < 0x10000)
        return (int)cp;
    cp -= 0x10000;
    u->pending = (int)(0xDC00 + (cp & 0x3FF));
    return (int)(0xD800 + (cp >> 10));
}

static const stephost_json_member *sorting;

/* By UTF-16 code units, as JavaScript's default sort orders keys; equal
 * keys by position, so that the last of duplicates can be picked. */
static int by_key(const void *a, const void *b)
{
    const stephost_json_member *x = &sorting[*(const size_t *)a];
    const stephost_json_member *y = &sorting[*(const size_t *)b];
    units ux = {(const uint8_t *)x->key, (const uint8_t *)x->key + x->key_len, -1};
    units uy = {(const uint8_t *)y->key, (const uint8_t *)y->key + y->key_len, -1};
    for (;;) {
        int cx = next_unit(&ux), cy = next_unit(&uy);
        if (cx != cy)
            return cx < cy ? -1 : 1;
        if (cx < 0)
            break;
    }
    return *(const size_t *)a < *(const size_t *)b ? -1 : 1;
}

static bool write_value(writer *w, const stephost_json *v, int depth)
{
    if (depth > STEPHOST_JSON_MAX_DEPTH) {
        w->error = "nested too deeply";
        return false;
    }
    switch (v->kind) {
    case STEPHOST_JSON_NULL: puts_(w, "null"); return true;
    case STEPHOST_JSON_BOOL: puts_(w, v->boolean ? "true" : "false"); return true;
    case STEPHOST_JSON_NUMBER: return put_number(w, v->number);
    case STEPHOST_JSON_STRING: return put_string(w, v->string, v->length);
    case STEPHOST_JSON_ARRAY:
        put(w, "[", 1);
        for (size_t i = 0; i < v->count; i++) {
            if (i)
                put(w, ",", 1);
            if (!write_value(w, v->items[i], depth + 1))
                return false;
        }
        put(w, "]", 1);
        return true;
    case STEPHOST_JSON_OBJECT: {
        size_t *order = stephost_alloc(v->count * sizeof *order);
        for (size_t i = 0; i < v->count; i++)
            order[i] = i;
        sorting = v->members;
        qsort(order, v->count, sizeof *order, by_key);
        put(w, "{", 1);
        bool first = true;
        for (size_t i = 0; i < v->count; i++) {
            const stephost_json_member *m = &v->members[order[i]];
            const stephost_json_member *next = i + 1 < v->count ? &v->members[order[i + 1]] : NULL;
            if (next && next->key_len == m->key_len && memcmp(next->key, m->key, m->key_len) == 0)
                continue; /* a duplicate key; the last one follows */
            if (!first)
                put(w, ",", 1);
            first = false;
            if (!put_string(w, m->key, m->key_len))
                return false;
            put(w, ":", 1);
            if (!write_value(w, m->value, depth + 1))
                return false;
        }
        put(w, "}", 1);
        free(order);
        return true;
    }
    }
    w->error = "unknown value kind";
    return false;
}

bool stephost_canonical_json(const stephost_json *value, stephost_buffer *out)
{
    writer w = {0};
    put(&w, "", 0);
    if (!write_value(&w, value, 0)) {
        stephost_set_failure("invalid-output", "output is not JSON: %s", w.error);
        return false;
    }
    out->data = (uint8_t *)w.data;
    out->len = w.len;
    return true;
}
