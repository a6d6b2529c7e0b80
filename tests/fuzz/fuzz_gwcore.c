/* libFuzzer harness for gw_scan (gateway/native/gwcore.h).
 *
 * The first CONFIG_BYTES bytes of an input choose the configuration (clock
 * sync, redaction, max_line_bytes, the event budget, segment room and sync
 * unit sizes, the starting seq); the rest is the received buffer. The harness
 * calls gw_scan the way the ingest loop does, until GW_MORE:
 *   - it advances by `consumed`;
 *   - after GW_SLOW it skips that one line up to and including its LF (the
 *     Python path takes it, and writes one entry of its own: the next seq);
 *   - after GW_FULL it starts a new segment (room, unit_left, segment_empty);
 *   - after GW_BUDGET it continues with a fresh budget.
 * After every call it checks, independently of gwcore.c, what the header
 * promises, and traps (a crash libFuzzer keeps) on any violation:
 *   - consumed <= len and ends right after a LF; every consumed line fits
 *     max_line_bytes; the non-blank ones count `lines` and are objects;
 *   - `events` frames, each length u32 BE | seq u64 BE | crc32 BE | payload |
 *     hash, with consecutive seqs, a matching CRC32, a chain hash equal to
 *     BLAKE3(previous hash || header || payload), the state left at the last one;
 *   - each payload is one well-formed CBOR item of exactly `length` bytes
 *     (checked by a small skipper here: minimal heads, definite lengths, valid
 *     UTF-8, finite floats, depth-bounded), starting with the configured head
 *     and ending with a flags array that names exactly the bits of its flags
 *     byte, which has only known bits;
 *   - the flags agree with event_type and timestamp; with redaction on, no key
 *     is non-ASCII or holds a literal; with cards, no "\u" and no Luhn-valid
 *     card number (13 to 19 digits, single spaces or dashes) on an accepted line;
 *   - GW_BUDGET only when events == max_events; the segment room and the sync
 *     unit are respected, and a GW_FULL for room is real (the next frame,
 *     scanned with unlimited room, would not have fit);
 *   - MORE only when no LF is left; a second call on the same state gives
 *     byte-identical output (no uninitialised reads, nothing kept outside
 *     gw_state); output appended to buffers that already hold bytes leaves
 *     those bytes alone;
 *   - when an allocation fails (injected, below): -1, the state unchanged,
 *     nothing leaked, and the call made again succeeds.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blake3.h"
#include "gwcore.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

/* Input bytes taken by the configuration before the buffer itself. */
#define CONFIG_BYTES 6
/* CBOR nesting the skipper follows: the entry's map, the event's 32 levels
 * (GW_MAX_DEPTH) and a margin; deeper output is a violation in itself. */
#define SKIP_MAX_DEPTH 40
#define FRAME_HEADER 16
#define FRAME_OVERHEAD (FRAME_HEADER + GW_HASH_BYTES)
#define KNOWN_FLAGS                                                                                \
    (GW_MISSING_EVENT_TYPE | GW_BAD_EVENT_TYPE | GW_MISSING_TIMESTAMP | GW_BAD_TIMESTAMP |         \
     GW_CLOCK_UNSYNCED)

/* ---- CRC32 (zlib's), bit by bit: independent of any table in the core ---- */

static uint32_t crc32_of(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return c ^ 0xFFFFFFFFu;
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t be64(const uint8_t *p) { return (uint64_t)be32(p) << 32 | be32(p + 4); }

/* ---- a strict CBOR skipper ---- */

struct item {
    int major;
    uint64_t arg;   /* value, length or pair count */
    size_t head;    /* bytes of the head */
    int info;       /* additional information (for major 7) */
};

/* One item's head at p (n bytes left); 0 when malformed or not minimal. */
static int read_head(const uint8_t *p, size_t n, struct item *it) {
    if (n < 1)
        return 0;
    it->major = p[0] >> 5;
    it->info = p[0] & 31;
    int info = it->info;
    if (it->major == 7) {
        /* simple values false/true/null, and floats; nothing else is made from JSON */
        if (info == 20 || info == 21 || info == 22) {
            it->head = 1;
            it->arg = 0;
            return 1;
        }
        size_t w = info == 25 ? 2 : info == 26 ? 4 : info == 27 ? 8 : 0;
        if (w == 0 || n < 1 + w)
            return 0;
        it->head = 1 + w;
        it->arg = 0;
        if (info == 27) {
            uint64_t bits = be64(p + 1);
            CHECK(((bits >> 52) & 0x7FF) != 0x7FF); /* finite: no inf or NaN from JSON */
        } else if (info == 26) {
            CHECK(((be32(p + 1) >> 23) & 0xFF) != 0xFF);
        } else {
            CHECK(((((uint32_t)p[1] << 8 | p[2]) >> 10) & 0x1F) != 0x1F);
        }
        return 1;
    }
    if (it->major == 6)
        return 0; /* no tags in an event entry */
    if (info < 24) {
        it->arg = (uint64_t)info;
        it->head = 1;
        return 1;
    }
    size_t w = info == 24 ? 1 : info == 25 ? 2 : info == 26 ? 4 : info == 27 ? 8 : 0;
    if (w == 0 || n < 1 + w)
        return 0; /* reserved, or indefinite length (never written) */
    uint64_t v = 0;
    for (size_t i = 0; i < w; i++)
        v = v << 8 | p[1 + i];
    /* the shortest form, as the Python encoder writes it (byte-identical frames) */
    uint64_t min = w == 1 ? 24 : w == 2 ? 0x100 : w == 4 ? 0x10000 : 0x100000000ull;
    if (v < min)
        return 0;
    it->arg = v;
    it->head = 1 + w;
    return 1;
}

static int utf8_ok(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) {
            k = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            k = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            k = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (n - i <= k)
            return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + j] & 0x3F);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) || cp > 0x10FFFF)
            return 0; /* overlong or out of range */
        if (cp >= 0xD800 && cp <= 0xDFFF)
            return 0; /* a surrogate: not encodable as UTF-8 text */
        i += k + 1;
    }
    return 1;
}

struct scan_ctx {
    const struct gw_config *cfg;
    int in_event; /* keys here are the client's (redaction rules apply) */
};

static int ieq_at(const uint8_t *s, const char *lit, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c >= 'A' && c <= 'Z')
            c = (uint8_t)(c + 32);
        if (c != (uint8_t)lit[i])
            return 0;
    }
    return 1;
}

static void check_key(const struct scan_ctx *cx, const uint8_t *k, size_t n) {
    const struct gw_config *cfg = cx->cfg;
    if (!cx->in_event || !cfg->redact)
        return;
    for (size_t i = 0; i < n; i++)
        CHECK(k[i] < 0x80); /* a non-ASCII key goes to Python when redacting */
    for (size_t l = 0; l < cfg->n_literals; l++) {
        size_t ln = cfg->literal_lens[l];
        for (size_t i = 0; ln <= n && i <= n - ln; i++)
            CHECK(!ieq_at(k + i, cfg->literals[l], ln));
    }
}

/* Skip one item at p[0..n); returns its size, or 0 when malformed. `depth`
 * counts the containers around it; maps check their keys (text, distinct,
 * at most GW_MAX_KEYS of them). */
static size_t skip(const struct scan_ctx *cx, const uint8_t *p, size_t n, int depth) {
    struct item it;
    if (depth > SKIP_MAX_DEPTH || !read_head(p, n, &it))
        return 0;
    size_t off = it.head;
    switch (it.major) {
    case 0:
    case 1:
    case 7:
        return off;
    case 2:
    case 3:
        if (it.arg > n - off)
            return 0;
        if (it.major == 3 && !utf8_ok(p + off, (size_t)it.arg))
            return 0;
        return off + (size_t)it.arg;
    case 4:
        for (uint64_t i = 0; i < it.arg; i++) {
            size_t s = skip(cx, p + off, n - off, depth + 1);
            if (s == 0)
                return 0;
            off += s;
        }
        return off;
    case 5: {
        if (cx->in_event && it.arg > GW_MAX_KEYS)
            return 0; /* a wider object goes to Python */
        const uint8_t *keys[GW_MAX_KEYS];
        size_t key_lens[GW_MAX_KEYS];
        for (uint64_t i = 0; i < it.arg; i++) {
            struct item k;
            if (!read_head(p + off, n - off, &k) || k.major != 3)
                return 0; /* JSON keys are text */
            size_t s = skip(cx, p + off, n - off, depth + 1);
            if (s == 0)
                return 0;
            const uint8_t *kt = p + off + k.head;
            size_t kn = (size_t)k.arg;
            check_key(cx, kt, kn);
            if (cx->in_event) {
                for (uint64_t j = 0; j < i; j++)
                    CHECK(!(key_lens[j] == kn && memcmp(keys[j], kt, kn) == 0)); /* repeat */
                keys[i] = kt;
                key_lens[i] = kn;
            }
            off += s;
            s = skip(cx, p + off, n - off, depth + 1);
            if (s == 0)
                return 0;
            off += s;
        }
        return off;
    }
    default:
        return 0;
    }
}

/* Container nesting of a well-formed item (1 for a map of scalars). */
static int nesting(const uint8_t *p, size_t n, size_t *size) {
    struct item it;
    CHECK(read_head(p, n, &it));
    size_t off = it.head;
    int deepest = 0;
    if (it.major == 4 || it.major == 5) {
        uint64_t count = it.major == 5 ? it.arg * 2 : it.arg;
        for (uint64_t i = 0; i < count; i++) {
            size_t s;
            int d = nesting(p + off, n - off, &s);
            if (d > deepest)
                deepest = d;
            off += s;
        }
        *size = off;
        return deepest + 1;
    }
    if (it.major == 2 || it.major == 3)
        off += (size_t)it.arg;
    *size = off;
    return 0;
}

/* The value of top-level key `name` in the event map at p, or NULL. */
static const uint8_t *lookup(const uint8_t *p, size_t n, const char *name, size_t *vlen) {
    struct scan_ctx plain = {NULL, 0};
    struct item it;
    CHECK(read_head(p, n, &it) && it.major == 5);
    size_t off = it.head, nl = strlen(name);
    for (uint64_t i = 0; i < it.arg; i++) {
        struct item k;
        CHECK(read_head(p + off, n - off, &k));
        size_t ks = skip(&plain, p + off, n - off, 1);
        int hit = k.arg == nl && memcmp(p + off + k.head, name, nl) == 0;
        off += ks;
        size_t vs = skip(&plain, p + off, n - off, 1);
        if (hit) {
            *vlen = vs;
            return p + off;
        }
        off += vs;
    }
    return NULL;
}

static const char *const FLAG_NAMES[] = {"missing_event_type", "bad_event_type",
                                         "missing_timestamp", "bad_timestamp", "clock_unsynced"};

/* One payload: head, the event's map, "flags", the flags array naming `flag`. */
static void check_payload(const struct gw_config *cfg, const uint8_t *p, size_t n, uint8_t flag) {
    struct scan_ctx outer = {cfg, 0};
    CHECK(skip(&outer, p, n, 0) == n); /* one item, exactly `length` bytes */
    CHECK(n > cfg->head_len && memcmp(p, cfg->head, cfg->head_len) == 0);
    const uint8_t *ev = p + cfg->head_len;
    size_t left = n - cfg->head_len;
    struct scan_ctx inner = {cfg, 1};
    size_t es = skip(&inner, ev, left, 1);
    CHECK(es > 0 && (ev[0] >> 5) == 5); /* the event is an object */
    size_t es2;
    CHECK(nesting(ev, left, &es2) <= GW_MAX_DEPTH && es2 == es);
    const uint8_t *tail = ev + es;
    size_t tl = left - es;
    CHECK(tl >= 6 && memcmp(tail, "\x65" "flags", 6) == 0);
    tail += 6;
    tl -= 6;
    struct item arr;
    CHECK(read_head(tail, tl, &arr) && arr.major == 4);
    size_t off = arr.head;
    uint64_t named = 0;
    for (int bit = 0; bit < 5; bit++) {
        if (!(flag & (1u << bit)))
            continue;
        size_t ln = strlen(FLAG_NAMES[bit]);
        struct item s;
        CHECK(named < arr.arg && read_head(tail + off, tl - off, &s) && s.major == 3);
        CHECK(s.arg == ln && memcmp(tail + off + s.head, FLAG_NAMES[bit], ln) == 0);
        off += s.head + ln;
        named++;
    }
    CHECK(named == arr.arg && off == tl);

    /* the reference's rules (gateway/ingest/validate.py), as far as CBOR shows them */
    size_t vl = 0;
    const uint8_t *v = lookup(ev, left, "event_type", &vl);
    int missing = v == NULL || v[0] == 0xF6;
    int good = v != NULL && (v[0] >> 5) == 3 && v[0] != 0x60;
    CHECK(!!(flag & GW_MISSING_EVENT_TYPE) == missing);
    CHECK(!!(flag & GW_BAD_EVENT_TYPE) == (!missing && !good));
    v = lookup(ev, left, "timestamp", &vl);
    missing = v == NULL || v[0] == 0xF6;
    CHECK(!!(flag & GW_MISSING_TIMESTAMP) == missing);
    if (!missing && (v[0] >> 5) != 3)
        CHECK(flag & GW_BAD_TIMESTAMP); /* a timestamp that is not text is bad */
    CHECK(!((flag & GW_MISSING_TIMESTAMP) && (flag & GW_BAD_TIMESTAMP)));
    v = lookup(ev, left, "event_id", &vl);
    if (v != NULL) { /* bad_event_id is Python's: an accepted id is 1-128 printable ASCII */
        struct item s;
        CHECK(read_head(v, vl, &s) && s.major == 3 && s.arg >= 1 && s.arg <= 128);
        for (size_t i = 0; i < s.arg; i++)
            CHECK(v[s.head + i] >= 0x20 && v[s.head + i] < 0x7F);
    }
}

/* ---- lines ---- */

static int is_digit(uint8_t c) { return c >= '0' && c <= '9'; }

static const uint8_t *find_lf(const uint8_t *p, size_t n) { return memchr(p, '\n', n); }

static int blank(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r')
            return 0;
    return 1;
}

static int json_space(uint8_t c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

static int luhn(const uint8_t *d, size_t n) {
    unsigned sum = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned v = d[n - 1 - i];
        if (i & 1)
            v = v * 2 > 9 ? v * 2 - 9 : v * 2;
        sum += v;
    }
    return sum % 10 == 0;
}

/* A card number as the reference's redaction sees one: a Luhn-valid match of
 * (?<!\d)\d(?:[ -]?\d){12,18}(?!\d), tried from every start of a group of
 * digits forward to every end of one (a superset of re.finditer's matches). */
static int holds_card(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(p[i]) || (i > 0 && is_digit(p[i - 1])))
            continue;
        uint8_t d[19];
        size_t k = 0, j = i;
        for (;;) {
            d[k++] = (uint8_t)(p[j] - '0');
            j++;
            int group_ends = j == n || !is_digit(p[j]);
            if (group_ends && k >= 13 && luhn(d, k))
                return 1;
            if (k == 19)
                break;
            if (j < n && is_digit(p[j]))
                continue;
            if (j + 1 < n && (p[j] == ' ' || p[j] == '-') && is_digit(p[j + 1])) {
                j++;
                continue;
            }
            break;
        }
    }
    return 0;
}

/* The lines in `in[0..consumed)`: whole, within max_line_bytes, the non-blank
 * ones objects; with cards, none with "\u" or a card number. */
static size_t check_lines(const struct gw_config *cfg, const uint8_t *in, size_t consumed) {
    size_t pos = 0, nonblank = 0;
    while (pos < consumed) {
        const uint8_t *lf = find_lf(in + pos, consumed - pos);
        CHECK(lf != NULL);
        size_t n = (size_t)(lf - (in + pos));
        const uint8_t *line = in + pos;
        CHECK(n <= cfg->max_line_bytes); /* a longer one is line_too_long, Python's */
        if (!blank(line, n)) {
            nonblank++;
            size_t a = 0, b = n;
            while (a < b && json_space(line[a]))
                a++;
            while (b > a && json_space(line[b - 1]))
                b--;
            CHECK(b - a >= 2 && line[a] == '{' && line[b - 1] == '}');
            if (cfg->cards) {
                for (size_t i = 0; i < n; i++)
                    CHECK(!(line[i] == '\\' && i + 1 < n && line[i + 1] == 'u'));
                CHECK(!holds_card(line, n));
            }
        }
        pos += n + 1;
    }
    return nonblank;
}

/* ---- frames ---- */

/* Walk `events` frames; check each and the chain. `before_last`: the bytes of
 * all frames but the last (for the sync unit check). */
static void check_frames(const struct gw_config *cfg, const struct gw_limits *lim,
                         const struct gw_state *before, const struct gw_state *after,
                         const struct gw_buf *frames, const struct gw_buf *flags, size_t events,
                         size_t *before_last) {
    CHECK(flags->len == events);
    CHECK(events == 0 || (frames->data != NULL && flags->data != NULL));
    uint8_t hash[GW_HASH_BYTES];
    memcpy(hash, before->hash, GW_HASH_BYTES);
    size_t off = 0;
    for (size_t i = 0; i < events; i++) {
        CHECK(frames->len - off >= FRAME_OVERHEAD);
        const uint8_t *f = frames->data + off;
        uint32_t length = be32(f) & 0x7FFFFFFFu;
        /* bit 31 (UNIT_START) on the first frame of a call that starts a unit, only */
        CHECK((be32(f) >> 31) == (i == 0 && lim->unit_start));
        CHECK(be64(f + 4) == before->seq + i);
        CHECK(be32(f + 12) == crc32_of(f, 12));
        CHECK(length <= frames->len - off - FRAME_OVERHEAD);
        uint8_t flag = flags->data[i];
        CHECK((flag & ~KNOWN_FLAGS) == 0);
        CHECK(!!(flag & GW_CLOCK_UNSYNCED) == !!cfg->unsynced);
        check_payload(cfg, f + FRAME_HEADER, length, flag);
        blake3_hasher h;
        blake3_hasher_init(&h);
        blake3_hasher_update(&h, hash, GW_HASH_BYTES);
        blake3_hasher_update(&h, f, FRAME_HEADER + (size_t)length);
        blake3_hasher_finalize(&h, hash, GW_HASH_BYTES);
        CHECK(memcmp(hash, f + FRAME_HEADER + length, GW_HASH_BYTES) == 0);
        if (i + 1 == events)
            *before_last = off;
        off += FRAME_OVERHEAD + (size_t)length;
    }
    CHECK(off == frames->len); /* nothing but the frames */
    CHECK(after->seq == before->seq + events);
    CHECK(memcmp(after->hash, hash, GW_HASH_BYTES) == 0);
}

/* ---- allocation failures ----
 * gwcore.c is built with -Drealloc=gwfuzz_realloc (tests/fuzz/run.sh): the
 * allocation that `fail_after` counts down to fails once, so the out-of-memory
 * paths run too (-1, the state unchanged, nothing leaked, a retry that works). */

static long fail_after = -1; /* allocations left before the failing one; -1: none */

void *gwfuzz_realloc(void *p, size_t n);
void *gwfuzz_realloc(void *p, size_t n) {
    if (fail_after == 0) {
        fail_after = -1;
        return NULL;
    }
    if (fail_after > 0)
        fail_after--;
    return realloc(p, n);
}

/* ---- configuration ---- */

static const char *const LITERALS[] = {"password", "token", "secret", "card"};
static const size_t LITERAL_LENS[] = {8, 5, 6, 4};

static const size_t MAX_EVENTS[8] = {1, 2, 3, 5, 16, 64, 1000, SIZE_MAX};
/* Room and sync-unit sizes: below one frame, about one, a few, a segment, unlimited. */
static const size_t SIZES[8] = {1, 120, 200, 400, 700, 4096, 1 << 20, SIZE_MAX};
static const uint64_t SEQS[4] = {1, 255, 0xFFFFFFFFull, 0x0123456789ABCDEFull};

/* The entry's head, as entries.py builds it: map(5) "kind" "event"
 * "received_at" <uint> "source" {addr, port, app, conn[, auth]} "event". */
static size_t make_head(uint8_t *h, uint8_t sel) {
    size_t n = 0;
#define PUT(s) (memcpy(h + n, s, sizeof(s) - 1), n += sizeof(s) - 1)
    PUT("\xa5\x64kind\x65" "event\x6breceived_at");
    if (sel & 1) {
        PUT("\x1b\x00\x06\x1d\x9c\x2e\x5f\x80\x00"); /* a 2026 time in microseconds */
    } else {
        PUT("\x00"); /* 0: the smallest head */
    }
    PUT("\x66source");
    if (sel & 2) {
        PUT("\xa5\x64" "addr\x69" "127.0.0.1\x64port\x19\xd4\x31\x63" "app\x63pos\x64" "conn\x01"
            "\x64" "auth\xf5");
    } else {
        PUT("\xa4\x64" "addr\x63::1\x64port\x18\x50\x63" "app\xf6\x64" "conn\x1a\x00\x01\x00\x00");
    }
    PUT("\x65" "event");
#undef PUT
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < CONFIG_BYTES)
        return 0;
    uint8_t c0 = data[0], c1 = data[1], c2 = data[2], c3 = data[3], c4 = data[4], c5 = data[5];
    const uint8_t *in = data + CONFIG_BYTES;
    size_t len = size - CONFIG_BYTES;

    uint8_t head[128];
    struct gw_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.head = head;
    cfg.head_len = make_head(head, c5);
    cfg.unsynced = c0 & 1;
    int redaction = (c0 >> 1) & 3; /* 0 off, 1 keys, 2 and 3 keys and cards */
    cfg.redact = redaction != 0;
    cfg.cards = redaction >= 2;
    cfg.literals = cfg.redact ? LITERALS : NULL;
    cfg.literal_lens = cfg.redact ? LITERAL_LENS : NULL;
    cfg.n_literals = cfg.redact ? (redaction == 3 ? 4 : 3) : 0;
    /* small limits (1..256 bytes) hit line_too_long; large is 1 MiB, the default's scale */
    cfg.max_line_bytes = (c0 & 8) ? (size_t)c4 + 1 : (size_t)1 << 20;
    int twice = (c0 >> 4) & 1; /* repeat each call on the same state: same output */
    /* frames and flags already holding bytes (a reused buffer): appended after them */
    size_t prefix = (c0 & 32) ? (size_t)(c3 & 15) + 1 : 0;
    fail_after = (c0 & 64) ? (long)(c4 & 31) : -1;

    struct gw_limits base;
    base.max_events = MAX_EVENTS[c1 & 7];
    base.room = SIZES[(c1 >> 3) & 7];
    base.unit_left = SIZES[c2 & 7];
    base.segment_empty = (c2 >> 3) & 1;
    base.unit_start = (c2 >> 6) & 1;
    struct gw_limits lim = base;

    struct gw_state st;
    st.seq = SEQS[(c2 >> 4) & 3];
    for (int i = 0; i < GW_HASH_BYTES; i++)
        st.hash[i] = (uint8_t)(c3 + i * 37);

    static int trace = -1; /* FUZZ_TRACE=1: each call's result on stderr */
    if (trace < 0)
        trace = getenv("FUZZ_TRACE") != NULL;
    size_t pos = 0;
    /* Every call moves on by a line or starts a segment: more calls is a loop. */
    size_t max_calls = 2 * len + 8;
    for (size_t call = 0;; call++) {
        CHECK(call < max_calls);
        struct gw_buf frames = {NULL, 0, 0}, flags = {NULL, 0, 0};
        if (prefix) {
            frames.data = malloc(prefix);
            flags.data = malloc(prefix);
            CHECK(frames.data != NULL && flags.data != NULL);
            memset(frames.data, 0xEE, prefix);
            memset(flags.data, 0xEE, prefix);
            frames.len = frames.cap = flags.len = flags.cap = prefix;
        }
        struct gw_result res;
        memset(&res, 0xA5, sizeof res);
        struct gw_state before = st;
        size_t avail = len - pos;
        int rc = gw_scan(&cfg, in + pos, avail, &lim, &st, &frames, &flags, &res);
        if (rc != 0) { /* out of memory: nothing valid, the state unchanged; try again */
            CHECK(rc == -1);
            CHECK(memcmp(&st, &before, sizeof st) == 0);
            CHECK(frames.len >= prefix && flags.len >= prefix);
            for (size_t i = 0; i < prefix; i++)
                CHECK(frames.data[i] == 0xEE && flags.data[i] == 0xEE);
            gw_buf_free(&frames);
            gw_buf_free(&flags);
            continue;
        }
        if (trace)
            fprintf(stderr, "call %zu at %zu: stop %d consumed %zu events %zu lines %zu\n", call,
                    pos, res.stop, res.consumed, res.events, res.lines);
        if (prefix) { /* what was there stays; the new frames follow it */
            CHECK(frames.len >= prefix && flags.len >= prefix);
            for (size_t i = 0; i < prefix; i++)
                CHECK(frames.data[i] == 0xEE && flags.data[i] == 0xEE);
            frames.len -= prefix;
            flags.len -= prefix;
            frames.cap -= prefix;
            flags.cap -= prefix;
            frames.data += prefix;
            flags.data += prefix;
        }
        CHECK(res.stop >= GW_MORE && res.stop <= GW_FULL);
        CHECK(res.consumed <= avail);
        CHECK(res.consumed == 0 || in[pos + res.consumed - 1] == '\n');
        CHECK(res.events <= lim.max_events);
        CHECK(res.lines == res.events); /* a non-blank line taken is an event */
        CHECK(check_lines(&cfg, in + pos, res.consumed) == res.lines);
        CHECK(frames.len <= frames.cap && flags.len <= flags.cap);

        size_t before_last = 0;
        check_frames(&cfg, &lim, &before, &st, &frames, &flags, res.events, &before_last);
        size_t total = frames.len;
        if (res.stop == GW_BUDGET)
            CHECK(res.events == lim.max_events);
        /* room: every frame fits, but a first one into an empty segment */
        if (total > lim.room)
            CHECK(lim.segment_empty && res.events == 1);
        /* the sync unit: the scan stops right after the frame that fills it */
        if (res.events >= 2)
            CHECK(before_last < lim.unit_left);
        if (total >= lim.unit_left)
            CHECK(res.stop == GW_FULL || (res.stop == GW_BUDGET && res.events == lim.max_events));

        const uint8_t *rest = in + pos + res.consumed;
        size_t rest_len = avail - res.consumed;
        const uint8_t *lf = find_lf(rest, rest_len);
        if (res.stop == GW_MORE)
            CHECK(lf == NULL); /* a complete line was left */
        if (res.stop == GW_SLOW)
            CHECK(rest_len > 0);
        if (res.stop == GW_FULL) {
            CHECK(res.events > 0 || !lim.segment_empty); /* an empty segment takes one */
            CHECK(lf != NULL || total >= lim.unit_left); /* else a whole line did not fit */
        }

        if (twice) {
            struct gw_buf f2 = {NULL, 0, 0}, g2 = {NULL, 0, 0};
            struct gw_result r2;
            struct gw_state s2 = before;
            int rc2 = gw_scan(&cfg, in + pos, avail, &lim, &s2, &f2, &g2, &r2);
            if (rc2 == 0) {
                CHECK(r2.consumed == res.consumed && r2.events == res.events);
                CHECK(r2.lines == res.lines && r2.stop == res.stop);
                CHECK(f2.len == frames.len && g2.len == flags.len);
                CHECK(f2.len == 0 || memcmp(f2.data, frames.data, f2.len) == 0);
                CHECK(g2.len == 0 || memcmp(g2.data, flags.data, g2.len) == 0);
                CHECK(memcmp(&s2, &st, sizeof st) == 0);
            }
            gw_buf_free(&f2);
            gw_buf_free(&g2);
        }
        if (prefix) {
            frames.data -= prefix;
            flags.data -= prefix;
        }
        gw_buf_free(&frames);
        gw_buf_free(&flags);

        if (res.stop == GW_FULL && total < lim.unit_left && rest_len > 0) {
            /* a GW_FULL for room: the next frame, with room to spare, would not fit */
            struct gw_limits probe = lim;
            probe.room = SIZE_MAX;
            probe.max_events = 1;
            probe.unit_left = SIZE_MAX;
            probe.segment_empty = lim.segment_empty && res.events == 0;
            struct gw_state s3 = st;
            struct gw_buf f3 = {NULL, 0, 0}, g3 = {NULL, 0, 0};
            struct gw_result r3;
            if (gw_scan(&cfg, rest, rest_len, &probe, &s3, &f3, &g3, &r3) == 0 && r3.events == 1) {
                size_t used = total > lim.room ? lim.room : total;
                CHECK(r3.consumed > 0 && f3.len > lim.room - used);
            }
            gw_buf_free(&f3);
            gw_buf_free(&g3);
        }

        pos += res.consumed;
        switch (res.stop) {
        case GW_MORE:
            return 0;
        case GW_SLOW:
            if (lf == NULL)
                return 0; /* an unfinished line: Python buffers it (or sees it overlong) */
            pos += (size_t)(lf - rest) + 1;
            /* the Python path writes that line's entry (accepted or rejected) */
            st.seq += 1;
            st.hash[0] ^= 0x5A;
            lim.room = lim.room > total + 100 ? lim.room - total - 100 : 0;
            lim.unit_left = lim.unit_left > total + 100 ? lim.unit_left - total - 100 : 1;
            lim.segment_empty = 0;
            lim.max_events = lim.max_events - res.events > 0 ? lim.max_events - res.events : 1;
            break;
        case GW_BUDGET:
            lim.max_events = base.max_events;
            lim.room = lim.room > total ? lim.room - total : 0;
            lim.unit_left = lim.unit_left > total ? lim.unit_left - total : 1;
            lim.segment_empty = lim.segment_empty && res.events == 0;
            break;
        case GW_FULL:
            lim = base; /* a new segment, a new sync unit */
            lim.segment_empty = 1;
            break;
        }
    }
}
