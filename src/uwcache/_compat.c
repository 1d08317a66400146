/* uWSGI's cache_* functions, with uWSGI's argument conversions and return conventions, and
 * the registry of caches they resolve names in. */
#include "_engine_binding.h"

/* ---- uWSGI-compatible functions ---- */

/* The default cache (the registry's first entry), remembered until the registry changes:
 * the registry holds it, and only _compat_register/_unregister change the registry. */
static CacheObject *compat_default_cache;
static uint64_t compat_default_gen;

static CacheObject *compat_default(void) {
    if (compat_default_gen == compat_gen) return compat_default_cache;
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    compat_default_cache = (compat_registry && PyDict_Next(compat_registry, &pos, &k, &v)) ? (CacheObject *)v : NULL;
    compat_default_gen = compat_gen;
    return compat_default_cache;
}

/* Resolve a cache argument: NULL/"" -> default; "name@addr" -> remote (returns NULL, *remote=1);
 * unknown -> NULL. Only open caches are returned. */
static CacheObject *compat_resolve(const char *name, int *remote) {
    *remote = 0;
    CacheObject *c;
    if (!name || !*name) {
        c = compat_default();
    } else {
        if (strchr(name, '@')) { *remote = 1; return NULL; }
        c = compat_registry ? (CacheObject *)PyDict_GetItemString(compat_registry, name) : NULL;
    }
    return (c && c->open) ? c : NULL;
}

static PyObject *compat_call_remote(const char *op, PyObject *args) {
    if (!compat_remote || compat_remote == Py_None) Py_RETURN_NONE;
    return PyObject_CallFunction(compat_remote, "sO", op, args);
}

#define RET_TRUE_OR_NONE(cond) do { if (cond) Py_RETURN_TRUE; Py_RETURN_NONE; } while (0)

/* Fast-call argument conversion with uWSGI's rules (its plugin uses "s#" for keys and
 * values, "s" for the cache name, "l" for numbers). bytes and str take the fast path; any
 * other object goes through CPython's own "s#" so its acceptance and errors stay identical. */
static int compat_sbuf(PyObject *o, const char **p, Py_ssize_t *n) {
    if (PyBytes_Check(o)) {
        *p = PyBytes_AS_STRING(o);
        *n = PyBytes_GET_SIZE(o);
        return 0;
    }
    if (PyUnicode_Check(o)) {
        *p = PyUnicode_AsUTF8AndSize(o, n);
        return *p ? 0 : -1;
    }
    PyObject *t = PyTuple_Pack(1, o);
    if (!t) return -1;
    int ok = PyArg_ParseTuple(t, "s#", p, n);  /* the pointer stays valid: o outlives the call */
    Py_DECREF(t);
    return ok ? 0 : -1;
}

static int compat_cache_name(const char *fname, PyObject *o, const char **name) {
    if (!PyUnicode_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s() argument must be str, not %.100s", fname, Py_TYPE(o)->tp_name);
        return -1;
    }
    Py_ssize_t n;
    const char *c = PyUnicode_AsUTF8AndSize(o, &n);
    if (!c) return -1;
    if ((Py_ssize_t)strlen(c) != n) {
        PyErr_SetString(PyExc_ValueError, "embedded null character");
        return -1;
    }
    *name = c;
    return 0;
}

/* The last cache-name argument resolved, so that a named compat call costs a pointer
 * compare instead of building a str from the name and hashing it (48 ns per call before).
 * Both references are strong; the entry is valid while compat_gen is unchanged. */
static PyObject *compat_last_name;
static PyObject *compat_last_cache;   /* CacheBase or NULL (unknown name) */
static int compat_last_remote;
static uint64_t compat_last_gen;

/* Resolve the optional cache-name argument o (NULL: the default cache) with the same
 * checks as uWSGI's "s": *out is an open cache, or NULL with *remote set for
 * "name@host:port", or NULL for an unknown/closed cache. -1 with an exception on bad input. */
static int compat_resolve_arg(const char *fname, PyObject *o, CacheObject **out, int *remote) {
    CacheObject *c;
    if (!o) {
        *remote = 0;
        c = compat_default();
    } else if (o == compat_last_name && compat_last_gen == compat_gen) {
        *remote = compat_last_remote;
        c = (CacheObject *)compat_last_cache;
    } else {
        const char *name;
        if (compat_cache_name(fname, o, &name)) return -1;
        *remote = 0;
        if (!*name) {
            c = compat_default();
        } else if (strchr(name, '@')) {
            *remote = 1;
            c = NULL;
        } else if (PyUnicode_CheckExact(o)) {
            c = (CacheObject *)PyDict_GetItemWithError(compat_registry, o);  /* the str's cached hash */
            if (!c && PyErr_Occurred()) return -1;
        } else {
            c = (CacheObject *)PyDict_GetItemString(compat_registry, name);
        }
        if (PyUnicode_CheckExact(o) && *name) {
            Py_INCREF(o);
            Py_XINCREF(c);
            Py_XSETREF(compat_last_name, o);
            Py_XSETREF(compat_last_cache, (PyObject *)c);
            compat_last_remote = *remote;
            compat_last_gen = compat_gen;
        }
    }
    *out = (c && c->open) ? c : NULL;
    return 0;
}

static int compat_long(PyObject *o, long *v) {
    *v = PyLong_AsLong(o);
    return (*v == -1 && PyErr_Occurred()) ? -1 : 0;
}

static int compat_nargs(const char *fname, Py_ssize_t nargs, Py_ssize_t lo, Py_ssize_t hi) {
    if (nargs >= lo && nargs <= hi) return 0;
    PyErr_Format(PyExc_TypeError, "%s() takes from %zd to %zd positional arguments (%zd given)", fname, lo, hi, nargs);
    return -1;
}

/* The original arguments as a tuple, for the remote hook ("name@host:port"). */
static PyObject *compat_call_remote_fast(const char *op, PyObject *const *args, Py_ssize_t nargs) {
    PyObject *t = PyTuple_New(nargs);
    if (!t) return NULL;
    for (Py_ssize_t i = 0; i < nargs; i++) {
        Py_INCREF(args[i]);
        PyTuple_SET_ITEM(t, i, args[i]);
    }
    PyObject *r = compat_call_remote(op, t);
    Py_DECREF(t);
    return r;
}

static PyObject *compat_cache_get(PyObject *m, PyObject *const *args, Py_ssize_t nargs) {
    const char *key;
    Py_ssize_t kl;
    int remote;
    CacheObject *c;
    if (compat_nargs("cache_get", nargs, 1, 2) || compat_sbuf(args[0], &key, &kl) ||
        compat_resolve_arg("cache_get", nargs > 1 ? args[1] : NULL, &c, &remote))
        return NULL;
    if (remote) return compat_call_remote_fast("get", args, nargs);
    if (!c) Py_RETURN_NONE;
    int rc;
    PyObject *v = do_get(c, key, kl, &rc, NULL);
    if (v) return v;
    if (PyErr_Occurred()) return NULL;  /* out of memory only */
    Py_RETURN_NONE;
}

/* The write a compat call asks for. A negative TTL wraps in uWSGI (C long into u64) to an
 * absolute time in the past: the item is stored already expired. */
static uwc_write compat_write_args(CacheObject *c, const char *key, Py_ssize_t kl, const char *val, Py_ssize_t vl,
                                   long expires, uint32_t flags) {
    uwc_write w = {0};
    w.key = (const uint8_t *)key;
    w.key_len = (uint64_t)kl;
    w.value = (const uint8_t *)val;
    w.value_len = (uint64_t)vl;
    w.now = now_s();
    w.flags = flags;
    w.counters = counters(c);
    if (expires < 0) {
        long long abs_t = (long long)w.now + expires;
        w.expires = abs_t > 0 ? (uint64_t)abs_t : 1;
        w.flags |= UWC_F_ABSEXPIRE;
    } else {
        w.expires = (uint64_t)expires;
    }
    return w;
}

static PyObject *compat_write(const char *fname, const char *op, uint32_t flags, PyObject *const *args,
                              Py_ssize_t nargs) {
    const char *key, *val;
    Py_ssize_t kl, vl;
    long expires = 0;
    int remote;
    CacheObject *c;
    if (compat_nargs(fname, nargs, 2, 4) || compat_sbuf(args[0], &key, &kl) || compat_sbuf(args[1], &val, &vl) ||
        (nargs > 2 && compat_long(args[2], &expires)) ||
        compat_resolve_arg(fname, nargs > 3 ? args[3] : NULL, &c, &remote))
        return NULL;
    if (remote) return compat_call_remote_fast(op, args, nargs);
    if (!c) Py_RETURN_NONE;
    uwc_write w = compat_write_args(c, key, kl, val, vl, expires, flags);
    int rc = uwc_set(&c->c, &w);
    Py_INCREF(c);  /* the registry's reference: a full hook may unregister and close the cache */
    fire_full(c, w.events);
    if (rc == UWC_OK) fire_write(c, OP_SET, key, kl, val, vl, w.expires_abs);
    Py_DECREF(c);
    RET_TRUE_OR_NONE(rc == UWC_OK);
}

static PyObject *compat_cache_set(PyObject *m, PyObject *const *args, Py_ssize_t nargs) {
    return compat_write("cache_set", "set", 0, args, nargs);
}
static PyObject *compat_cache_update(PyObject *m, PyObject *const *args, Py_ssize_t nargs) {
    return compat_write("cache_update", "update", UWC_F_UPDATE, args, nargs);
}

static PyObject *compat_cache_del(PyObject *m, PyObject *const *args, Py_ssize_t nargs) {
    const char *key;
    Py_ssize_t kl;
    int remote;
    CacheObject *c;
    if (compat_nargs("cache_del", nargs, 1, 2) || compat_sbuf(args[0], &key, &kl) ||
        compat_resolve_arg("cache_del", nargs > 1 ? args[1] : NULL, &c, &remote))
        return NULL;
    if (remote) return compat_call_remote_fast("del", args, nargs);
    if (!c) Py_RETURN_NONE;
    int rc = uwc_delete(&c->c, (const uint8_t *)key, (uint64_t)kl, now_s(), counters(c));
    if (rc == UWC_OK) fire_write(c, OP_DELETE, key, kl, "", 0, 0);
    RET_TRUE_OR_NONE(rc == UWC_OK);
}

static PyObject *compat_cache_exists(PyObject *m, PyObject *const *args, Py_ssize_t nargs) {
    const char *key;
    Py_ssize_t kl;
    int remote;
    CacheObject *c;
    if (compat_nargs("cache_exists", nargs, 1, 2) || compat_sbuf(args[0], &key, &kl) ||
        compat_resolve_arg("cache_exists", nargs > 1 ? args[1] : NULL, &c, &remote))
        return NULL;
    if (remote) return compat_call_remote_fast("exists", args, nargs);
    if (!c) Py_RETURN_NONE;
    RET_TRUE_OR_NONE(uwc_exists(&c->c, (const uint8_t *)key, (uint64_t)kl, now_s(), NULL) == UWC_OK);
}

static PyObject *compat_cache_clear(PyObject *m, PyObject *args) {
    const char *cache = NULL;
    if (!PyArg_ParseTuple(args, "|s:cache_clear", &cache)) return NULL;
    int remote;
    CacheObject *c = compat_resolve(cache, &remote);
    if (remote) return compat_call_remote("clear", args);
    if (!c) Py_RETURN_NONE;
    int rc = uwc_clear(&c->c, now_s(), counters(c));
    if (rc == UWC_OK) fire_write(c, OP_CLEAR, "", 0, "", 0, 0);
    RET_TRUE_OR_NONE(rc == UWC_OK);
}

static PyObject *compat_cache_keys(PyObject *m, PyObject *args) {
    const char *cache = NULL;
    if (!PyArg_ParseTuple(args, "|s:cache_keys", &cache)) return NULL;
    int remote;
    CacheObject *c = compat_resolve(cache, &remote);
    if (!c) {
        PyErr_SetString(PyExc_ValueError, "no local uWSGI cache available");
        return NULL;
    }
    uwc_keybuf kb = {0};
    int rc = uwc_keys(&c->c, now_s(), &kb);
    if (rc) {
        uwc_keybuf_free(&kb);
        return raise_status(c, rc, 0, 0);
    }
    PyObject *list = keybuf_to_list(&kb);
    uwc_keybuf_free(&kb);
    return list;
}

static PyObject *compat_math(PyObject *args, const char *fmt, const char *op, long dflt, uint32_t opflag) {
    const char *key, *cache = NULL;
    Py_ssize_t kl;
    long value = dflt, expires = 0;
    if (!PyArg_ParseTuple(args, fmt, &key, &kl, &value, &expires, &cache)) return NULL;
    int remote;
    CacheObject *c = compat_resolve(cache, &remote);
    if (remote) return compat_call_remote(op, args);
    if (!c) Py_RETURN_NONE;
    int64_t operand = value;
    uwc_write w = compat_write_args(c, key, kl, (const char *)&operand, 8, expires,
                                    UWC_F_UPDATE | UWC_F_MATH | UWC_F_FIXEXPIRE | opflag);
    int rc = uwc_set(&c->c, &w);
    fire_full(c, w.events);
    if (rc == UWC_OK) {
        int64_t res = w.math_result;
        fire_write(c, OP_SET, key, kl, &res, 8, w.expires_abs);
    }
    RET_TRUE_OR_NONE(rc == UWC_OK);
}

static PyObject *compat_cache_inc(PyObject *m, PyObject *a) { return compat_math(a, "s#|lls:cache_inc", "inc", 1, UWC_F_INC); }
static PyObject *compat_cache_dec(PyObject *m, PyObject *a) { return compat_math(a, "s#|lls:cache_dec", "dec", 1, UWC_F_DEC); }
static PyObject *compat_cache_mul(PyObject *m, PyObject *a) { return compat_math(a, "s#|lls:cache_mul", "mul", 2, UWC_F_MUL); }
static PyObject *compat_cache_div(PyObject *m, PyObject *a) { return compat_math(a, "s#|lls:cache_div", "div", 2, UWC_F_DIV); }

static PyObject *compat_cache_num(PyObject *m, PyObject *args) {
    const char *key, *cache = NULL;
    Py_ssize_t kl;
    if (!PyArg_ParseTuple(args, "s#|s:cache_num", &key, &kl, &cache)) return NULL;
    int remote;
    CacheObject *c = compat_resolve(cache, &remote);
    PyObject *v = NULL;
    if (remote) {
        v = compat_call_remote("get", args);
        if (!v) return NULL;
        if (v == Py_None) { Py_DECREF(v); v = NULL; }
    } else if (c) {
        int rc;
        v = do_get(c, key, kl, &rc, NULL);
        if (!v && PyErr_Occurred()) return NULL;
    }
    if (!v || !PyBytes_Check(v) || PyBytes_GET_SIZE(v) != 8) {
        Py_XDECREF(v);
        return PyLong_FromLong(0);
    }
    int64_t x;
    memcpy(&x, PyBytes_AS_STRING(v), 8);
    Py_DECREF(v);
    return PyLong_FromLongLong(x);
}

static PyObject *compat_register(PyObject *m, PyObject *args) {
    PyObject *name, *cache;
    if (!PyArg_ParseTuple(args, "UO!:_compat_register", &name, &CacheType, &cache)) return NULL;
    if (PyDict_GetItem(compat_registry, name)) Py_RETURN_FALSE;  /* first registration wins */
    if (PyDict_SetItem(compat_registry, name, cache) < 0) return NULL;
    compat_gen++;
    Py_RETURN_TRUE;
}

static PyObject *compat_unregister(PyObject *m, PyObject *args) {
    PyObject *name, *cache = NULL;
    if (!PyArg_ParseTuple(args, "U|O:_compat_unregister", &name, &cache)) return NULL;
    PyObject *cur = PyDict_GetItem(compat_registry, name);
    if (cur && (!cache || cur == cache)) {
        if (PyDict_DelItem(compat_registry, name) < 0) return NULL;
        compat_gen++;
    }
    Py_RETURN_NONE;
}

static PyObject *compat_set_remote(PyObject *m, PyObject *fn) {
    Py_INCREF(fn);
    Py_XSETREF(compat_remote, fn);
    Py_RETURN_NONE;
}

static PyObject *compat_get_registry(PyObject *m, PyObject *unused) {
    return PyDict_Copy(compat_registry);  /* a copy: changes go through _compat_register */
}

/* ---- the module functions of this file (added by PyInit__engine) ---- */

PyMethodDef uwcb_compat_methods[] = {
    {"cache_get", (PyCFunction)(void (*)(void))compat_cache_get, METH_FASTCALL, "cache_get(key[, cache]) -> bytes or None"},
    {"cache_set", (PyCFunction)(void (*)(void))compat_cache_set, METH_FASTCALL, "cache_set(key, value[, expires[, cache]]) -> True or None"},
    {"cache_update", (PyCFunction)(void (*)(void))compat_cache_update, METH_FASTCALL, "cache_update(key, value[, expires[, cache]]) -> True or None"},
    {"cache_del", (PyCFunction)(void (*)(void))compat_cache_del, METH_FASTCALL, "cache_del(key[, cache]) -> True or None"},
    {"cache_exists", (PyCFunction)(void (*)(void))compat_cache_exists, METH_FASTCALL, "cache_exists(key[, cache]) -> True or None"},
    {"cache_clear", compat_cache_clear, METH_VARARGS, "cache_clear([cache]) -> True or None"},
    {"cache_keys", compat_cache_keys, METH_VARARGS, "cache_keys([cache]) -> list of bytes"},
    {"cache_inc", compat_cache_inc, METH_VARARGS, "cache_inc(key[, value=1[, expires[, cache]]]) -> True or None"},
    {"cache_dec", compat_cache_dec, METH_VARARGS, "cache_dec(key[, value=1[, expires[, cache]]]) -> True or None"},
    {"cache_mul", compat_cache_mul, METH_VARARGS, "cache_mul(key[, value=2[, expires[, cache]]]) -> True or None"},
    {"cache_div", compat_cache_div, METH_VARARGS, "cache_div(key[, value=2[, expires[, cache]]]) -> True or None"},
    {"cache_num", compat_cache_num, METH_VARARGS, "cache_num(key[, cache]) -> int (0 when missing)"},
    {"_compat_register", compat_register, METH_VARARGS, NULL},
    {"_compat_unregister", compat_unregister, METH_VARARGS, NULL},
    {"_compat_set_remote", compat_set_remote, METH_O, NULL},
    {"_compat_registry", compat_get_registry, METH_NOARGS, NULL},
    {NULL},
};
