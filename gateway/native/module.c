/* gateway._native: the CPython face of the native ingest core (gwcore.h).
 *
 * One object per intake configuration, `Scanner(max_line_bytes, literals,
 * cards)`, and one call per received buffer, `scan(...)`, which returns the
 * frames to append and one flag byte per event (gateway/ingest/fast.py reads
 * them). The scan runs without the GIL: the durability thread and the other
 * threads keep running while the loop thread parses.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "gwcore.h"

typedef struct {
    PyObject_HEAD
    struct gw_config cfg;
    char **literals;
    size_t *literal_lens;
    struct gw_buf frames;
    struct gw_buf flags;
} Scanner;

/* Output buffers kept between calls up to this size (a buffer of lines at the
 * default 64 KiB read makes well under 1 MiB of frames); beyond it they are
 * freed after the call so one huge read does not pin its memory. */
#define KEEP_BUFFER_BYTES (1u << 20)

static void Scanner_clear_literals(Scanner *self)
{
    for (size_t i = 0; i < self->cfg.n_literals; i++)
        PyMem_RawFree(self->literals[i]);
    PyMem_RawFree(self->literals);
    PyMem_RawFree(self->literal_lens);
    self->literals = NULL;
    self->literal_lens = NULL;
    self->cfg.n_literals = 0;
}

static void Scanner_dealloc(Scanner *self)
{
    Scanner_clear_literals(self);
    gw_buf_free(&self->frames);
    gw_buf_free(&self->flags);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Scanner_init(Scanner *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"max_line_bytes", "literals", "cards", NULL};
    Py_ssize_t max_line;
    PyObject *literals = Py_None;
    int cards = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "n|Op", kwlist, &max_line, &literals, &cards))
        return -1;
    if (max_line < 0) {
        PyErr_SetString(PyExc_ValueError, "max_line_bytes must not be negative");
        return -1;
    }
    Scanner_clear_literals(self);
    self->cfg.max_line_bytes = (size_t)max_line;
    self->cfg.cards = cards;
    self->cfg.redact = literals != Py_None || cards;
    if (literals == Py_None)
        return 0;
    PyObject *seq = PySequence_Fast(literals, "literals must be a sequence of bytes");
    if (seq == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    self->literals = PyMem_RawCalloc((size_t)n + 1, sizeof(char *));
    self->literal_lens = PyMem_RawCalloc((size_t)n + 1, sizeof(size_t));
    if (self->literals == NULL || self->literal_lens == NULL) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        char *data;
        Py_ssize_t len;
        if (PyBytes_AsStringAndSize(item, &data, &len) < 0) {
            Py_DECREF(seq);
            return -1;
        }
        char *copy = PyMem_RawMalloc((size_t)len + 1);
        if (copy == NULL) {
            Py_DECREF(seq);
            PyErr_NoMemory();
            return -1;
        }
        memcpy(copy, data, (size_t)len);
        copy[len] = 0;
        self->literals[i] = copy;
        self->literal_lens[i] = (size_t)len;
        self->cfg.n_literals = (size_t)i + 1;
    }
    Py_DECREF(seq);
    self->cfg.literals = (const char *const *)self->literals;
    self->cfg.literal_lens = self->literal_lens;
    return 0;
}

PyDoc_STRVAR(scan_doc,
"scan(buf, pos, head, unsynced, seq, prev_hash, max_events, room, segment_empty, unit_left,\n"
"     unit_start, max_line_bytes=None)\n"
"--\n\n"
"Take the plain events of buf[pos:] (see gateway/native/gwcore.h).\n"
"max_line_bytes: the connection's own limit, when not the Scanner's.\n"
"Returns (pos, events, stop, frames, flags, last_hash): the position after\n"
"the last line taken, the number of events, why it stopped (0 more bytes\n"
"needed, 1 the next line is for the Python path, 2 the budget, 3 the segment\n"
"or sync unit is full), their frames, one flag byte per event, and the chain\n"
"hash of the last frame. max_events < 0: no budget.");

static PyObject *Scanner_scan(Scanner *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 11 && nargs != 12) {
        PyErr_SetString(PyExc_TypeError, "scan() takes 11 or 12 arguments");
        return NULL;
    }
    size_t max_line = self->cfg.max_line_bytes;
    if (nargs == 12 && args[11] != Py_None) {
        Py_ssize_t n = PyLong_AsSsize_t(args[11]);
        if (n == -1 && PyErr_Occurred())
            return NULL;
        if (n < 0) {
            PyErr_SetString(PyExc_ValueError, "max_line_bytes must not be negative");
            return NULL;
        }
        max_line = (size_t)n;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred())
        return NULL;
    int unsynced = PyObject_IsTrue(args[3]);
    if (unsynced < 0)
        return NULL;
    unsigned long long seq = PyLong_AsUnsignedLongLong(args[4]);
    if (seq == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t max_events = PyLong_AsSsize_t(args[6]);
    if (max_events == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t room = PyLong_AsSsize_t(args[7]);
    if (room == -1 && PyErr_Occurred())
        return NULL;
    int segment_empty = PyObject_IsTrue(args[8]);
    if (segment_empty < 0)
        return NULL;
    Py_ssize_t unit_left = PyLong_AsSsize_t(args[9]);
    if (unit_left == -1 && PyErr_Occurred())
        return NULL;
    int unit_start = PyObject_IsTrue(args[10]);
    if (unit_start < 0)
        return NULL;
    char *head, *prev;
    Py_ssize_t head_len, prev_len;
    if (PyBytes_AsStringAndSize(args[2], &head, &head_len) < 0 ||
        PyBytes_AsStringAndSize(args[5], &prev, &prev_len) < 0)
        return NULL;
    if (prev_len != GW_HASH_BYTES) {
        PyErr_SetString(PyExc_ValueError, "prev_hash must be 32 bytes");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (pos < 0 || pos > view.len) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "pos is outside the buffer");
        return NULL;
    }
    struct gw_config cfg = self->cfg;
    cfg.head = (const uint8_t *)head;
    cfg.head_len = (size_t)head_len;
    cfg.unsynced = unsynced;
    cfg.max_line_bytes = max_line;
    struct gw_limits lim = {
        .max_events = max_events < 0 ? SIZE_MAX : (size_t)max_events,
        .room = room < 0 ? 0 : (size_t)room,
        .segment_empty = segment_empty,
        .unit_left = unit_left <= 0 ? 1 : (size_t)unit_left,
        .unit_start = unit_start,
    };
    struct gw_state st;
    st.seq = seq;
    memcpy(st.hash, prev, GW_HASH_BYTES);
    struct gw_result res;
    self->frames.len = 0;
    self->flags.len = 0;
    int rc;
    /* The head bytes and view stay alive: the caller holds them during the call. */
    Py_BEGIN_ALLOW_THREADS
    rc = gw_scan(&cfg, (const uint8_t *)view.buf + pos, (size_t)(view.len - pos), &lim, &st,
                 &self->frames, &self->flags, &res);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (rc < 0)
        return PyErr_NoMemory();
    PyObject *out = Py_BuildValue(
        "(nnny#y#y#)", pos + (Py_ssize_t)res.consumed, (Py_ssize_t)res.events,
        (Py_ssize_t)res.stop, (const char *)self->frames.data, (Py_ssize_t)self->frames.len,
        (const char *)self->flags.data, (Py_ssize_t)self->flags.len, (const char *)st.hash,
        (Py_ssize_t)GW_HASH_BYTES);
    if (self->frames.cap > KEEP_BUFFER_BYTES)
        gw_buf_free(&self->frames);
    if (self->flags.cap > KEEP_BUFFER_BYTES)
        gw_buf_free(&self->flags);
    return out;
}

static PyMethodDef Scanner_methods[] = {
    {"scan", (PyCFunction)(void (*)(void))Scanner_scan, METH_FASTCALL, scan_doc},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ScannerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "gateway._native.Scanner",
    .tp_basicsize = sizeof(Scanner),
    .tp_dealloc = (destructor)Scanner_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The native ingest core for one intake configuration.",
    .tp_methods = Scanner_methods,
    .tp_init = (initproc)Scanner_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT, "gateway._native",
    "The native ingest core (gateway/native/gwcore.h).", -1, NULL,
};

PyMODINIT_FUNC PyInit__native(void)
{
    if (PyType_Ready(&ScannerType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&native_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&ScannerType);
    if (PyModule_AddObject(m, "Scanner", (PyObject *)&ScannerType) < 0) {
        Py_DECREF(&ScannerType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "MAX_DEPTH", GW_MAX_DEPTH) < 0 ||
        PyModule_AddIntConstant(m, "MORE", GW_MORE) < 0 ||
        PyModule_AddIntConstant(m, "SLOW", GW_SLOW) < 0 ||
        PyModule_AddIntConstant(m, "BUDGET", GW_BUDGET) < 0 ||
        PyModule_AddIntConstant(m, "FULL", GW_FULL) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
