/* The native ingest core (gwcore.h): lines of JSON to ledger frames.
 *
 * One line is read twice. The first pass checks it against the subset of
 * JSON the reference accepts and this core may decide (see gwcore.h), counts
 * the members of each object and array and the UTF-8 length of each string
 * (CBOR needs both before the items), and finds the fields validation looks
 * at. The second pass writes the CBOR. Both passes are bounded by the line:
 * recursion by GW_MAX_DEPTH, the pairwise key comparison by GW_MAX_KEYS.
 *
 * The encodings follow the Python reference byte for byte:
 * - entries.py: map(5) {"kind", "received_at", "source", "event", "flags"},
 *   the first four given pre-encoded in cfg->head;
 * - cbor2's defaults for the event: definite lengths, shortest integer and
 *   length forms, every float as a binary64 (0xfb), text for every string;
 * - format.py: length u32 | seq u64 | crc32 u32 (big-endian) | payload |
 *   BLAKE3(previous hash || header || payload), with bit 31 of the length
 *   set on the first frame of a sync unit (UNIT_START).
 */
#define _GNU_SOURCE
#include "gwcore.h"

#include <locale.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "blake3/blake3.h"

#define FRAME_HEADER_BYTES 16
#define UNIT_START 0x80000000u /* format.UNIT_START: bit 31 of the length field */

/* ---- output buffers */

static int buf_reserve(struct gw_buf *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    size_t want = b->len + extra;
    if (want < b->len)
        return -1;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < want) {
        if (cap > SIZE_MAX / 2)
            return -1;
        cap *= 2;
    }
    uint8_t *data = realloc(b->data, cap);
    if (data == NULL)
        return -1;
    b->data = data;
    b->cap = cap;
    return 0;
}

void gw_buf_free(struct gw_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* ---- CRC-32 (IEEE 802.3, as zlib.crc32) */

static uint32_t crc_table[256];
/* Numbers are read in the C locale whatever the process's (as JSON says). */
static locale_t c_locale;

__attribute__((constructor)) static void core_init(void)
{
    c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

static uint32_t crc32_ieee(const uint8_t *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    while (n--)
        c = crc_table[(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static void put_be(uint8_t *p, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

/* ---- the per-line scratch: one uint32 per container (its member count) and
 * per string (its UTF-8 length), in the order the first pass meets them. */

struct scratch {
    uint32_t *v;
    size_t n, cap;
};

static int scratch_push(struct scratch *s, uint32_t value, size_t *at)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 256;
        uint32_t *v = realloc(s->v, cap * sizeof *v);
        if (v == NULL)
            return -1;
        s->v = v;
        s->cap = cap;
    }
    *at = s->n;
    s->v[s->n++] = value;
    return 0;
}

/* ---- pass 1: check */

enum { OK = 0, SLOW = 1, NOMEM = 2 };

enum field_kind { ABSENT = 0, IS_NULL, IS_STRING, IS_OTHER };

struct field {
    enum field_kind kind;
    const uint8_t *s; /* a string's raw bytes (no escapes when `plain`) */
    size_t n;
    int plain;
};

struct check {
    const struct gw_config *cfg;
    const uint8_t *p, *e;
    struct scratch *sc;
    struct field event_type, timestamp;
    size_t floats; /* each takes 9 bytes of CBOR from as few as 3 of text */
};

static inline int is_ws(uint8_t c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

static inline void skip_ws(const uint8_t **p, const uint8_t *e)
{
    while (*p < e && is_ws(**p))
        (*p)++;
}

static int hex4(const uint8_t *p, const uint8_t *e, uint32_t *out)
{
    if (e - p < 4)
        return -1;
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        uint8_t c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (uint32_t)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

/* Length of a well-formed UTF-8 sequence at p (as Python's strict decoder
 * accepts: no overlong forms, no surrogates, at most U+10FFFF), else 0. */
static size_t utf8_seq(const uint8_t *p, const uint8_t *e)
{
    uint8_t c = p[0];
    size_t left = (size_t)(e - p);
    if (c >= 0xC2 && c <= 0xDF) {
        return left >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
    }
    if (c >= 0xE0 && c <= 0xEF) {
        if (left < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80)
            return 0;
        if (c == 0xE0 && p[1] < 0xA0)
            return 0; /* overlong */
        if (c == 0xED && p[1] >= 0xA0)
            return 0; /* a surrogate */
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (left < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 ||
            (p[3] & 0xC0) != 0x80)
            return 0;
        if (c == 0xF0 && p[1] < 0x90)
            return 0; /* overlong */
        if (c == 0xF4 && p[1] >= 0x90)
            return 0; /* past U+10FFFF */
        return 4;
    }
    return 0;
}

static size_t utf8_len(uint32_t cp) { return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4; }

/* A string after its opening quote: *plain is set when it holds no escape.
 * Its UTF-8 length goes to *len; c->p ends after the closing quote. */
static int check_string(struct check *c, size_t *len, int *plain)
{
    const uint8_t *p = c->p, *e = c->e;
    size_t n = 0;
    *plain = 1;
    while (p < e) {
        uint8_t ch = *p;
        if (ch == '"') {
            c->p = p + 1;
            *len = n;
            return OK;
        }
        if (ch < 0x20)
            return SLOW; /* a control character: the reference refuses the line */
        if (ch == '\\') {
            *plain = 0;
            if (e - p < 2)
                return SLOW;
            uint8_t x = p[1];
            if (x == 'u') {
                uint32_t cp;
                if (hex4(p + 2, e, &cp) < 0)
                    return SLOW;
                p += 6;
                if (cp >= 0xDC00 && cp <= 0xDFFF)
                    return SLOW; /* a lone low surrogate */
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    uint32_t lo;
                    if (e - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, e, &lo) < 0 ||
                        lo < 0xDC00 || lo > 0xDFFF)
                        return SLOW; /* a lone high surrogate */
                    p += 6;
                    n += 4;
                } else {
                    n += utf8_len(cp);
                }
                continue;
            }
            if (x == '"' || x == '\\' || x == '/' || x == 'b' || x == 'f' || x == 'n' ||
                x == 'r' || x == 't') {
                p += 2;
                n += 1;
                continue;
            }
            return SLOW;
        }
        if (ch < 0x80) {
            p++;
            n++;
            continue;
        }
        size_t k = utf8_seq(p, e);
        if (k == 0)
            return SLOW;
        p += k;
        n += k;
    }
    return SLOW; /* no closing quote */
}

/* ASCII case-insensitive: does the key hold one of the literals? */
static int key_may_be_sensitive(const struct gw_config *cfg, const uint8_t *k, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (k[i] >= 0x80)
            return 1; /* lower-casing beyond ASCII is the reference's to judge */
    for (size_t j = 0; j < cfg->n_literals; j++) {
        const char *lit = cfg->literals[j];
        size_t m = cfg->literal_lens[j];
        if (m == 0)
            return 1;
        for (size_t i = 0; i + m <= n; i++) {
            size_t t = 0;
            while (t < m) {
                uint8_t ch = k[i + t];
                if (ch >= 'A' && ch <= 'Z')
                    ch = (uint8_t)(ch + 32);
                if (ch != (uint8_t)lit[t])
                    break;
                t++;
            }
            if (t == m)
                return 1;
        }
    }
    return 0;
}

static int check_number(struct check *c)
{
    const uint8_t *p = c->p, *e = c->e, *start = p;
    if (p < e && *p == '-')
        p++;
    if (p >= e)
        return SLOW;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    } else {
        return SLOW; /* "-Infinity", "-" alone */
    }
    int is_float = 0;
    if (p < e && *p == '.') {
        p++;
        if (p >= e || *p < '0' || *p > '9')
            return SLOW;
        while (p < e && *p >= '0' && *p <= '9')
            p++;
        is_float = 1;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < e && (*p == '+' || *p == '-'))
            p++;
        if (p >= e || *p < '0' || *p > '9')
            return SLOW;
        while (p < e && *p >= '0' && *p <= '9')
            p++;
        is_float = 1;
    }
    size_t n = (size_t)(p - start);
    if (is_float ? n > GW_MAX_NUMBER_CHARS : n - (*start == '-') > 18)
        return SLOW; /* long floats and integers past 64 bits: the reference's */
    if (is_float) {
        char text[GW_MAX_NUMBER_CHARS + 1];
        memcpy(text, start, n);
        text[n] = 0;
        if (c_locale == (locale_t)0)
            return SLOW;
        double d = strtod_l(text, NULL, c_locale);
        if (isinf(d))
            return SLOW; /* out of range: refused by the reference */
        c->floats++;
    }
    c->p = p;
    return OK;
}

static int check_value(struct check *c, int depth, struct field *f);

static int check_literal(struct check *c, const char *word, size_t n)
{
    if ((size_t)(c->e - c->p) < n || memcmp(c->p, word, n) != 0)
        return SLOW;
    c->p += n;
    return OK;
}

/* The opening of an object or array at c->p: its member count's place in
 * the scratch (0 until it closes); EMPTY when it closes at once. */
enum { EMPTY = 3 };

static int open_container(struct check *c, int depth, uint8_t close, size_t *at)
{
    if (depth > GW_MAX_DEPTH)
        return SLOW;
    if (scratch_push(c->sc, 0, at) < 0)
        return NOMEM;
    c->p++;
    skip_ws(&c->p, c->e);
    if (c->p < c->e && *c->p == close) {
        c->p++;
        return EMPTY;
    }
    return OK;
}

static int check_object(struct check *c, int depth)
{
    const struct gw_config *cfg = c->cfg;
    size_t at;
    int opened = open_container(c, depth, '}', &at);
    if (opened != OK)
        return opened == EMPTY ? OK : opened;
    const uint8_t *keys[GW_MAX_KEYS];
    size_t key_lens[GW_MAX_KEYS];
    uint32_t count = 0;
    for (;;) {
        if (c->p >= c->e || *c->p != '"')
            return SLOW;
        if (count == GW_MAX_KEYS)
            return SLOW;
        c->p++;
        const uint8_t *k = c->p;
        size_t klen;
        int plain;
        size_t sat;
        int r = check_string(c, &klen, &plain);
        if (r != OK)
            return r;
        if (!plain)
            return SLOW; /* an escaped key: repeats and redaction are the reference's */
        if (scratch_push(c->sc, (uint32_t)klen, &sat) < 0)
            return NOMEM;
        for (uint32_t i = 0; i < count; i++)
            if (key_lens[i] == klen && memcmp(keys[i], k, klen) == 0)
                return SLOW; /* a repeated key */
        keys[count] = k;
        key_lens[count] = klen;
        count++;
        if (cfg->redact && key_may_be_sensitive(cfg, k, klen))
            return SLOW;
        struct field *f = NULL;
        if (depth == 1) {
            if (klen == 10 && memcmp(k, "event_type", 10) == 0)
                f = &c->event_type;
            else if (klen == 9 && memcmp(k, "timestamp", 9) == 0)
                f = &c->timestamp;
            else if ((klen == 8 && memcmp(k, "event_id", 8) == 0) ||
                     (klen == 5 && memcmp(k, "hello", 5) == 0))
                return SLOW; /* exactly-once ids and hellos: the reference's */
        }
        skip_ws(&c->p, c->e);
        if (c->p >= c->e || *c->p != ':')
            return SLOW;
        c->p++;
        r = check_value(c, depth, f);
        if (r != OK)
            return r;
        skip_ws(&c->p, c->e);
        if (c->p >= c->e)
            return SLOW;
        if (*c->p == ',') {
            c->p++;
            skip_ws(&c->p, c->e);
            continue;
        }
        if (*c->p == '}') {
            c->p++;
            c->sc->v[at] = count;
            return OK;
        }
        return SLOW;
    }
}

static int check_array(struct check *c, int depth)
{
    size_t at;
    int opened = open_container(c, depth, ']', &at);
    if (opened != OK)
        return opened == EMPTY ? OK : opened;
    uint32_t count = 0;
    for (;;) {
        int r = check_value(c, depth, NULL);
        if (r != OK)
            return r;
        count++;
        skip_ws(&c->p, c->e);
        if (c->p >= c->e)
            return SLOW;
        if (*c->p == ',') {
            c->p++;
            continue;
        }
        if (*c->p == ']') {
            c->p++;
            c->sc->v[at] = count;
            return OK;
        }
        return SLOW;
    }
}

/* A value; `f` (top-level event_type or timestamp) learns its kind. */
static int check_value(struct check *c, int depth, struct field *f)
{
    skip_ws(&c->p, c->e);
    if (c->p >= c->e)
        return SLOW;
    uint8_t ch = *c->p;
    enum field_kind kind = IS_OTHER;
    int r;
    if (ch == '"') {
        c->p++;
        const uint8_t *s = c->p;
        size_t len, at;
        int plain;
        r = check_string(c, &len, &plain);
        if (r != OK)
            return r;
        if (scratch_push(c->sc, (uint32_t)len, &at) < 0)
            return NOMEM;
        if (f != NULL) {
            f->kind = IS_STRING;
            f->s = s;
            f->n = (size_t)(c->p - 1 - s);
            f->plain = plain;
        }
        return OK;
    }
    if (ch == '{')
        r = check_object(c, depth + 1);
    else if (ch == '[')
        r = check_array(c, depth + 1);
    else if (ch == '-' || (ch >= '0' && ch <= '9'))
        r = check_number(c);
    else if (ch == 't')
        r = check_literal(c, "true", 4);
    else if (ch == 'f')
        r = check_literal(c, "false", 5);
    else if (ch == 'n') {
        r = check_literal(c, "null", 4);
        kind = IS_NULL;
    } else
        return SLOW; /* NaN, Infinity and anything not JSON */
    if (r == OK && f != NULL)
        f->kind = kind;
    return r;
}

/* ---- validation (validate.py) */

static int two(const uint8_t *s) { return (s[0] - '0') * 10 + (s[1] - '0'); }

static int digits(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

/* validate.py's _RFC3339 (full match) and its calendar check of days 29-31. */
static int is_rfc3339(const uint8_t *s, size_t n)
{
    if (n < 20)
        return 0;
    if (!digits(s, 4) || s[4] != '-' || !digits(s + 5, 2) || s[7] != '-' || !digits(s + 8, 2))
        return 0;
    int month = two(s + 5), day = two(s + 8);
    if (month < 1 || month > 12 || day < 1 || day > 31)
        return 0;
    if (s[10] != 'T' && s[10] != 't' && s[10] != ' ')
        return 0;
    if (!digits(s + 11, 2) || s[13] != ':' || !digits(s + 14, 2) || s[16] != ':' ||
        !digits(s + 17, 2))
        return 0;
    if (two(s + 11) > 23 || two(s + 14) > 59 || two(s + 17) > 60)
        return 0;
    size_t i = 19;
    if (s[i] == '.') {
        size_t j = i + 1;
        while (j < n && j - i - 1 < 10 && s[j] >= '0' && s[j] <= '9')
            j++;
        size_t frac = j - i - 1;
        if (frac < 1 || frac > 9)
            return 0;
        i = j;
    }
    if (i >= n)
        return 0;
    if (s[i] == 'Z' || s[i] == 'z') {
        i++;
    } else if (s[i] == '+' || s[i] == '-') {
        if (n - i < 6 || !digits(s + i + 1, 2) || s[i + 3] != ':' || !digits(s + i + 4, 2))
            return 0;
        if (two(s + i + 1) > 23 || two(s + i + 4) > 59)
            return 0;
        i += 6;
    } else {
        return 0;
    }
    if (i != n)
        return 0;
    if (day > 28) {
        int year = two(s) * 100 + two(s + 2);
        static const int mdays[13] = {0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
        int leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        int last = mdays[month] + (month == 2 && leap);
        if (day > last)
            return 0;
    }
    return 1;
}

static int flags_of(const struct check *c, const struct gw_config *cfg, uint8_t *flags)
{
    uint8_t out = 0;
    const struct field *t = &c->event_type, *ts = &c->timestamp;
    if (t->kind == ABSENT || t->kind == IS_NULL)
        out |= GW_MISSING_EVENT_TYPE;
    else if (t->kind != IS_STRING || t->n == 0)
        out |= GW_BAD_EVENT_TYPE;
    if (ts->kind == ABSENT || ts->kind == IS_NULL)
        out |= GW_MISSING_TIMESTAMP;
    else if (ts->kind != IS_STRING)
        out |= GW_BAD_TIMESTAMP;
    else if (!ts->plain)
        return SLOW; /* an escaped timestamp: its decoded text is the reference's to judge */
    else if (!is_rfc3339(ts->s, ts->n))
        out |= GW_BAD_TIMESTAMP;
    if (cfg->unsynced)
        out |= GW_CLOCK_UNSYNCED;
    *flags = out;
    return OK;
}

/* ---- pass 2: CBOR */

struct emit {
    uint8_t *o; /* room for the whole encoding was reserved */
    const uint8_t *p, *e;
    const uint32_t *v; /* the scratch, read in order */
};

static inline uint8_t *cbor_head(uint8_t *o, uint8_t major, uint64_t n)
{
    major <<= 5;
    if (n < 24) {
        *o++ = (uint8_t)(major | n);
    } else if (n <= 0xFF) {
        *o++ = major | 24;
        *o++ = (uint8_t)n;
    } else if (n <= 0xFFFF) {
        *o++ = major | 25;
        put_be(o, n, 2);
        o += 2;
    } else if (n <= 0xFFFFFFFFu) {
        *o++ = major | 26;
        put_be(o, n, 4);
        o += 4;
    } else {
        *o++ = major | 27;
        put_be(o, n, 8);
        o += 8;
    }
    return o;
}

static inline uint8_t *put_utf8(uint8_t *o, uint32_t cp)
{
    if (cp < 0x80) {
        *o++ = (uint8_t)cp;
    } else if (cp < 0x800) {
        *o++ = (uint8_t)(0xC0 | (cp >> 6));
        *o++ = (uint8_t)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *o++ = (uint8_t)(0xE0 | (cp >> 12));
        *o++ = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (uint8_t)(0x80 | (cp & 0x3F));
    } else {
        *o++ = (uint8_t)(0xF0 | (cp >> 18));
        *o++ = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
        *o++ = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (uint8_t)(0x80 | (cp & 0x3F));
    }
    return o;
}

/* A string checked by pass 1 (after its opening quote). */
static void emit_string(struct emit *m)
{
    uint32_t len = *m->v++;
    m->o = cbor_head(m->o, 3, len);
    const uint8_t *p = m->p;
    uint8_t *o = m->o;
    for (;;) {
        const uint8_t *q = p;
        while (*q != '"' && *q != '\\')
            q++;
        memcpy(o, p, (size_t)(q - p));
        o += q - p;
        p = q;
        if (*p == '"')
            break;
        uint8_t x = p[1];
        if (x == 'u') {
            uint32_t cp;
            hex4(p + 2, m->e, &cp);
            p += 6;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                uint32_t lo;
                hex4(p + 2, m->e, &lo);
                p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            o = put_utf8(o, cp);
            continue;
        }
        static const uint8_t unescaped[128] = {
            ['"'] = '"', ['\\'] = '\\', ['/'] = '/', ['b'] = '\b',
            ['f'] = '\f', ['n'] = '\n', ['r'] = '\r', ['t'] = '\t',
        };
        *o++ = unescaped[x];
        p += 2;
    }
    m->p = p + 1;
    m->o = o;
}

static void emit_number(struct emit *m)
{
    const uint8_t *p = m->p, *start = p;
    int neg = 0, is_float = 0;
    uint64_t mag = 0;
    if (*p == '-') {
        neg = 1;
        p++;
    }
    while (p < m->e && *p >= '0' && *p <= '9')
        mag = mag * 10 + (uint64_t)(*p++ - '0');
    if (p < m->e && *p == '.') {
        is_float = 1;
        p++;
        while (p < m->e && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < m->e && (*p == 'e' || *p == 'E')) {
        is_float = 1;
        p++;
        if (*p == '+' || *p == '-')
            p++;
        while (p < m->e && *p >= '0' && *p <= '9')
            p++;
    }
    if (is_float) {
        char text[GW_MAX_NUMBER_CHARS + 1];
        size_t n = (size_t)(p - start);
        memcpy(text, start, n);
        text[n] = 0;
        double d = strtod_l(text, NULL, c_locale);
        uint64_t bits;
        memcpy(&bits, &d, 8);
        *m->o++ = 0xFB;
        put_be(m->o, bits, 8);
        m->o += 8;
    } else if (neg && mag != 0) {
        m->o = cbor_head(m->o, 1, mag - 1);
    } else {
        m->o = cbor_head(m->o, 0, mag); /* -0 is the integer 0 */
    }
    m->p = p;
}

static void emit_value(struct emit *m);

static void emit_ws(struct emit *m) { skip_ws(&m->p, m->e); }

static void emit_value(struct emit *m)
{
    emit_ws(m);
    uint8_t ch = *m->p;
    if (ch == '"') {
        m->p++;
        emit_string(m);
    } else if (ch == '{') {
        uint32_t count = *m->v++;
        m->o = cbor_head(m->o, 5, count);
        m->p++;
        for (uint32_t i = 0; i < count; i++) {
            emit_ws(m);
            if (i) {
                m->p++; /* ',' */
                emit_ws(m);
            }
            m->p++; /* '"' */
            emit_string(m);
            emit_ws(m);
            m->p++; /* ':' */
            emit_value(m);
        }
        emit_ws(m);
        m->p++; /* '}' */
    } else if (ch == '[') {
        uint32_t count = *m->v++;
        m->o = cbor_head(m->o, 4, count);
        m->p++;
        for (uint32_t i = 0; i < count; i++) {
            if (i) {
                emit_ws(m);
                m->p++; /* ',' */
            }
            emit_value(m);
        }
        emit_ws(m);
        m->p++; /* ']' */
    } else if (ch == 't') {
        *m->o++ = 0xF5;
        m->p += 4;
    } else if (ch == 'f') {
        *m->o++ = 0xF4;
        m->p += 5;
    } else if (ch == 'n') {
        *m->o++ = 0xF6;
        m->p += 4;
    } else {
        emit_number(m);
    }
}

/* ---- flags (entries.py: "flags": [...], each a text string) */

static const struct {
    uint8_t bit;
    const char *name;
} FLAG_NAMES[] = {
    {GW_MISSING_EVENT_TYPE, "missing_event_type"},
    {GW_BAD_EVENT_TYPE, "bad_event_type"},
    {GW_MISSING_TIMESTAMP, "missing_timestamp"},
    {GW_BAD_TIMESTAMP, "bad_timestamp"},
    {GW_CLOCK_UNSYNCED, "clock_unsynced"},
};
#define N_FLAGS (sizeof FLAG_NAMES / sizeof FLAG_NAMES[0])
/* Every flag name is under 24 characters: one head byte each. */
#define FLAGS_MAX_BYTES (6 + 1 + N_FLAGS * 24)

static uint8_t *emit_flags(uint8_t *o, uint8_t flags)
{
    memcpy(o, "\x65" "flags", 6);
    o += 6;
    uint8_t n = 0;
    for (size_t i = 0; i < N_FLAGS; i++)
        n += (flags & FLAG_NAMES[i].bit) != 0;
    *o++ = (uint8_t)(0x80 | n);
    for (size_t i = 0; i < N_FLAGS; i++) {
        if (flags & FLAG_NAMES[i].bit) {
            size_t len = strlen(FLAG_NAMES[i].name);
            *o++ = (uint8_t)(0x60 | len);
            memcpy(o, FLAG_NAMES[i].name, len);
            o += len;
        }
    }
    return o;
}

/* ---- lines */

static int is_blank_line(const uint8_t *p, size_t n)
{
    if (n && p[0] == '{')
        return 0;
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r')
            return 0;
    return 1;
}

/* With cards redacted: could redact.py's might_need say "maybe"? It does for
 * a \u escape, and for a Luhn-valid match of its card pattern:
 * (?<!\d)\d(?:[ -]?\d){12,18}(?!\d), 13 to 19 digits with at most one space
 * or dash between two of them, starting where a group of digits starts and
 * ending where one ends. Every such substring is checked here (a superset of
 * the matches the reference's finditer meets), so a line where none is
 * Luhn-valid holds no card number for the reference either; any other line
 * is left to it. */
#define CARD_MIN_DIGITS 13
#define CARD_MAX_DIGITS 19

static int luhn_ok(const uint8_t *digits, size_t n)
{
    unsigned total = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned d = digits[n - 1 - i];
        if (i % 2) {
            d *= 2;
            if (d > 9)
                d -= 9;
        }
        total += d;
    }
    return total % 10 == 0;
}

static int may_hold_card(const uint8_t *p, size_t n)
{
    /* The chain's last CARD_MAX_DIGITS digits, and which of them start a group. */
    uint8_t digit[CARD_MAX_DIGITS], starts[CARD_MAX_DIGITS];
    size_t chain = 0; /* digits in the chain so far */
    int after_separator = 0, in_group = 0;
    for (size_t i = 0; i <= n; i++) {
        uint8_t c = i < n ? p[i] : 0;
        if (c >= '0' && c <= '9') {
            if (chain == CARD_MAX_DIGITS) { /* keep the last 19 */
                memmove(digit, digit + 1, CARD_MAX_DIGITS - 1);
                memmove(starts, starts + 1, CARD_MAX_DIGITS - 1);
                chain--;
            }
            digit[chain] = (uint8_t)(c - '0');
            starts[chain] = !in_group;
            chain++;
            in_group = 1;
            after_separator = 0;
            continue;
        }
        if (in_group && chain >= CARD_MIN_DIGITS) {
            /* A group ends here: every match ending here starts at a group start. */
            for (size_t k = CARD_MIN_DIGITS; k <= chain; k++)
                if (starts[chain - k] && luhn_ok(digit + chain - k, k))
                    return 1;
        }
        in_group = 0;
        if (c == ' ' || c == '-') {
            if (after_separator)
                chain = 0; /* two separators in a row end a chain */
            after_separator = 1;
        } else {
            chain = 0;
            after_separator = 0;
            if (c == '\\' && i + 1 < n && p[i + 1] == 'u')
                return 1;
        }
    }
    return 0;
}

/* One line: OK with the frame appended, SLOW, or NOMEM. `unit_start` is
 * UNIT_START when the frame is the first of a sync unit, else 0. */
static int take_line(const struct gw_config *cfg, const uint8_t *line, size_t n,
                     struct scratch *sc, struct gw_state *st, uint32_t unit_start,
                     struct gw_buf *frames, uint8_t *flags_out)
{
    if (cfg->cards && may_hold_card(line, n))
        return SLOW;
    struct check c = {.cfg = cfg, .p = line, .e = line + n, .sc = sc};
    sc->n = 0;
    skip_ws(&c.p, c.e);
    if (c.p >= c.e || *c.p != '{')
        return SLOW; /* not an object, or not JSON */
    int r = check_object(&c, 1);
    if (r != OK)
        return r;
    skip_ws(&c.p, c.e);
    if (c.p != c.e)
        return SLOW; /* extra data */
    uint8_t flags;
    if (flags_of(&c, cfg, &flags) != OK)
        return SLOW;
    /* The encoding is never longer than the line's text plus 9 bytes for each
     * container, string and float: an integer, a literal and a string's
     * content take no more bytes than their text, a head at most 9, and a
     * float 9 from a text of at least 3. */
    size_t bound = cfg->head_len + n + 9 * (sc->n + c.floats + 1) + FLAGS_MAX_BYTES;
    if (buf_reserve(frames, FRAME_HEADER_BYTES + bound + GW_HASH_BYTES) < 0)
        return NOMEM;
    uint8_t *frame = frames->data + frames->len;
    uint8_t *o = frame + FRAME_HEADER_BYTES;
    memcpy(o, cfg->head, cfg->head_len);
    o += cfg->head_len;
    struct emit m = {.o = o, .p = line, .e = line + n, .v = sc->v};
    emit_value(&m);
    o = emit_flags(m.o, flags);
    size_t payload = (size_t)(o - frame) - FRAME_HEADER_BYTES;
    put_be(frame, payload | unit_start, 4);
    put_be(frame + 4, st->seq, 8);
    put_be(frame + 12, crc32_ieee(frame, 12), 4);
    blake3_hasher h;
    blake3_hasher_init(&h);
    blake3_hasher_update(&h, st->hash, GW_HASH_BYTES);
    blake3_hasher_update(&h, frame, FRAME_HEADER_BYTES + payload);
    blake3_hasher_finalize(&h, o, GW_HASH_BYTES);
    *flags_out = flags;
    return OK;
}

int gw_scan(const struct gw_config *cfg, const uint8_t *in, size_t len,
            const struct gw_limits *lim, struct gw_state *st, struct gw_buf *frames,
            struct gw_buf *flags, struct gw_result *res)
{
    struct gw_state state = *st;
    struct scratch sc = {0};
    size_t pos = 0, events = 0, lines = 0, written = 0;
    size_t frames_start = frames->len, flags_start = flags->len;
    int stop = GW_MORE;
    for (;;) {
        if (events == lim->max_events) {
            stop = GW_BUDGET;
            break;
        }
        const uint8_t *line = in + pos;
        const uint8_t *nl = memchr(line, '\n', len - pos);
        if (nl == NULL) {
            stop = GW_MORE;
            break;
        }
        size_t n = (size_t)(nl - line);
        if (n > cfg->max_line_bytes) {
            stop = GW_SLOW;
            break;
        }
        if (is_blank_line(line, n)) {
            pos += n + 1;
            continue;
        }
        if (buf_reserve(flags, 1) < 0)
            goto nomem;
        size_t before = frames->len;
        uint32_t unit_start = lim->unit_start && events == 0 ? UNIT_START : 0;
        int r = take_line(cfg, line, n, &sc, &state, unit_start, frames,
                          flags->data + flags->len);
        if (r == NOMEM)
            goto nomem;
        if (r == SLOW) {
            stop = GW_SLOW;
            break;
        }
        uint8_t *frame = frames->data + before;
        size_t payload = ((size_t)(frame[0] & 0x7f) << 24) | ((size_t)frame[1] << 16) |
                         ((size_t)frame[2] << 8) | frame[3];
        size_t size = FRAME_HEADER_BYTES + payload + GW_HASH_BYTES;
        if (written + size > lim->room && !(lim->segment_empty && events == 0)) {
            stop = GW_FULL; /* the segment is full: this line opens the next one */
            break;
        }
        memcpy(state.hash, frame + size - GW_HASH_BYTES, GW_HASH_BYTES);
        state.seq++;
        frames->len = before + size;
        flags->len++;
        written += size;
        events++;
        lines++;
        pos += n + 1;
        if (written >= lim->unit_left) {
            stop = GW_FULL; /* a sync unit is complete */
            break;
        }
    }
    free(sc.v);
    *st = state;
    res->consumed = pos;
    res->events = events;
    res->lines = lines;
    res->stop = stop;
    return 0;
nomem:
    free(sc.v);
    frames->len = frames_start;
    flags->len = flags_start;
    return -1;
}
