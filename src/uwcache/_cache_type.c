/* The CacheBase type (uwcache.Cache's C base): its methods go straight from the Python call
 * to the engine. Shared helpers live in _enginemodule.c and _engine_binding.h. */
#include "_engine_binding.h"

#include <signal.h>
#include <sys/mman.h>

/* ---- SIGBUS guard ----
 * Another process may truncate a region's file while we have it mapped: touching a page past
 * the new end raises SIGBUS, which would kill this process. The handler maps anonymous zero
 * pages over the whole region (MAP_FIXED), so the faulting access completes on a private,
 * empty copy, and marks the cache broken: its next call raises CorruptStore. It costs
 * nothing on the hot path but the `broken` test next to `open`. Faults outside any region
 * go to the previous handler (faulthandler, or the default action). */

#define GUARD_SLOTS 4096
typedef struct {
    uintptr_t base; /* 0: free slot */
    size_t len;
    volatile sig_atomic_t *broken;
} guard_slot_t;
static guard_slot_t guards[GUARD_SLOTS];
static struct sigaction guard_prev;

static void guard_handler(int sig, siginfo_t *si, void *uc) {
    uintptr_t a = (uintptr_t)si->si_addr;
    if (si->si_code > 0) { /* a fault (BUS_ADRERR...), not a kill() */
        for (int i = 0; i < GUARD_SLOTS; i++) {
            uintptr_t b = __atomic_load_n(&guards[i].base, __ATOMIC_ACQUIRE);
            if (b && a >= b && a - b < guards[i].len) {
                void *r = mmap((void *)b, guards[i].len, PROT_READ | PROT_WRITE,
                               MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                if (r == MAP_FAILED) break;
                *guards[i].broken = 1;
                static const char msg[] = "uwcache: SIGBUS in a cache region (its file was truncated by "
                                          "another process); this handle now raises CorruptStore\n";
                ssize_t w = write(2, msg, sizeof msg - 1);
                (void)w;
                return;
            }
        }
    }
    if ((guard_prev.sa_flags & SA_SIGINFO) && guard_prev.sa_sigaction) {
        guard_prev.sa_sigaction(sig, si, uc);
        return;
    }
    if (guard_prev.sa_handler != SIG_DFL && guard_prev.sa_handler != SIG_IGN) {
        guard_prev.sa_handler(sig);
        return;
    }
    signal(SIGBUS, SIG_DFL);
    raise(SIGBUS); /* delivered when the handler returns: the default action */
}

static void guard_install(void) {
    struct sigaction cur;
    if (sigaction(SIGBUS, NULL, &cur) != 0) return;
    if ((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == guard_handler) return;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = guard_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    guard_prev = cur; /* whoever installed a handler after us is chained, not lost */
    sigaction(SIGBUS, &sa, NULL);
}

static void guard_register(CacheObject *self, void *base, size_t len) {
    self->guard_slot = -1;
    self->broken = 0;
    guard_install();
    for (int i = 0; i < GUARD_SLOTS; i++) {
        if (guards[i].base == 0) {
            guards[i].len = len;
            guards[i].broken = &self->broken;
            __atomic_store_n(&guards[i].base, (uintptr_t)base, __ATOMIC_RELEASE);
            self->guard_slot = i;
            return;
        }
    }
}

static void guard_unregister(CacheObject *self) {
    if (self->guard_slot >= 0) {
        __atomic_store_n(&guards[self->guard_slot].base, (uintptr_t)0, __ATOMIC_RELEASE);
        self->guard_slot = -1;
    }
}

static PyObject *Cache_get(CacheObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    static const char *const names[] = {"key", "default"};
    PyObject *a[2];
    /* get(key) with a bytes (or ASCII str) key on an open cache: the common call, without
     * the sbuf */
    const char *kp;
    Py_ssize_t kn;
    if (__builtin_expect(nargs == 1 && !kwnames, 1) && fast_key(args[0], &kp, &kn) && self->open &&
        !self->broken) {
        int rc;
        PyObject *v = do_get(self, kp, kn, &rc, NULL);
        if (v) return v;
        if (rc == UWC_NOTFOUND) Py_RETURN_NONE;
        return raise_status(self, rc, kn, 0);
    }
    if (check_open(self)) return NULL;
    if (nargs == 1 && !kwnames) {  /* get(key): the common call, no keyword parsing */
        a[0] = args[0];
        a[1] = NULL;
    } else if (parse_args(args, nargs, kwnames, "get", names, 2, 1, a)) {
        return NULL;
    }
    sbuf k;
    if (sbuf_get(a[0], &k, "key")) return NULL;
    int rc;
    PyObject *v = do_get(self, k.p, k.n, &rc, NULL);
    sbuf_release(&k);
    if (v) return v;
    if (rc == UWC_NOTFOUND) {
        PyObject *d = a[1] ? a[1] : Py_None;
        Py_INCREF(d);
        return d;
    }
    return raise_status(self, rc, k.n, 0);
}

static PyObject *Cache_subscript(CacheObject *self, PyObject *key) {
    if (check_open(self)) return NULL;
    sbuf k;
    if (sbuf_get(key, &k, "key")) return NULL;
    int rc;
    PyObject *v = do_get(self, k.p, k.n, &rc, NULL);
    sbuf_release(&k);
    if (v) return v;
    if (rc == UWC_NOTFOUND) {
        PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    return raise_status(self, rc, k.n, 0);
}

/* ---- set / add ---- */

int do_write(CacheObject *self, PyObject *key, PyObject *value, uint64_t expires, uint32_t flags,
                    int fire) {
    sbuf k, v;
    if (sbuf_get(key, &k, "key")) return -1;
    if (sbuf_get(value, &v, "value")) { sbuf_release(&k); return -1; }
    uwc_write w = {0};
    w.key = (const uint8_t *)k.p;
    w.key_len = (uint64_t)k.n;
    w.value = (const uint8_t *)v.p;
    w.value_len = (uint64_t)v.n;
    w.expires = expires;
    w.flags = flags;
    w.now = now_s();
    w.counters = counters(self);
    int rc = uwc_set(&self->c, &w);
    fire_full(self, w.events);
    int ret;
    if (rc == UWC_OK) {
        if (fire) fire_write(self, OP_SET, k.p, k.n, v.p, v.n, w.expires_abs);
        ret = 1;
    } else if (rc == UWC_EXISTS) {
        ret = 0;
    } else {
        raise_status(self, rc, k.n, v.n);
        ret = -1;
    }
    sbuf_release(&k);
    sbuf_release(&v);
    return ret;
}

static PyObject *Cache_set(CacheObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    static const char *const names[] = {"key", "value", "expires"};
    PyObject *a[3];
    uint64_t ex;
    /* set(key, value) with a bytes (or ASCII str) key and a bytes value on an open cache:
     * the common call, written out here so that it costs no sbuf, no do_write frame and no
     * zeroed uwc_write (issue 16: -56 instructions per update). Same steps and order as
     * do_write. */
    const char *kp;
    Py_ssize_t kn;
    if (__builtin_expect(nargs == 2 && !kwnames, 1) && fast_key(args[0], &kp, &kn) &&
        PyBytes_CheckExact(args[1]) && self->open && !self->broken) {
        uwc_write w;
        w.key = (const uint8_t *)kp;
        w.key_len = (uint64_t)kn;
        w.value = (const uint8_t *)PyBytes_AS_STRING(args[1]);
        w.value_len = (uint64_t)PyBytes_GET_SIZE(args[1]);
        w.expires = 0;
        w.flags = UWC_F_UPDATE;
        w.now = 0;  /* read by the engine only if an expiry needs it (time() is ~4 ns) */
        w.counters = counters(self);
        w.math_result = 0;
        int rc = uwc_set(&self->c, &w);  /* sets events and expires_abs */
        if (__builtin_expect(w.events != 0, 0)) fire_full(self, w.events);
        if (__builtin_expect(rc == UWC_OK, 1)) {
            if (self->on_write)
                fire_write(self, OP_SET, (const char *)w.key, (Py_ssize_t)w.key_len, w.value,
                           (Py_ssize_t)w.value_len, w.expires_abs);
            Py_RETURN_NONE;
        }
        if (rc == UWC_EXISTS) Py_RETURN_NONE;  /* as do_write (not returned with UWC_F_UPDATE) */
        return raise_status(self, rc, (Py_ssize_t)w.key_len, (Py_ssize_t)w.value_len);
    }
    if (check_open(self)) return NULL;
    if (nargs == 2 && !kwnames) {  /* set(key, value): no keyword parsing, no expiry */
        a[0] = args[0];
        a[1] = args[1];
        ex = 0;
    } else if (parse_args(args, nargs, kwnames, "set", names, 3, 2, a) || get_expires(a[2], &ex)) {
        return NULL;
    }
    if (do_write(self, a[0], a[1], ex, UWC_F_UPDATE, 1) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Cache_add(CacheObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    static const char *const names[] = {"key", "value", "expires"};
    PyObject *a[3];
    uint64_t ex;
    if (check_open(self) || parse_args(args, nargs, kwnames, "add", names, 3, 2, a) || get_expires(a[2], &ex))
        return NULL;
    int r = do_write(self, a[0], a[1], ex, 0, 1);
    if (r < 0) return NULL;
    return PyBool_FromLong(r);
}

/* ---- delete / contains / len / keys / clear ---- */

int do_delete(CacheObject *self, PyObject *key, int fire) {
    sbuf k;
    if (sbuf_get(key, &k, "key")) return -1;
    int rc = uwc_delete(&self->c, (const uint8_t *)k.p, (uint64_t)k.n, now_s(), counters(self));
    int ret = rc == UWC_OK ? 1 : 0;
    if (rc == UWC_OK && fire) fire_write(self, OP_DELETE, k.p, k.n, "", 0, 0);
    if (rc != UWC_OK && rc != UWC_NOTFOUND) {
        raise_status(self, rc, k.n, 0);
        ret = -1;
    }
    sbuf_release(&k);
    return ret;
}

static PyObject *Cache_delete(CacheObject *self, PyObject *key) {
    if (check_open(self)) return NULL;
    int r = do_delete(self, key, 1);
    if (r < 0) return NULL;
    return PyBool_FromLong(r);
}

static int Cache_ass_subscript(CacheObject *self, PyObject *key, PyObject *value) {
    if (check_open(self)) return -1;
    if (value) return do_write(self, key, value, 0, UWC_F_UPDATE, 1) < 0 ? -1 : 0;
    int r = do_delete(self, key, 1);
    if (r == 0) PyErr_SetObject(PyExc_KeyError, key);
    return r == 1 ? 0 : -1;
}

static int Cache_contains(CacheObject *self, PyObject *key) {
    if (check_open(self)) return -1;
    sbuf k;
    if (sbuf_get(key, &k, "key")) return -1;
    int rc = uwc_exists(&self->c, (const uint8_t *)k.p, (uint64_t)k.n, now_s(), NULL);
    sbuf_release(&k);
    if (rc == UWC_OK) return 1;
    if (rc == UWC_NOTFOUND) return 0;
    raise_status(self, rc, k.n, 0);
    return -1;
}

static Py_ssize_t Cache_len(CacheObject *self) {
    if (check_open(self)) return -1;
    return (Py_ssize_t)uwc_n_items(&self->c);
}

PyObject *keybuf_to_list(uwc_keybuf *kb) {
    PyObject *list = PyList_New((Py_ssize_t)kb->count);
    if (!list) return NULL;
    uint64_t off = 0;
    for (uint64_t i = 0; i < kb->count; i++) {
        uint64_t n;
        memcpy(&n, kb->buf + off, 8);
        PyObject *b = PyBytes_FromStringAndSize((const char *)kb->buf + off + 8, (Py_ssize_t)n);
        if (!b) { Py_DECREF(list); return NULL; }
        PyList_SET_ITEM(list, (Py_ssize_t)i, b);
        off += 8 + n;
    }
    return list;
}

static PyObject *Cache_keys(CacheObject *self, PyObject *unused) {
    if (check_open(self)) return NULL;
    uwc_keybuf kb = {0};
    int rc = uwc_keys(&self->c, now_s(), &kb);
    if (rc) { uwc_keybuf_free(&kb); return raise_status(self, rc, 0, 0); }
    PyObject *list = keybuf_to_list(&kb);
    uwc_keybuf_free(&kb);
    return list;
}

static PyObject *Cache_iter(CacheObject *self) {
    PyObject *keys = Cache_keys(self, NULL);
    if (!keys) return NULL;
    PyObject *it = PyObject_GetIter(keys);
    Py_DECREF(keys);
    return it;
}

static PyObject *Cache_clear(CacheObject *self, PyObject *unused) {
    if (check_open(self)) return NULL;
    int rc = uwc_clear(&self->c, now_s(), counters(self));
    if (rc) return raise_status(self, rc, 0, 0);
    fire_write(self, OP_CLEAR, "", 0, "", 0, 0);
    Py_RETURN_NONE;
}

/* ---- math ---- */

static PyObject *do_math(CacheObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                         const char *fname, uint32_t op) {
    static const char *const names[] = {"key", "n", "expires"};
    PyObject *a[3];
    uint64_t ex;
    if (check_open(self) || parse_args(args, nargs, kwnames, fname, names, 3, 1, a) || get_expires(a[2], &ex))
        return NULL;
    long long n = 1;
    if (a[1]) {
        if (!PyLong_Check(a[1])) {
            PyErr_Format(PyExc_TypeError, "%s(): n must be an int, not %.100s", fname, Py_TYPE(a[1])->tp_name);
            return NULL;
        }
        n = PyLong_AsLongLong(a[1]);
        if (n == -1 && PyErr_Occurred()) {
            if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_OverflowError, "%s(): n must fit in a signed 64-bit integer", fname);
            }
            return NULL;
        }
    }
    sbuf k;
    if (sbuf_get(a[0], &k, "key")) return NULL;
    int64_t operand = (int64_t)n;
    uwc_write w = {0};
    w.key = (const uint8_t *)k.p;
    w.key_len = (uint64_t)k.n;
    w.value = (const uint8_t *)&operand;
    w.value_len = 8;
    w.expires = ex;
    w.flags = UWC_F_UPDATE | UWC_F_MATH | UWC_F_FIXEXPIRE | UWC_F_STRICT_MATH | op;
    w.now = now_s();
    w.counters = counters(self);
    int rc = uwc_set(&self->c, &w);
    fire_full(self, w.events);
    if (rc != UWC_OK) {
        raise_status(self, rc, k.n, 8);
        sbuf_release(&k);
        return NULL;
    }
    /* replicate the result, not the operand (uWSGI's replicas end up holding the delta) */
    int64_t res = w.math_result;
    fire_write(self, OP_SET, k.p, k.n, &res, 8, w.expires_abs);
    sbuf_release(&k);
    return PyLong_FromLongLong(res);
}

static PyObject *Cache_incr(CacheObject *s, PyObject *const *a, Py_ssize_t n, PyObject *kw) { return do_math(s, a, n, kw, "incr", UWC_F_INC); }
static PyObject *Cache_decr(CacheObject *s, PyObject *const *a, Py_ssize_t n, PyObject *kw) { return do_math(s, a, n, kw, "decr", UWC_F_DEC); }
static PyObject *Cache_mul(CacheObject *s, PyObject *const *a, Py_ssize_t n, PyObject *kw) { return do_math(s, a, n, kw, "mul", UWC_F_MUL); }
static PyObject *Cache_div(CacheObject *s, PyObject *const *a, Py_ssize_t n, PyObject *kw) { return do_math(s, a, n, kw, "div", UWC_F_DIV); }

static PyObject *Cache_get_int(CacheObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    static const char *const names[] = {"key", "default"};
    PyObject *a[2];
    if (check_open(self) || parse_args(args, nargs, kwnames, "get_int", names, 2, 1, a)) return NULL;
    sbuf k;
    if (sbuf_get(a[0], &k, "key")) return NULL;
    int rc;
    PyObject *v = do_get(self, k.p, k.n, &rc, NULL);
    sbuf_release(&k);
    if (!v) {
        if (rc == UWC_NOTFOUND) {
            PyObject *d = a[1] ? a[1] : Py_None;
            Py_INCREF(d);
            return d;
        }
        return raise_status(self, rc, k.n, 0);
    }
    if (PyBytes_GET_SIZE(v) != 8) {
        Py_ssize_t n = PyBytes_GET_SIZE(v);
        Py_DECREF(v);
        PyErr_Format(ErrNotAnInteger, "the value of that key in cache '%s' is %zd bytes, not an 8-byte integer",
                     cname(self), n);
        return NULL;
    }
    int64_t x;
    memcpy(&x, PyBytes_AS_STRING(v), 8);
    Py_DECREF(v);
    return PyLong_FromLongLong(x);
}

static PyObject *Cache_ttl(CacheObject *self, PyObject *key) {
    if (check_open(self)) return NULL;
    sbuf k;
    if (sbuf_get(key, &k, "key")) return NULL;
    uint64_t ex = 0, now = now_s();
    int rc = uwc_exists(&self->c, (const uint8_t *)k.p, (uint64_t)k.n, now, &ex);
    sbuf_release(&k);
    if (rc == UWC_NOTFOUND) {
        PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    if (rc) return raise_status(self, rc, k.n, 0);
    if (!ex) Py_RETURN_NONE;
    return PyLong_FromUnsignedLongLong(ex > now ? ex - now : 0);
}

/* ---- batch API: get_many / set_many / delete_many / touch (issue 12.4) ----
 * Every key (and value) is converted and checked before the engine is called, so a bad
 * entry anywhere in a batch raises before anything is read or written. */

typedef struct {
    Py_ssize_t n;
    PyObject *seq;       /* the entries as a list/tuple (PySequence_Fast) */
    uwc_key *keys;       /* n keys, then (set_many) n values: one allocation with rcs */
    uwc_key *values;
    int *rcs;
    Py_buffer *views;    /* only for entries that are neither bytes nor str (rare) */
    Py_ssize_t nviews, capviews;
    int heap;            /* keys (and values, rcs) were allocated, not the caller's stack buffer */
} batch;

/* A batch of up to this many keys keeps its arrays on the C stack (get_many: ~3.6 KiB):
 * no malloc/free per call (issue 12.4, measured ~1 ns a key for 100 keys). */
#define BATCH_STACK 128

static void batch_free(batch *b) {
    for (Py_ssize_t i = 0; i < b->nviews; i++) PyBuffer_Release(&b->views[i]);
    PyMem_Free(b->views);
    if (b->heap) PyMem_Free(b->keys);
    Py_CLEAR(b->seq);
}

/* bytes/str/buffer -> pointer and length, valid until batch_free: the general case. */
static __attribute__((noinline)) int batch_buf_any(batch *b, PyObject *o, uwc_key *out, const char *what) {
    if (PyBytes_Check(o)) {
        out->key = (const uint8_t *)PyBytes_AS_STRING(o);
        out->len = (uint64_t)PyBytes_GET_SIZE(o);
        return 0;
    }
    if (PyUnicode_Check(o)) {
        Py_ssize_t n;
        const char *p = PyUnicode_AsUTF8AndSize(o, &n);
        if (!p) return -1;
        out->key = (const uint8_t *)p;
        out->len = (uint64_t)n;
        return 0;
    }
    if (!PyObject_CheckBuffer(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be bytes or str, not %.100s", what, Py_TYPE(o)->tp_name);
        return -1;
    }
    if (b->nviews == b->capviews) {
        Py_ssize_t cap = b->capviews ? b->capviews * 2 : 8;
        Py_buffer *v = PyMem_Realloc(b->views, (size_t)cap * sizeof(Py_buffer));
        if (!v) { PyErr_NoMemory(); return -1; }
        b->views = v;
        b->capviews = cap;
    }
    if (PyObject_GetBuffer(o, &b->views[b->nviews], PyBUF_SIMPLE) < 0) return -1;
    out->key = b->views[b->nviews].buf;
    out->len = (uint64_t)b->views[b->nviews].len;
    b->nviews++;
    return 0;
}

/* The usual entries, inline: an ASCII str is read in place (its characters are its UTF-8,
 * no call into CPython), bytes too; anything else goes to batch_buf_any. */
static inline __attribute__((always_inline)) int batch_buf(batch *b, PyObject *o, uwc_key *out, const char *what) {
    if (PyUnicode_CheckExact(o) && PyUnicode_IS_COMPACT_ASCII(o)) {
        out->key = (const uint8_t *)(((PyASCIIObject *)o) + 1);  /* PyUnicode_DATA of a compact ASCII str */
        out->len = (uint64_t)PyUnicode_GET_LENGTH(o);
        return 0;
    }
    if (PyBytes_CheckExact(o)) {
        out->key = (const uint8_t *)PyBytes_AS_STRING(o);
        out->len = (uint64_t)PyBytes_GET_SIZE(o);
        return 0;
    }
    return batch_buf_any(b, o, out, what);
}

/* seq: a sequence of keys, or of (key, value) pairs when with_values. Takes seq's reference.
 * stack: room for BATCH_STACK entries (keys, values when with_values, rcs), or NULL.
 * Inlined: each caller gets a loop specialised for its with_values. */
static inline __attribute__((always_inline)) int batch_load(CacheObject *self, batch *b, PyObject *seq, int with_values,
                                                             const char *fname, void *stack) {
    memset(b, 0, sizeof *b);
    b->seq = seq;
    b->n = PySequence_Fast_GET_SIZE(seq);
    size_t n = (size_t)(b->n ? b->n : 1), per = sizeof(uwc_key) * (with_values ? 2 : 1) + sizeof(int);
    if (stack && n <= BATCH_STACK) {
        b->keys = stack;
    } else {
        if (n > PY_SSIZE_T_MAX / per) { PyErr_NoMemory(); return -1; }
        b->keys = PyMem_Malloc(n * per);
        if (!b->keys) { PyErr_NoMemory(); return -1; }
        b->heap = 1;
    }
    b->values = with_values ? b->keys + n : NULL;
    b->rcs = (int *)(b->keys + n * (with_values ? 2 : 1));
    const uwc_params *p = &self->c.p;
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < b->n; i++) {
        PyObject *key = items[i], *value = NULL;
        if (with_values) {
            if (!PyTuple_Check(key) || PyTuple_GET_SIZE(key) != 2) {
                PyErr_Format(PyExc_TypeError, "%s(): expected (key, value) pairs", fname);
                return -1;
            }
            value = PyTuple_GET_ITEM(key, 1);
            key = PyTuple_GET_ITEM(key, 0);
        }
        uwc_key *k = &b->keys[i];
        if (batch_buf(b, key, k, "key")) return -1;
        if (k->len == 0 || k->len > p->key_size) {
            raise_status(self, k->len == 0 ? UWC_EKEY_EMPTY : UWC_EKEY_LONG, (Py_ssize_t)k->len, 0);
            return -1;
        }
        if (with_values) {
            uwc_key *v = &b->values[i];
            if (batch_buf(b, value, v, "value")) return -1;
            if (v->len == 0 || v->len > self->c.max_item_size) {
                raise_status(self, v->len == 0 ? UWC_EVAL_EMPTY : UWC_EVAL_LARGE, (Py_ssize_t)k->len,
                             (Py_ssize_t)v->len);
                return -1;
            }
        }
    }
    return 0;
}

typedef struct { PyObject **objs; Py_ssize_t allocs; } many_ctx;

/* The engine's allocator for key `index`: a fresh bytes object, filled by the engine. It may
 * be called again for the same key (a read retried after a writer): the old one goes.
 * `allocs` counts the calls: at least the number of keys found, the size of the result. */
static void *alloc_bytes_at(void *vctx, uint64_t index, uint64_t size) {
    many_ctx *ctx = vctx;
    PyObject **slot = &ctx->objs[index];
    ctx->allocs++;
    Py_CLEAR(*slot);
    if (size > PY_SSIZE_T_MAX - sizeof(PyBytesObject)) return NULL;
    *slot = new_bytes((Py_ssize_t)size);
    return *slot ? PyBytes_AS_STRING(*slot) : NULL;
}

static PyObject *Cache_get_many(CacheObject *self, PyObject *keys) {
    if (check_open(self)) return NULL;
    PyObject *seq = PySequence_Fast(keys, "get_many() takes an iterable of keys");
    if (!seq) return NULL;
    batch b;
    PyObject *result = NULL, **objs = NULL;
    /* a batch of up to BATCH_STACK keys: its arrays here (keys, then rcs), no allocation */
    _Alignas(uwc_key) unsigned char stack[BATCH_STACK * (sizeof(uwc_key) + sizeof(int))];
    PyObject *stack_objs[BATCH_STACK];
    if (batch_load(self, &b, seq, 0, "get_many", stack)) goto done;
    if (b.heap) {
        objs = PyMem_Calloc((size_t)(b.n ? b.n : 1), sizeof(PyObject *));
        if (!objs) { PyErr_NoMemory(); goto done; }
    } else {
        objs = stack_objs;
        memset(objs, 0, (size_t)b.n * sizeof(PyObject *));
    }
    many_ctx ctx = {objs, 0};
    int rc = uwc_get_many(&self->c, b.keys, (uint64_t)b.n, now_s(), alloc_bytes_at, &ctx, b.rcs, counters(self));
    if (rc) { raise_status(self, rc, 0, 0); goto done; }
    /* sized once for the values read (the keys found, plus any read twice): no resizing
     * while filling. (PyDict_New and growing is ~80 instructions a key more; CPython
     * 3.9-3.13 export _PyDict_NewPresized.) */
    result = _PyDict_NewPresized(ctx.allocs);
    if (!result) goto done;
    /* Tracked by the GC from the start: each insert into an untracked dict asks whether the
     * key or the value is a GC object (two calls of PyObject_IS_GC, out of line, per key:
     * ~5 ns a key of get_many's ~60, issue 12.4). A dict of str/bytes only is untracked
     * again by the collector's next pass over it, as any dict that held a container once. */
    if (ctx.allocs && !PyObject_GC_IsTracked(result)) PyObject_GC_Track(result);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < b.n; i++) {
        PyObject *v = objs[i];
        if (b.rcs[i] != UWC_OK) {
            if (v) { objs[i] = NULL; Py_DECREF(v); }  /* read, then found gone on a retry */
            continue;
        }
        /* the key as the caller gave it when it is bytes or str (subclasses too), else a
         * bytes copy of its buffer (a bytearray or memoryview is not hashable, or not stable) */
        PyObject *k = items[i];
        int err;
#if PY_VERSION_HEX < 0x030D0000  /* 3.13's headers no longer declare it */
        if (PyUnicode_CheckExact(k) && ((PyASCIIObject *)k)->hash != -1) {
            err = _PyDict_SetItem_KnownHash(result, k, v, ((PyASCIIObject *)k)->hash) < 0;
        } else
#endif
        if (PyUnicode_Check(k) || PyBytes_Check(k)) {
            err = PyDict_SetItem(result, k, v) < 0;
        } else {
            k = PyBytes_FromStringAndSize((const char *)b.keys[i].key, (Py_ssize_t)b.keys[i].len);
            err = !k || PyDict_SetItem(result, k, v) < 0;
            Py_XDECREF(k);
        }
        if (err) { Py_CLEAR(result); goto done; }
        objs[i] = NULL;  /* the dict holds it now */
        Py_DECREF(v);
    }
    /* every objs[i] is NULL now */
    if (objs != stack_objs) PyMem_Free(objs);
    batch_free(&b);
    return result;
done:
    if (objs) {
        for (Py_ssize_t i = 0; i < b.n; i++) Py_XDECREF(objs[i]);
        if (objs != stack_objs) PyMem_Free(objs);
    }
    batch_free(&b);
    return result;
}

static PyObject *Cache_set_many(CacheObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    static const char *const names[] = {"mapping", "expires"};
    PyObject *a[2];
    uint64_t ex;
    if (check_open(self) || parse_args(args, nargs, kwnames, "set_many", names, 2, 1, a) || get_expires(a[1], &ex))
        return NULL;
    PyObject *items;
    if (PyDict_Check(a[0])) {
        items = PyDict_Items(a[0]);
    } else if (PyMapping_Check(a[0]) && PyObject_HasAttrString(a[0], "items")) {
        PyObject *view = PyMapping_Items(a[0]);
        items = view;
    } else {
        items = PySequence_List(a[0]);  /* an iterable of (key, value) pairs */
    }
    if (!items) return NULL;
    PyObject *seq = PySequence_Fast(items, "set_many() takes a mapping or (key, value) pairs");
    Py_DECREF(items);
    if (!seq) return NULL;
    batch b;
    PyObject *failed = NULL;
    uwc_write *ws = NULL;
    if (batch_load(self, &b, seq, 1, "set_many", NULL)) goto done;
    ws = PyMem_Calloc((size_t)(b.n ? b.n : 1), sizeof(uwc_write));
    if (!ws) { PyErr_NoMemory(); goto done; }
    uint64_t now = now_s();
    uwc_counter_slot *cs = counters(self);
    for (Py_ssize_t i = 0; i < b.n; i++) {
        ws[i].key = b.keys[i].key;
        ws[i].key_len = b.keys[i].len;
        ws[i].value = b.values[i].key;
        ws[i].value_len = b.values[i].len;
        ws[i].expires = ex;
        ws[i].flags = UWC_F_UPDATE;
        ws[i].now = now;
        ws[i].counters = cs;
    }
    int rc = uwc_set_many(&self->c, ws, (uint64_t)b.n, b.rcs);
    uint32_t events = 0;
    for (Py_ssize_t i = 0; i < b.n; i++) events |= ws[i].events;
    fire_full(self, events);
    if (rc) { raise_status(self, rc, 0, 0); goto done; }
    failed = PyList_New(0);
    if (!failed) goto done;
    for (Py_ssize_t i = 0; i < b.n; i++) {
        PyObject *key = PyTuple_GET_ITEM(PySequence_Fast_GET_ITEM(seq, i), 0);
        if (b.rcs[i] == UWC_OK) {
            fire_write(self, OP_SET, (const char *)ws[i].key, (Py_ssize_t)ws[i].key_len, ws[i].value,
                       (Py_ssize_t)ws[i].value_len, ws[i].expires_abs);
        } else if (b.rcs[i] == UWC_FULL) {
            if (PyList_Append(failed, key) < 0) { Py_CLEAR(failed); goto done; }
        } else {
            /* cannot happen after batch_load's checks; never hide it */
            raise_status(self, b.rcs[i], (Py_ssize_t)ws[i].key_len, (Py_ssize_t)ws[i].value_len);
            Py_CLEAR(failed);
            goto done;
        }
    }
done:
    PyMem_Free(ws);
    batch_free(&b);
    return failed;
}

static PyObject *Cache_delete_many(CacheObject *self, PyObject *keys) {
    if (check_open(self)) return NULL;
    PyObject *seq = PySequence_Fast(keys, "delete_many() takes an iterable of keys");
    if (!seq) return NULL;
    batch b;
    PyObject *result = NULL;
    if (batch_load(self, &b, seq, 0, "delete_many", NULL)) goto done;
    int rc = uwc_delete_many(&self->c, b.keys, (uint64_t)b.n, now_s(), b.rcs, counters(self));
    if (rc) { raise_status(self, rc, 0, 0); goto done; }
    Py_ssize_t deleted = 0;
    for (Py_ssize_t i = 0; i < b.n; i++) {
        if (b.rcs[i] != UWC_OK) continue;
        deleted++;
        fire_write(self, OP_DELETE, (const char *)b.keys[i].key, (Py_ssize_t)b.keys[i].len, "", 0, 0);
    }
    result = PyLong_FromSsize_t(deleted);
done:
    batch_free(&b);
    return result;
}

static PyObject *Cache_touch(CacheObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    static const char *const names[] = {"key", "expires"};
    PyObject *a[2];
    uint64_t ex;
    if (check_open(self) || parse_args(args, nargs, kwnames, "touch", names, 2, 2, a) || get_expires(a[1], &ex))
        return NULL;
    sbuf k;
    if (sbuf_get(a[0], &k, "key")) return NULL;
    uint64_t now = now_s(), abs_ex = 0;
    int rc = uwc_touch(&self->c, (const uint8_t *)k.p, (uint64_t)k.n, ex, now, &abs_ex);
    if (rc != UWC_OK && rc != UWC_NOTFOUND) {
        raise_status(self, rc, k.n, 0);
        sbuf_release(&k);
        return NULL;
    }
    if (rc == UWC_OK && self->on_write) {
        /* replication knows only whole writes: send the value again with its new expiry */
        alloc_ctx ctx = {NULL};
        if (uwc_get(&self->c, (const uint8_t *)k.p, (uint64_t)k.n, now, alloc_bytes, &ctx, NULL, NULL) == UWC_OK)
            fire_write(self, OP_SET, k.p, k.n, PyBytes_AS_STRING(ctx.obj), PyBytes_GET_SIZE(ctx.obj), abs_ex);
        else if (PyErr_Occurred())
            PyErr_WriteUnraisable(self->on_write);
        Py_XDECREF(ctx.obj);
    }
    sbuf_release(&k);
    return PyBool_FromLong(rc == UWC_OK);
}

/* ---- end of batch API ---- */

/* ---- internal methods for the Python layer (node, network, tests) ---- */

/* Writes that do not fire the write hook (_on_write: the UDP replicator), for what arrives
 * from elsewhere and must not be sent on again: replicated writes and preloaded items. */

/* _set_unreplicated(key, value, expires_at) -> True: overwrite, with an absolute expiry
 * (unix seconds, 0 = never; a past time stores the item already expired). */
static PyObject *Cache_set_unreplicated(CacheObject *self, PyObject *args) {
    PyObject *key, *value;
    unsigned long long ex;
    if (check_open(self) || !PyArg_ParseTuple(args, "OOK:_set_unreplicated", &key, &value, &ex)) return NULL;
    int r = do_write(self, key, value, (uint64_t)ex, UWC_F_UPDATE | UWC_F_ABSEXPIRE, 0);
    if (r < 0) return NULL;
    return PyBool_FromLong(r);
}

/* _add_unreplicated(key, value) -> bool: store only if absent (never expires); False if present. */
static PyObject *Cache_add_unreplicated(CacheObject *self, PyObject *args) {
    PyObject *key, *value;
    if (check_open(self) || !PyArg_ParseTuple(args, "OO:_add_unreplicated", &key, &value)) return NULL;
    int r = do_write(self, key, value, 0, 0, 0);
    if (r < 0) return NULL;
    return PyBool_FromLong(r);
}

/* _delete_unreplicated(key) -> bool: True if the key was there. */
static PyObject *Cache_delete_unreplicated(CacheObject *self, PyObject *key) {
    if (check_open(self)) return NULL;
    int r = do_delete(self, key, 0);
    if (r < 0) return NULL;
    return PyBool_FromLong(r);
}

static PyObject *Cache_get_with_expiry(CacheObject *self, PyObject *key) {
    if (check_open(self)) return NULL;
    sbuf k;
    if (sbuf_get(key, &k, "key")) return NULL;
    int rc;
    uint64_t ex = 0;
    PyObject *v = do_get(self, k.p, k.n, &rc, &ex);
    sbuf_release(&k);
    if (!v) {
        if (rc == UWC_NOTFOUND) Py_RETURN_NONE;
        return raise_status(self, rc, k.n, 0);
    }
    return Py_BuildValue("NK", v, (unsigned long long)ex);
}

/* The fields of _stats_raw(), in order: one row per uwc_stats member (a new counter is one row). */
typedef struct { const char *name; size_t offset; int is_int32; } stats_field;
#define STAT_U64(f) {#f, offsetof(uwc_stats, f), 0}
static const stats_field stats_fields[] = {
    STAT_U64(items), STAT_U64(hits), STAT_U64(miss), STAT_U64(full), STAT_U64(last_modified_at),
    STAT_U64(evictions), STAT_U64(expired_freed), STAT_U64(repairs), STAT_U64(writes), STAT_U64(next_scan),
    STAT_U64(blocks_used), STAT_U64(bytes_used), STAT_U64(expired_pending), STAT_U64(largest_free_run),
    STAT_U64(odd_stripes), STAT_U64(stripe_takeovers), {"sweeper_pid", offsetof(uwc_stats, sweeper_pid), 1},
    STAT_U64(sweeper_lease_until),
};
#undef STAT_U64

static PyObject *stats_dict(const uwc_stats *st) {
    PyObject *d = PyDict_New();
    if (!d) return NULL;
    for (size_t i = 0; i < sizeof stats_fields / sizeof stats_fields[0]; i++) {
        const char *at = (const char *)st + stats_fields[i].offset;
        PyObject *v;
        if (stats_fields[i].is_int32) {
            int32_t x;
            memcpy(&x, at, sizeof x);
            v = PyLong_FromLong(x);
        } else {
            uint64_t x;
            memcpy(&x, at, sizeof x);
            v = PyLong_FromUnsignedLongLong(x);
        }
        if (dict_put_new(d, stats_fields[i].name, v) < 0) {
            Py_DECREF(d);
            return NULL;
        }
    }
    return d;
}

static PyObject *Cache_stats_raw(CacheObject *self, PyObject *unused) {
    if (check_open(self)) return NULL;
    uwc_stats st;
    int rc = uwc_stats_read(&self->c, now_s(), &st);
    if (rc) return raise_status(self, rc, 0, 0);
    return stats_dict(&st);
}

/* stats()["full"] without what stats() counts by scanning (a monitor's once-a-second poll) */
static PyObject *Cache_full_events(CacheObject *self, PyObject *unused) {
    if (check_open(self)) return NULL;
    return PyLong_FromUnsignedLongLong(uwc_full_events(&self->c));
}

/* A copy of the block bitmap (bitmap mode; b"" otherwise), one bit per block, most
 * significant bit first, set = used; read without the lock (a monitor's snapshot). */
static PyObject *Cache_block_bitmap(CacheObject *self, PyObject *unused) {
    if (check_open(self)) return NULL;
    if (!self->c.bitmap) return PyBytes_FromStringAndSize("", 0);
    return PyBytes_FromStringAndSize((const char *)self->c.bitmap, (Py_ssize_t)self->c.bitmap_bytes);
}

static PyObject *Cache_check(CacheObject *self, PyObject *unused) {
    if (check_open(self)) return NULL;
    char msg[256];
    int rc = uwc_check(&self->c, msg, sizeof msg);
    if (rc == UWC_OK) Py_RETURN_NONE;
    if (rc == UWC_ECORRUPT) return PyUnicode_FromString(msg);
    return raise_status(self, rc, 0, 0);
}

static PyObject *Cache_repair(CacheObject *self, PyObject *unused) {
    if (check_open(self)) return NULL;
    uint64_t dropped = 0;
    int rc = uwc_repair(&self->c, now_s(), &dropped);
    if (rc) return raise_status(self, rc, 0, 0);
    return PyLong_FromUnsignedLongLong(dropped);
}

static PyObject *Cache_sweep(CacheObject *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"force", "report", "now", NULL};
    int force = 0, report = 0;
    unsigned long long now = 0;
    if (check_open(self) || !PyArg_ParseTupleAndKeywords(args, kw, "|ppK:_sweep", names, &force, &report, &now))
        return NULL;
    uwc_keybuf kb = {0};
    uint64_t freed = 0;
    int rc;
    uint64_t t = now ? now : now_s();
    /* a sweep is O(max_items): let other threads run meanwhile */
    Py_BEGIN_ALLOW_THREADS
    rc = uwc_sweep(&self->c, t, force, report ? &kb : NULL, &freed);
    Py_END_ALLOW_THREADS
    if (rc) { uwc_keybuf_free(&kb); return raise_status(self, rc, 0, 0); }
    PyObject *keys = report ? keybuf_to_list(&kb) : (Py_INCREF(Py_None), Py_None);
    uwc_keybuf_free(&kb);
    if (!keys) return NULL;
    return Py_BuildValue("KN", (unsigned long long)freed, keys);
}

static PyObject *Cache_sweeper_claim(CacheObject *self, PyObject *args) {
    int pid;
    unsigned long long lease;
    if (check_open(self) || !PyArg_ParseTuple(args, "iK:_sweeper_claim", &pid, &lease)) return NULL;
    return PyBool_FromLong(uwc_sweeper_claim(&self->c, pid, now_s(), lease));
}

static PyObject *Cache_sweeper_release(CacheObject *self, PyObject *args) {
    int pid;
    if (check_open(self) || !PyArg_ParseTuple(args, "i:_sweeper_release", &pid)) return NULL;
    uwc_sweeper_release(&self->c, pid);
    Py_RETURN_NONE;
}

static PyObject *Cache_export_image(CacheObject *self, PyObject *unused) {
    if (check_open(self)) return NULL;
    uint64_t n = uwc_image_size(&self->c);
    PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n);
    if (!b) return NULL;
    int rc = uwc_export_image(&self->c, (uint8_t *)PyBytes_AS_STRING(b), n);
    if (rc) { Py_DECREF(b); return raise_status(self, rc, 0, 0); }
    return b;
}

static PyObject *Cache_import_image(CacheObject *self, PyObject *args) {
    Py_buffer img;
    unsigned long long max_items, key_size, block_size, blocks;
    int bitmap;
    if (check_open(self) ||
        !PyArg_ParseTuple(args, "y*KKKKp:_import_image", &img, &max_items, &key_size, &block_size, &blocks, &bitmap))
        return NULL;
    uwc_params sp = {0};
    sp.max_items = max_items;
    sp.key_size = key_size;
    sp.block_size = block_size;
    sp.blocks = blocks;
    sp.options = bitmap ? UWC_OPT_BITMAP : 0;
    uint64_t loaded = 0, dropped = 0;
    int rc = UWC_EPARAMS;
    if (max_items >= 1 && key_size <= 65535 && block_size >= 1 && blocks >= 1)
        rc = uwc_import_image(&self->c, img.buf, (uint64_t)img.len, &sp, now_s(), &loaded, &dropped);
    PyBuffer_Release(&img);
    if (rc == UWC_EPARAMS) {
        PyErr_SetString(ErrCorruptStore, "the image is shorter than its geometry says, or the geometry is invalid");
        return NULL;
    }
    if (rc) return raise_status(self, rc, 0, 0);
    return Py_BuildValue("KK", (unsigned long long)loaded, (unsigned long long)dropped);
}

static PyObject *Cache_debug_crash_in_lock(CacheObject *self, PyObject *arg) {
    if (check_open(self)) return NULL;
    long stage = PyLong_AsLong(arg);
    if (stage == -1 && PyErr_Occurred()) return NULL;
    uwc_debug_crash_in_lock(&self->c, (int)stage);
    Py_RETURN_NONE;  /* not reached */
}

static PyObject *Cache_debug_crash_mid_write(CacheObject *self, PyObject *args) {
    /* _debug_crash_mid_write(key, value): set, but die (SIGKILL) halfway through the value copy */
    Py_buffer k, v;
    if (check_open(self) || !PyArg_ParseTuple(args, "y*y*:_debug_crash_mid_write", &k, &v)) return NULL;
    uwc_write w = {0};
    w.key = k.buf;
    w.key_len = (uint64_t)k.len;
    w.value = v.buf;
    w.value_len = (uint64_t)v.len;
    w.flags = UWC_F_UPDATE | UWC_F_DEBUG_CRASH_COPY;
    w.now = now_s();
    int rc = uwc_set(&self->c, &w);
    PyBuffer_Release(&k);
    PyBuffer_Release(&v);
    if (rc) return raise_status(self, rc, 0, 0);
    Py_RETURN_NONE;  /* only reached when nothing was copied */
}

static PyObject *Cache_debug_hold_lock(CacheObject *self, PyObject *args) {
    /* _debug_hold_lock(ms, stripes=False): hold the header mutex (and every stripe) for ms */
    unsigned int ms;
    int stripes = 0;
    if (check_open(self) || !PyArg_ParseTuple(args, "I|p:_debug_hold_lock", &ms, &stripes)) return NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = uwc_debug_hold_lock(&self->c, ms, stripes);
    Py_END_ALLOW_THREADS
    if (rc) return raise_status(self, rc, 0, 0);
    Py_RETURN_NONE;
}

static PyObject *Cache_debug_layout(CacheObject *self, PyObject *unused) {
    /* _debug_layout() -> {area: (offset, length)} of the region, for fault-injection tests */
    if (check_open(self)) return NULL;
    const uwc_cache *c = &self->c;
    size_t cnt_off = offsetof(uwc_header, n_items), cnt_end = offsetof(uwc_header, sweeper_pid);
    return Py_BuildValue(
        "{s(KK)s(KK)s(KK)s(KK)s(KK)}", "counters", (unsigned long long)cnt_off,
        (unsigned long long)(cnt_end - cnt_off), "items", (unsigned long long)(c->items - c->base),
        (unsigned long long)(c->rec_size * c->p.max_items), "table", (unsigned long long)((uint8_t *)c->buckets - c->base),
        (unsigned long long)(UWC_BUCKET_BYTES * c->p.hash_size), "stack", (unsigned long long)((uint8_t *)c->stack - c->base),
        (unsigned long long)(4 * c->p.max_items), "bitmap",
        (unsigned long long)(c->bitmap ? (uint64_t)(c->bitmap - c->base) : 0ull), (unsigned long long)c->bitmap_bytes);
}

static PyObject *Cache_net_counter(CacheObject *self, PyObject *args) {
    /* _net_counter(index, add=0) -> value after adding: replication counters shared by every process */
    int idx;
    unsigned long long add = 0;
    if (check_open(self) || !PyArg_ParseTuple(args, "i|K:_net_counter", &idx, &add)) return NULL;
    if (idx < 0 || idx >= UWC_NET_COUNTERS) {
        PyErr_SetString(PyExc_IndexError, "network counter index out of range");
        return NULL;
    }
    uint64_t v = add ? __atomic_add_fetch(&self->c.h->net[idx], add, __ATOMIC_RELAXED)
                     : __atomic_load_n(&self->c.h->net[idx], __ATOMIC_RELAXED);
    return PyLong_FromUnsignedLongLong(v);
}

/* ==== near cache (issue 11): binding of the engine's lease / fill / invalidate ==== */

static inline uint64_t near_now_ms(void) {
    /* the coarse clock (a few ns): it may lag by one tick (<= 4 ms), which docs/near.md counts
     * in the staleness bound */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

#define NEAR_KEY_MAX 4096
/* prefix + key into buf (UTF-8 for str); returns the length, or -1 with an exception */
static Py_ssize_t near_key(PyObject *prefix, PyObject *key, char *buf) {
    sbuf p, k;
    if (sbuf_get(prefix, &p, "prefix")) return -1;
    if (sbuf_get(key, &k, "key")) { sbuf_release(&p); return -1; }
    Py_ssize_t n = p.n + k.n;
    if (n > NEAR_KEY_MAX) {
        PyErr_Format(ErrKeyTooLong, "near key of %zd bytes (prefix included) is too long", n);
        n = -1;
    } else {
        memcpy(buf, p.p, (size_t)p.n);
        memcpy(buf + p.n, k.p, (size_t)k.n);
    }
    sbuf_release(&p);
    sbuf_release(&k);
    return n;
}

static PyObject *Cache_near_bind(CacheObject *self, PyObject *args) {
    /* _near_bind(prefix, miss): what _near_get uses in this process (one near tier per cache) */
    PyObject *prefix, *miss;
    if (!PyArg_ParseTuple(args, "SO:_near_bind", &prefix, &miss)) return NULL;
    Py_INCREF(prefix);
    Py_XSETREF(self->near_prefix, prefix);
    Py_INCREF(miss);
    Py_XSETREF(self->near_miss, miss);
    Py_RETURN_NONE;
}

static PyObject *Cache_near_get(CacheObject *self, PyObject *key) {
    /* _near_get(key): the bytes on a trusted hit of the current generation; otherwise
     * returns miss(key, untrusted) (bound with _near_bind) */
    if (check_open(self)) return NULL;
    if (!self->near_prefix || !self->near_miss) {
        PyErr_SetString(ErrCache, "this cache has no near tier bound in this process");
        return NULL;
    }
    char buf[NEAR_KEY_MAX];
    Py_ssize_t n = near_key(self->near_prefix, key, buf);
    if (n < 0) return NULL;
    alloc_ctx ctx = {NULL};
    int rc = uwc_near_get(&self->c, (const uint8_t *)buf, (uint64_t)n, now_s(), near_now_ms(), alloc_bytes, &ctx,
                          counters(self));
    if (rc == UWC_OK) return ctx.obj;
    Py_CLEAR(ctx.obj);
    if (rc == UWC_NOTFOUND || rc == UWC_NEAR_UNTRUSTED)
        return PyObject_CallFunctionObjArgs(self->near_miss, key, rc == UWC_NEAR_UNTRUSTED ? Py_True : Py_False, NULL);
    return raise_status(self, rc, n, 0);
}

static PyObject *Cache_near_peek(CacheObject *self, PyObject *key) {
    /* _near_peek(full_key: bytes) -> bytes (trusted hit), None (miss), False (untrusted) */
    if (check_open(self)) return NULL;
    if (!PyBytes_Check(key)) {
        PyErr_SetString(PyExc_TypeError, "_near_peek key must be bytes");
        return NULL;
    }
    alloc_ctx ctx = {NULL};
    int rc = uwc_near_get(&self->c, (const uint8_t *)PyBytes_AS_STRING(key), (uint64_t)PyBytes_GET_SIZE(key), now_s(),
                          near_now_ms(), alloc_bytes, &ctx, counters(self));
    if (rc == UWC_OK) return ctx.obj;
    Py_CLEAR(ctx.obj);
    if (rc == UWC_NOTFOUND) Py_RETURN_NONE;
    if (rc == UWC_NEAR_UNTRUSTED) Py_RETURN_FALSE;
    return raise_status(self, rc, PyBytes_GET_SIZE(key), 0);
}

static PyObject *Cache_near_lease(CacheObject *self, PyObject *args) {
    /* _near_lease(key, shard, lease_ms) -> token > 0 (ours), 0 (another fill is under way),
     * -1 (the shard is not trusted), -2 (no free lease slot) */
    const char *k;
    Py_ssize_t kl;
    unsigned int shard, lease_ms;
    if (check_open(self) || !PyArg_ParseTuple(args, "y#II:_near_lease", &k, &kl, &shard, &lease_ms)) return NULL;
    uint32_t token = 0;
    int rc = uwc_near_lease(&self->c, (const uint8_t *)k, (uint64_t)kl, shard, near_now_ms(), lease_ms, &token);
    switch (rc) {
    case UWC_OK: return PyLong_FromUnsignedLong(token);
    case UWC_EXISTS: return PyLong_FromLong(0);
    case UWC_NEAR_UNTRUSTED: return PyLong_FromLong(-1);
    case UWC_FULL: return PyLong_FromLong(-2);
    default: return raise_status(self, rc, kl, 0);
    }
}

static PyObject *Cache_near_fill(CacheObject *self, PyObject *args) {
    /* _near_fill(key, token, value, ttl_s, shard) -> 0 stored, 1 lease lost, 2 untrusted,
     * 3 not storable here (too large, or the cache is full) */
    const char *k, *v;
    Py_ssize_t kl, vl;
    unsigned int token, shard;
    unsigned long long ttl;
    if (check_open(self) || !PyArg_ParseTuple(args, "y#Iy#KI:_near_fill", &k, &kl, &token, &v, &vl, &ttl, &shard))
        return NULL;
    int rc = uwc_near_fill(&self->c, (const uint8_t *)k, (uint64_t)kl, token, (const uint8_t *)v, (uint64_t)vl, ttl,
                           shard, now_s(), near_now_ms());
    switch (rc) {
    case UWC_OK: return PyLong_FromLong(0);
    case UWC_NOTFOUND: return PyLong_FromLong(1);
    case UWC_NEAR_UNTRUSTED: return PyLong_FromLong(2);
    case UWC_EVAL_EMPTY: case UWC_EVAL_LARGE: case UWC_FULL: return PyLong_FromLong(3);
    default: return raise_status(self, rc, kl, vl);
    }
}

static PyObject *Cache_near_release(CacheObject *self, PyObject *args) {
    const char *k;
    Py_ssize_t kl;
    unsigned int token;
    if (check_open(self) || !PyArg_ParseTuple(args, "y#I:_near_release", &k, &kl, &token)) return NULL;
    int rc = uwc_near_release(&self->c, (const uint8_t *)k, (uint64_t)kl, token);
    if (rc != UWC_OK && rc != UWC_NOTFOUND) return raise_status(self, rc, kl, 0);
    return PyBool_FromLong(rc == UWC_OK);
}

static PyObject *Cache_near_invalidate(CacheObject *self, PyObject *keys) {
    /* _near_invalidate(iterable of bytes) -> items removed; one lock hold for all of them */
    if (check_open(self)) return NULL;
    PyObject *seq = PySequence_Fast(keys, "_near_invalidate expects a sequence of bytes");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), total = 0;
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyBytes_Check(items[i])) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_TypeError, "_near_invalidate keys must be bytes");
            return NULL;
        }
        total += 8 + PyBytes_GET_SIZE(items[i]);
    }
    uint8_t *buf = PyMem_Malloc(total ? (size_t)total : 1);
    if (!buf) { Py_DECREF(seq); return PyErr_NoMemory(); }
    uint64_t off = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t l = (uint64_t)PyBytes_GET_SIZE(items[i]);
        memcpy(buf + off, &l, 8);
        memcpy(buf + off + 8, PyBytes_AS_STRING(items[i]), l);
        off += 8 + l;
    }
    Py_DECREF(seq);
    uint64_t removed = 0;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = uwc_near_invalidate(&self->c, buf, off, now_s(), &removed);
    Py_END_ALLOW_THREADS
    PyMem_Free(buf);
    if (rc) return raise_status(self, rc, 0, 0);
    return PyLong_FromUnsignedLongLong(removed);
}

static PyObject *Cache_near_bump(CacheObject *self, PyObject *args) {
    /* _near_bump(shard=-1) -> the shard's new generation (shard 0's for -1: every shard) */
    int shard = -1;
    if (check_open(self) || !PyArg_ParseTuple(args, "|i:_near_bump", &shard)) return NULL;
    uint32_t gen = 0;
    int rc = uwc_near_bump(&self->c, shard, &gen);
    if (rc) return raise_status(self, rc, 0, 0);
    return PyLong_FromUnsignedLong(gen);
}

static PyObject *Cache_near_trust(CacheObject *self, PyObject *args) {
    /* _near_trust(shard, deadline_ms): L1 reads of the shard are trusted before deadline_ms
     * (CLOCK_MONOTONIC milliseconds, time.monotonic() * 1000); 0 = untrusted now */
    unsigned int shard;
    unsigned long long deadline;
    if (check_open(self) || !PyArg_ParseTuple(args, "IK:_near_trust", &shard, &deadline)) return NULL;
    if (shard >= UWC_NEAR_SHARDS) {
        PyErr_SetString(PyExc_ValueError, "near shard out of range");
        return NULL;
    }
    uwc_near_trust(&self->c, shard, deadline);
    Py_RETURN_NONE;
}

static PyObject *Cache_near_count(CacheObject *self, PyObject *args) {
    unsigned int stat;
    unsigned long long n = 1;
    if (check_open(self) || !PyArg_ParseTuple(args, "I|K:_near_count", &stat, &n)) return NULL;
    if (stat == UWC_NEAR_ST_LAG_US || stat == UWC_NEAR_ST_TTL_ONLY) __atomic_store_n(&self->c.h->near.stats[stat], n, __ATOMIC_RELAXED);
    else uwc_near_count(&self->c, stat, n);
    Py_RETURN_NONE;
}

static PyObject *Cache_near_state(CacheObject *self, PyObject *unused) {
    if (check_open(self)) return NULL;
    uwc_near_state *ns = &self->c.h->near;
    PyObject *gens = PyList_New(UWC_NEAR_SHARDS), *dl = PyList_New(UWC_NEAR_SHARDS), *st = PyList_New(UWC_NEAR_ST_NSTATS);
    if (!gens || !dl || !st) goto fail;
    for (int i = 0; i < UWC_NEAR_SHARDS; i++) {
        PyList_SET_ITEM(gens, i, PyLong_FromUnsignedLong(__atomic_load_n(&ns->gen[i], __ATOMIC_RELAXED)));
        PyList_SET_ITEM(dl, i, PyLong_FromUnsignedLongLong(__atomic_load_n(&ns->deadline_ms[i], __ATOMIC_RELAXED)));
    }
    for (int i = 0; i < UWC_NEAR_ST_NSTATS; i++)
        PyList_SET_ITEM(st, i, PyLong_FromUnsignedLongLong(__atomic_load_n(&ns->stats[i], __ATOMIC_RELAXED)));
    return Py_BuildValue("{sNsNsNsIsK}", "gen", gens, "deadline_ms", dl, "stats", st, "leases_live",
                         (unsigned int)__atomic_load_n(&ns->leases_live, __ATOMIC_RELAXED), "now_ms",
                         (unsigned long long)near_now_ms());
fail:
    Py_XDECREF(gens); Py_XDECREF(dl); Py_XDECREF(st);
    return NULL;
}

#define NEAR_METHODS                                                                     \
    {"_near_bind", (PyCFunction)Cache_near_bind, METH_VARARGS, NULL},                     \
    {"_near_get", (PyCFunction)Cache_near_get, METH_O, NULL},                             \
    {"_near_peek", (PyCFunction)Cache_near_peek, METH_O, NULL},                           \
    {"_near_lease", (PyCFunction)Cache_near_lease, METH_VARARGS, NULL},                   \
    {"_near_fill", (PyCFunction)Cache_near_fill, METH_VARARGS, NULL},                     \
    {"_near_release", (PyCFunction)Cache_near_release, METH_VARARGS, NULL},               \
    {"_near_invalidate", (PyCFunction)Cache_near_invalidate, METH_O, NULL},               \
    {"_near_bump", (PyCFunction)Cache_near_bump, METH_VARARGS, NULL},                     \
    {"_near_trust", (PyCFunction)Cache_near_trust, METH_VARARGS, NULL},                   \
    {"_near_count", (PyCFunction)Cache_near_count, METH_VARARGS, NULL},                   \
    {"_near_state", (PyCFunction)Cache_near_state, METH_NOARGS, NULL},
/* ==== end of near cache binding ==== */

static void release_region(CacheObject *self) {
    if (!self->open) return;
    if (self->counter_gen == fork_generation && self->counters &&
        self->counters != &self->c.h->counters[UWC_COUNTER_SLOTS - 1])
        uwc_counter_release(&self->c, self->counters);
    self->counters = NULL;
    self->counter_gen = 0;
    self->open = 0;
    guard_unregister(self);
    PyBuffer_Release(&self->view);
}

static PyObject *Cache_close(CacheObject *self, PyObject *unused) {
    release_region(self);
    Py_RETURN_NONE;
}

/* ---- construction ---- */

/* CacheBase(buffer, name, params, mode, *, on_full=None): map the region in buffer, made
 * (MODE_CREATE), joined (MODE_ATTACH) or joined and checked after a cold start (MODE_RECOVER);
 * on_full(name, evicted) is called, at most once a second, when a write finds the cache full. */
static int Cache_init(CacheObject *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"buffer", "name", "params", "mode", "on_full", NULL};
    PyObject *buffer, *name, *params, *on_full = Py_None;
    int mode;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OUOi|$O:CacheBase", names, &buffer, &name, &params, &mode, &on_full))
        return -1;
    if (self->open) {
        PyErr_SetString(PyExc_RuntimeError, "CacheBase is already initialised");
        return -1;
    }
    if (mode != UWCB_MODE_CREATE && mode != UWCB_MODE_ATTACH && mode != UWCB_MODE_RECOVER) {
        PyErr_Format(PyExc_ValueError, "mode must be MODE_CREATE, MODE_ATTACH or MODE_RECOVER, not %d", mode);
        return -1;
    }
    if (on_full != Py_None && !PyCallable_Check(on_full)) {
        PyErr_SetString(PyExc_TypeError, "on_full must be callable or None");
        return -1;
    }
    uwc_params p;
    if (parse_params(params, &p)) return -1;
    Py_buffer view;
    if (PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE) < 0) return -1;
    const char *why = NULL;
    int rc;
    uint64_t now = now_s();
    const char *cn = PyUnicode_AsUTF8(name);
    if (!cn) { PyBuffer_Release(&view); return -1; }
    guard_register(self, view.buf, (size_t)view.len);
    if (mode == UWCB_MODE_CREATE) {
        rc = uwc_create(&self->c, view.buf, (uint64_t)view.len, &p, cn, now);
        if (rc) why = "the buffer is too small for this geometry";
    } else {
        rc = uwc_attach(&self->c, view.buf, (uint64_t)view.len, &p, &why);
        if (rc == UWC_OK && mode == UWCB_MODE_RECOVER) rc = uwc_recover(&self->c, now, &self->recovered_dropped);
    }
    if (rc) {
        guard_unregister(self);
        PyBuffer_Release(&view);
        if (rc == UWC_EMISMATCH)
            PyErr_Format(ErrRegionMismatch, "the existing region of cache '%s' was created with another %s", cn, why);
        else if (rc == UWC_ECORRUPT)
            PyErr_Format(ErrCorruptStore, "cache '%s': %s", cn, why ? why : "corrupt region");
        else
            PyErr_Format(ErrCache, "cache '%s': %s (engine error %d)", cn, why ? why : "cannot open", rc);
        return -1;
    }
    self->view = view;
    self->open = 1;
    Py_INCREF(name);
    Py_XSETREF(self->name, name);
    self->full_silent = (p.options & UWC_OPT_FULL_SILENT) != 0;
    self->counter_gen = 0;
    if (on_full != Py_None) {
        Py_INCREF(on_full);
        Py_XSETREF(self->on_full, on_full);
    }
    return 0;
}

static void Cache_dealloc(CacheObject *self) {
    PyObject_GC_UnTrack(self);
    if (self->weakreflist) PyObject_ClearWeakRefs((PyObject *)self);
    release_region(self);
    Py_CLEAR(self->name);
    Py_CLEAR(self->on_write);
    Py_CLEAR(self->on_full);
    Py_CLEAR(self->near_prefix);
    Py_CLEAR(self->near_miss);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Cache_traverse(CacheObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->on_write);
    Py_VISIT(self->on_full);
    Py_VISIT(self->near_miss);
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static int Cache_tp_clear(CacheObject *self) {
    Py_CLEAR(self->on_write);
    Py_CLEAR(self->on_full);
    Py_CLEAR(self->near_miss);
    return 0;
}

/* ---- properties ---- */

static PyObject *Cache_get_name(CacheObject *self, void *c) {
    if (!self->name) Py_RETURN_NONE;
    Py_INCREF(self->name);
    return self->name;
}

#define GEOM_GETTER(fname, expr)                                                   \
    static PyObject *Cache_get_##fname(CacheObject *self, void *unused) {          \
        if (check_open(self)) return NULL;                                         \
        return PyLong_FromUnsignedLongLong((unsigned long long)(expr));            \
    }
GEOM_GETTER(max_items, self->c.p.max_items)
GEOM_GETTER(key_size, self->c.p.key_size)
GEOM_GETTER(block_size, self->c.p.block_size)
GEOM_GETTER(blocks, self->c.p.blocks)
GEOM_GETTER(hash_size, self->c.p.hash_size)
GEOM_GETTER(max_item_size, self->c.max_item_size)
GEOM_GETTER(capacity, self->c.p.max_items - 1)
GEOM_GETTER(region_size, self->c.size)
GEOM_GETTER(options_bits, self->c.p.options)

static PyObject *Cache_get_closed(CacheObject *self, void *unused) { return PyBool_FromLong(!self->open); }
static PyObject *Cache_get_hash_algo(CacheObject *self, void *unused) {
    if (check_open(self)) return NULL;
    uint32_t a = self->c.p.hash_algo;
    return PyUnicode_FromString(a == UWC_HASH_MURMUR2 ? "murmur2" : a == UWC_HASH_WYHASH ? "wyhash" : "djb33x");
}
static PyObject *Cache_get_math_initial(CacheObject *self, void *unused) {
    if (check_open(self)) return NULL;
    return PyLong_FromLongLong(self->c.p.math_initial);
}
static PyObject *Cache_get_recovered_dropped(CacheObject *self, void *unused) {
    return PyLong_FromUnsignedLongLong(self->recovered_dropped);
}

static PyGetSetDef Cache_getset[] = {
    {"name", (getter)Cache_get_name, NULL, "The cache's name.", NULL},
    {"max_items", (getter)Cache_get_max_items, NULL, "Item slots including the reserved slot 0.", NULL},
    {"capacity", (getter)Cache_get_capacity, NULL, "How many items fit: max_items - 1.", NULL},
    {"key_size", (getter)Cache_get_key_size, NULL, "Longest key, in bytes.", NULL},
    {"block_size", (getter)Cache_get_block_size, NULL, "Bytes per data block.", NULL},
    {"blocks", (getter)Cache_get_blocks, NULL, "Number of data blocks.", NULL},
    {"hash_size", (getter)Cache_get_hash_size, NULL, "Number of hash buckets.", NULL},
    {"hash_algo", (getter)Cache_get_hash_algo, NULL, "djb33x, murmur2 (uWSGI's) or wyhash.", NULL},
    {"math_initial", (getter)Cache_get_math_initial, NULL, "Start value of math ops on a missing key.", NULL},
    {"max_item_size", (getter)Cache_get_max_item_size, NULL, "Largest value one item can hold, in bytes.", NULL},
    {"region_size", (getter)Cache_get_region_size, NULL, "Bytes of shared memory the cache maps.", NULL},
    {"_options_bits", (getter)Cache_get_options_bits, NULL, NULL, NULL},
    {"_recovered_dropped", (getter)Cache_get_recovered_dropped, NULL, NULL, NULL},
    {"closed", (getter)Cache_get_closed, NULL, "True once close() was called in this process.", NULL},
    {NULL},
};

static PyMemberDef Cache_members[] = {
    {"_on_write", T_OBJECT, offsetof(CacheObject, on_write), 0, NULL},
    {"_on_full", T_OBJECT, offsetof(CacheObject, on_full), 0, NULL},
    {"__weaklistoffset__", T_PYSSIZET, offsetof(CacheObject, weakreflist), READONLY, NULL},
    {NULL},
};

#define FASTKW (METH_FASTCALL | METH_KEYWORDS)
static PyMethodDef Cache_methods[] = {
    {"get", (PyCFunction)(void (*)(void))Cache_get, FASTKW,
     "get($self, key, default=None)\n--\n\n"
     "The value (bytes), or default when the key is missing or expired."},
    {"set", (PyCFunction)(void (*)(void))Cache_set, FASTKW,
     "set($self, key, value, expires=0)\n--\n\n"
     "Create or overwrite; expires in seconds, 0 = never."},
    {"add", (PyCFunction)(void (*)(void))Cache_add, FASTKW,
     "add($self, key, value, expires=0)\n--\n\n"
     "Store only if the key is absent: True if stored, False if present."},
    {"delete", (PyCFunction)Cache_delete, METH_O,
     "delete($self, key, /)\n--\n\nTrue if the key was there."},
    {"keys", (PyCFunction)Cache_keys, METH_NOARGS,
     "keys($self, /)\n--\n\nThe live keys, a list of bytes in uWSGI's order."},
    {"clear", (PyCFunction)Cache_clear, METH_NOARGS, "clear($self, /)\n--\n\nDelete every item."},
    {"incr", (PyCFunction)(void (*)(void))Cache_incr, FASTKW,
     "incr($self, key, n=1, expires=0)\n--\n\n"
     "Add n to a signed 64-bit counter (created at math_initial); returns the new value."},
    {"decr", (PyCFunction)(void (*)(void))Cache_decr, FASTKW,
     "decr($self, key, n=1, expires=0)\n--\n\nSubtract n; returns the new value."},
    {"mul", (PyCFunction)(void (*)(void))Cache_mul, FASTKW,
     "mul($self, key, n=1, expires=0)\n--\n\nMultiply by n; returns the new value."},
    {"div", (PyCFunction)(void (*)(void))Cache_div, FASTKW,
     "div($self, key, n=1, expires=0)\n--\n\n"
     "Divide by n, truncating toward zero (x/0 = 0); returns the new value."},
    {"get_int", (PyCFunction)(void (*)(void))Cache_get_int, FASTKW,
     "get_int($self, key, default=None)\n--\n\nThe 8-byte counter stored at key, as an int."},
    {"ttl", (PyCFunction)Cache_ttl, METH_O,
     "ttl($self, key, /)\n--\n\n"
     "Seconds left, None if the item never expires; KeyError if missing."},
    {"get_many", (PyCFunction)Cache_get_many, METH_O,
     "get_many($self, keys, /)\n--\n\n"
     "{key: value} for the keys present (missing and expired keys are absent)."},
    {"set_many", (PyCFunction)(void (*)(void))Cache_set_many, FASTKW,
     "set_many($self, mapping, expires=0)\n--\n\n"
     "Store every pair; returns the list of keys not stored (cache full)."},
    {"delete_many", (PyCFunction)Cache_delete_many, METH_O,
     "delete_many($self, keys, /)\n--\n\nDelete the keys; returns how many were present."},
    {"touch", (PyCFunction)(void (*)(void))Cache_touch, FASTKW,
     "touch($self, key, expires)\n--\n\n"
     "Give a present key a new expiry (0 = never): True, or False if absent."},
    {"close", (PyCFunction)Cache_close, METH_NOARGS,
     "close($self, /)\n--\n\nDetach this process from the cache."},
    {"_set_unreplicated", (PyCFunction)Cache_set_unreplicated, METH_VARARGS, NULL},
    {"_add_unreplicated", (PyCFunction)Cache_add_unreplicated, METH_VARARGS, NULL},
    {"_delete_unreplicated", (PyCFunction)Cache_delete_unreplicated, METH_O, NULL},
    {"_get_with_expiry", (PyCFunction)Cache_get_with_expiry, METH_O, NULL},
    {"_stats_raw", (PyCFunction)Cache_stats_raw, METH_NOARGS, NULL},
    {"_full_events", (PyCFunction)Cache_full_events, METH_NOARGS, NULL},
    {"_check", (PyCFunction)Cache_check, METH_NOARGS, NULL},
    {"_block_bitmap", (PyCFunction)Cache_block_bitmap, METH_NOARGS, NULL},
    {"_repair", (PyCFunction)Cache_repair, METH_NOARGS, NULL},
    {"_sweep", (PyCFunction)(void (*)(void))Cache_sweep, METH_VARARGS | METH_KEYWORDS, NULL},
    {"_sweeper_claim", (PyCFunction)Cache_sweeper_claim, METH_VARARGS, NULL},
    {"_sweeper_release", (PyCFunction)Cache_sweeper_release, METH_VARARGS, NULL},
    {"_export_image", (PyCFunction)Cache_export_image, METH_NOARGS, NULL},
    {"_import_image", (PyCFunction)Cache_import_image, METH_VARARGS, NULL},
    {"_debug_crash_in_lock", (PyCFunction)Cache_debug_crash_in_lock, METH_O, NULL},
    {"_debug_crash_mid_write", (PyCFunction)Cache_debug_crash_mid_write, METH_VARARGS, NULL},
    {"_debug_hold_lock", (PyCFunction)Cache_debug_hold_lock, METH_VARARGS, NULL},
    {"_debug_layout", (PyCFunction)Cache_debug_layout, METH_NOARGS, NULL},
    {"_net_counter", (PyCFunction)Cache_net_counter, METH_VARARGS, NULL},
    NEAR_METHODS
    {NULL},
};

static PySequenceMethods Cache_as_sequence = {
    .sq_length = (lenfunc)Cache_len,
    .sq_contains = (objobjproc)Cache_contains,
};

static PyMappingMethods Cache_as_mapping = {
    .mp_length = (lenfunc)Cache_len,
    .mp_subscript = (binaryfunc)Cache_subscript,
    .mp_ass_subscript = (objobjargproc)Cache_ass_subscript,
};

PyTypeObject CacheType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "uwcache._engine.CacheBase",
    .tp_basicsize = sizeof(CacheObject),
    .tp_dealloc = (destructor)Cache_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "One shared-memory cache mapped into this process (use uwcache.Cache).",
    .tp_traverse = (traverseproc)Cache_traverse,
    .tp_clear = (inquiry)Cache_tp_clear,
    .tp_weaklistoffset = offsetof(CacheObject, weakreflist),
    .tp_iter = (getiterfunc)Cache_iter,
    .tp_methods = Cache_methods,
    .tp_members = Cache_members,
    .tp_getset = Cache_getset,
    .tp_init = (initproc)Cache_init,
    .tp_new = PyType_GenericNew,
    .tp_as_sequence = &Cache_as_sequence,
    .tp_as_mapping = &Cache_as_mapping,
};
