/* Private header of the _engine binding, shared by its three files (as CPython's
 * Modules/_sqlite/ shares module.h):
 *   _enginemodule.c  module init, error raising, argument and geometry helpers
 *   _cache_type.c    the CacheBase type (uwcache.Cache's C base)
 *   _compat.c        uWSGI's cache_* functions
 * The hot-path helpers are static inline here so that Cache.get/set and cache_get/set
 * compile to the same code as when the binding was one file. Every other shared symbol is
 * hidden (-fvisibility=hidden): only PyInit__engine is exported. */
#ifndef UWCACHE_ENGINE_BINDING_H
#define UWCACHE_ENGINE_BINDING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"

/* ---- module state (single-phase init: one interpreter), defined in _enginemodule.c ---- */

extern PyObject *ErrCache, *ErrKeyTooLong, *ErrValueTooLarge, *ErrEmptyValue, *ErrCacheFull,
    *ErrNotAnInteger, *ErrRegionMismatch, *ErrCorruptStore, *ErrCacheClosed;
extern PyObject *compat_registry;   /* dict: name -> CacheBase, first = default cache */
extern uint64_t compat_gen;         /* bumped on every registry change */
extern PyObject *compat_remote;     /* callable for "name@host:port", or None */
extern unsigned long fork_generation;

typedef struct {
    PyObject_HEAD
    uwc_cache c;
    int open;
    Py_buffer view;
    PyObject *name;
    uwc_counter_slot *counters;
    unsigned long counter_gen;
    PyObject *on_write;
    PyObject *on_full;
    int full_silent;
    time_t last_full_call;
    uint64_t recovered_dropped;
    PyObject *weakreflist;
    volatile sig_atomic_t broken; /* set by the SIGBUS guard: the region's file was truncated */
    int guard_slot;               /* index in guards[], or -1 */
    PyObject *near_prefix;  /* near cache (issue 11): the Redis key prefix, bytes */
    PyObject *near_miss;    /* near cache: called as miss(key, untrusted) on a miss */
} CacheObject;

extern PyTypeObject CacheType;            /* _cache_type.c */
extern PyMethodDef uwcb_compat_methods[]; /* _compat.c */

/* The open modes of CacheBase(buffer, name, params, mode), exported as MODE_* constants. */
enum uwcb_mode { UWCB_MODE_CREATE = 0, UWCB_MODE_ATTACH = 1, UWCB_MODE_RECOVER = 2 };

#define OP_SET 1
#define OP_DELETE 2
#define OP_CLEAR 3

static inline uint64_t now_s(void) { return (uint64_t)time(NULL); }

/* ---- shared helpers (_enginemodule.c) ---- */

int parse_args(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, const char *fname,
               const char *const *names, int nmax, int nreq, PyObject **out);
int get_expires(PyObject *o, uint64_t *out);
int parse_params(PyObject *t, uwc_params *p);
const char *cname(CacheObject *self);
int raise_broken(CacheObject *self);
PyObject *raise_status(CacheObject *self, int rc, Py_ssize_t klen, Py_ssize_t vlen);

/* ---- CacheBase helpers also used by the compat functions (_cache_type.c) ---- */

int do_write(CacheObject *self, PyObject *key, PyObject *value, uint64_t expires, uint32_t flags, int fire);
int do_delete(CacheObject *self, PyObject *key, int fire);
PyObject *keybuf_to_list(uwc_keybuf *kb);

/* d[name] = v for a new reference v (or NULL, an error already set), which it consumes:
 * the one step of the loops that build a dict from a table (stats, region layout). */
static inline int dict_put_new(PyObject *d, const char *name, PyObject *v) {
    int rc = v ? PyDict_SetItemString(d, name, v) : -1;
    Py_XDECREF(v);
    return rc;
}

/* ---- argument helpers ---- */


typedef struct { const char *p; Py_ssize_t n; Py_buffer view; int has_view; } sbuf;

static inline int sbuf_get(PyObject *o, sbuf *b, const char *what) {
    b->has_view = 0;
    if (PyBytes_Check(o)) {
        b->p = PyBytes_AS_STRING(o);
        b->n = PyBytes_GET_SIZE(o);
        return 0;
    }
    if (PyUnicode_Check(o)) {
        b->p = PyUnicode_AsUTF8AndSize(o, &b->n);
        return b->p ? 0 : -1;
    }
    if (PyObject_CheckBuffer(o)) {
        if (PyObject_GetBuffer(o, &b->view, PyBUF_SIMPLE) < 0) return -1;
        b->has_view = 1;
        b->p = b->view.buf;
        b->n = b->view.len;
        return 0;
    }
    PyErr_Format(PyExc_TypeError, "%s must be bytes or str, not %.100s", what, Py_TYPE(o)->tp_name);
    return -1;
}

static inline void sbuf_release(sbuf *b) {
    if (b->has_view) PyBuffer_Release(&b->view);
}

/* A key for the short paths of Cache.get/set, without an sbuf: exact bytes, or an exact
 * str that is compact ASCII (its UTF-8 is its data, as sbuf_get would return). 0: take the
 * general path. */
static inline int fast_key(PyObject *o, const char **p, Py_ssize_t *n) {
    if (PyBytes_CheckExact(o)) {
        *p = PyBytes_AS_STRING(o);
        *n = PyBytes_GET_SIZE(o);
        return 1;
    }
    if (PyUnicode_CheckExact(o) && PyUnicode_IS_COMPACT_ASCII(o)) {
        *p = (const char *)PyUnicode_DATA(o);
        *n = PyUnicode_GET_LENGTH(o);
        return 1;
    }
    return 0;
}


static inline int check_open(CacheObject *self) {
    if (!self->open || self->broken) {
        if (self->open) return raise_broken(self);
        PyErr_SetString(ErrCacheClosed, "the cache is closed in this process");
        return -1;
    }
    return 0;
}

static inline uwc_counter_slot *counters(CacheObject *self) {
    if (self->counter_gen != fork_generation) {
        /* first use, or a forked child: take a slot of our own */
        self->counters = uwc_counter_claim(&self->c, (int32_t)getpid());
        if (!self->counters) self->counters = &self->c.h->counters[UWC_COUNTER_SLOTS - 1];
        self->counter_gen = fork_generation;
    }
    return self->counters;
}

/* ---- hooks called after the lock is released ---- */

static inline void fire_write(CacheObject *self, int op, const char *key, Py_ssize_t klen, const void *val,
                       Py_ssize_t vlen, uint64_t expires) {
    if (!self->on_write) return;
    PyObject *r = PyObject_CallFunction(self->on_write, "iy#y#K", op, key, klen, (const char *)val, vlen,
                                        (unsigned long long)expires);
    if (!r) PyErr_WriteUnraisable(self->on_write);
    Py_XDECREF(r);
}

static inline void fire_full(CacheObject *self, uint32_t events) {
    if (!(events & UWC_EV_FULL) || self->full_silent || !self->on_full) return;
    time_t t = time(NULL);
    if (t == self->last_full_call) return;  /* at most one warning per second per process */
    self->last_full_call = t;
    PyObject *r = PyObject_CallFunction(self->on_full, "OO", self->name, (events & UWC_EV_EVICTED) ? Py_True : Py_False);
    if (!r) PyErr_WriteUnraisable(self->on_full);
    Py_XDECREF(r);
}

/* ---- get ---- */

/* A new bytes object of `size` bytes for the engine to fill. In the default builds of 3.9 to
 * 3.13 it is made here, as bytesobject.c makes one: the out-of-line
 * PyBytes_FromStringAndSize with its checks for the sizes it special-cases was ~30
 * instructions a value, half of what get_many spent on a bytes object (issue 12.4). The
 * reference is set up by _Py_NewReference, as CPython's own constructors do, so tracemalloc,
 * 3.13's reference tracers (PyRefTracer) and trace-refs interpreters see the object born.
 * Debug and free-threaded builds, and 3.14 on (whose object header this was not written
 * for), keep the official call. */
static inline PyObject *new_bytes(Py_ssize_t size) {
#if defined(Py_REF_DEBUG) || defined(Py_GIL_DISABLED) || defined(Py_LIMITED_API) || PY_VERSION_HEX >= 0x030E0000
    return PyBytes_FromStringAndSize(NULL, size);
#else
    if (__builtin_expect(size <= 0, 0)) return PyBytes_FromStringAndSize(NULL, size);  /* b"" is shared */
    PyBytesObject *op = PyObject_Malloc(offsetof(PyBytesObject, ob_sval) + (size_t)size + 1);
    if (!op) return PyErr_NoMemory();
    PyObject *o = (PyObject *)op;
    Py_SET_TYPE(o, &PyBytes_Type);  /* a static type: no reference to take */
    Py_SET_SIZE(op, size);
    _Py_NewReference(o);  /* the refcount of 1, and the hooks that watch new objects */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    op->ob_shash = -1;  /* deprecated since 3.11, still read by bytes' hash */
#pragma GCC diagnostic pop
    op->ob_sval[size] = '\0';
    return o;
#endif
}

typedef struct { PyObject *obj; } alloc_ctx;

static inline void *alloc_bytes(void *vctx, uint64_t size) {
    alloc_ctx *ctx = vctx;
    Py_CLEAR(ctx->obj);
    if (size > PY_SSIZE_T_MAX - sizeof(PyBytesObject)) return NULL;
    ctx->obj = new_bytes((Py_ssize_t)size);
    return ctx->obj ? PyBytes_AS_STRING(ctx->obj) : NULL;
}

/* returns new ref to bytes, or NULL with *rc set (UWC_NOTFOUND without exception) */
static inline PyObject *do_get(CacheObject *self, const char *k, Py_ssize_t kl, int *rc, uint64_t *expires) {
    alloc_ctx ctx = {NULL};
    /* now 0: the engine reads the clock only for an item that has an expiry */
    *rc = uwc_get(&self->c, (const uint8_t *)k, (uint64_t)kl, 0, alloc_bytes, &ctx, expires, counters(self));
    if (*rc != UWC_OK) {
        Py_CLEAR(ctx.obj);
        return NULL;
    }
    return ctx.obj;
}

#endif
