/* The native ingest core: received bytes to ledger frames, with no CPython.
 *
 * gw_scan() takes the bytes a connection has buffered and, line by line,
 * does what the Python reference path does for a plain event (gateway/ingest/
 * protocol.py, validate.py, redact.py's pre-check, ledger/entries.py and
 * ledger/format.py): split at LF, skip blank lines, parse the JSON object,
 * compute the validation flags, encode the entry as CBOR and frame it with its
 * CRC and BLAKE3 chain hash. It stops at the first line it must not decide
 * itself (GW_SLOW): the Python path then takes that one line, with every rule
 * it has, and the scan resumes after it. A line the core accepts is one the
 * reference accepts too, with byte-identical frames and the same flags; every
 * doubt (an escape in a key, a number past 18 digits, a repeated key, a key
 * redaction might match, ...) is a GW_SLOW, never a guess.
 *
 * Memory: the caller's input is only read, within [in, in + len); output goes
 * to the two gw_buf, grown with realloc (the caller frees them). Nothing is
 * kept between calls but what is in gw_state.
 */
#ifndef GWCORE_H
#define GWCORE_H

#include <stddef.h>
#include <stdint.h>

#define GW_HASH_BYTES 32

/* Objects and arrays nest at most this deep (gateway/ingest/protocol.py MAX_DEPTH). */
#define GW_MAX_DEPTH 32
/* Keys of one object compared pairwise for repeats; a wider object goes to Python. */
#define GW_MAX_KEYS 64
/* Longest number the core converts itself (JSON text); longer ones go to Python. */
#define GW_MAX_NUMBER_CHARS 64

/* Why gw_scan returned. */
enum gw_stop {
    GW_MORE = 0,   /* no complete line left: feed more bytes (or let Python see EOF) */
    GW_SLOW = 1,   /* the line at `consumed` is for the Python path */
    GW_BUDGET = 2, /* max_events events were taken */
    GW_FULL = 3,   /* the segment has no room for the next frame, or a sync unit is full */
};

/* Validation flags, one byte per event, in the reference's order. */
enum gw_flag {
    GW_MISSING_EVENT_TYPE = 1,
    GW_BAD_EVENT_TYPE = 2,
    GW_MISSING_TIMESTAMP = 4,
    GW_BAD_TIMESTAMP = 8,
    GW_CLOCK_UNSYNCED = 16,
};

struct gw_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
};

/* Fixed for a connection's call: what the Python path would use for these lines. */
struct gw_config {
    /* The entry's CBOR up to the event's map: map header, "kind": "event",
     * "received_at": <time>, "source": <source map>, "event" key. */
    const uint8_t *head;
    size_t head_len;
    size_t max_line_bytes; /* a longer line goes to Python (line_too_long) */
    int unsynced;          /* append clock_unsynced to every event's flags */
    /* Redaction (0 literals and cards 0: redaction off). A key holding one of
     * the literals (lower-case ASCII), or any non-ASCII key, goes to Python;
     * with cards, so does a line with a \u escape or with a Luhn-valid run of
     * 13 to 19 digits joined by single spaces or dashes, from the start of a
     * group of digits to the end of one (a card number may be there). */
    int redact;
    int cards;
    const char *const *literals;
    const size_t *literal_lens;
    size_t n_literals;
};

struct gw_limits {
    size_t max_events; /* stop after this many events (GW_BUDGET) */
    /* Bytes the live segment may still take: a frame that does not fit stops
     * the scan before it (GW_FULL), unless the segment holds no entry yet
     * (`segment_empty`) and it is the first frame of this call. */
    size_t room;
    int segment_empty;
    /* Bytes until the current sync unit is full: the scan stops (GW_FULL)
     * after the frame that reaches it, so the caller can mark the sync point. */
    size_t unit_left;
    /* The first frame of this call starts a sync unit: its length field gets
     * bit 31 (UNIT_START, docs/ledger-format.md "Sync units"). */
    int unit_start;
};

struct gw_state {
    uint64_t seq;                 /* the seq the next entry gets */
    uint8_t hash[GW_HASH_BYTES];  /* the chain hash of the entry before it */
};

struct gw_result {
    size_t consumed; /* input bytes taken: whole lines, LF included */
    size_t events;   /* frames appended to `frames` (and bytes to `flags`) */
    size_t lines;    /* non-blank lines taken (all events) */
    int stop;        /* enum gw_stop */
};

/* Returns 0, or -1 when memory ran out (then nothing of this call is valid
 * and `st` is unchanged). */
int gw_scan(const struct gw_config *cfg, const uint8_t *in, size_t len,
            const struct gw_limits *lim, struct gw_state *st, struct gw_buf *frames,
            struct gw_buf *flags, struct gw_result *res);

void gw_buf_free(struct gw_buf *b);

#endif
