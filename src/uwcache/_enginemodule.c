/* Thin CPython binding over the engine, in three files (see _engine_binding.h): this one has
 * the module init and the helpers shared by the CacheBase type (_cache_type.c) and uWSGI's
 * cache_* functions (_compat.c). Nothing here runs Python code while the
 * engine's lock is held (the only thing done under it is allocating the result bytes). */
#include "_engine_binding.h"

#include <pthread.h>
#include <sys/mman.h>

_Static_assert(sizeof(uwc_header) <= UWC_HEADER_SIZE, "header does not fit");

/* ---- module state (single-phase init: one interpreter) ---- */

PyObject *ErrCache, *ErrKeyTooLong, *ErrValueTooLarge, *ErrEmptyValue, *ErrCacheFull,
    *ErrNotAnInteger, *ErrRegionMismatch, *ErrCorruptStore, *ErrCacheClosed;
PyObject *compat_registry;
uint64_t compat_gen = 1;
PyObject *compat_remote;
unsigned long fork_generation = 1;

static void after_fork_child(void) { fork_generation++; }

/* ---- argument helpers ---- */

/* Minimal fast-call keyword parsing: names[i] for positions, nreq required. */
int parse_args(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, const char *fname,
                      const char *const *names, int nmax, int nreq, PyObject **out) {
    for (int i = 0; i < nmax; i++) out[i] = NULL;
    if (nargs > nmax) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %d arguments (%zd given)", fname, nmax, nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) out[i] = args[i];
    if (kwnames) {
        Py_ssize_t nk = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t k = 0; k < nk; k++) {
            const char *kn = PyUnicode_AsUTF8(PyTuple_GET_ITEM(kwnames, k));
            if (!kn) return -1;
            int found = 0;
            for (int i = 0; i < nmax; i++) {
                if (strcmp(kn, names[i]) == 0) {
                    if (out[i]) {
                        PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'", fname, kn);
                        return -1;
                    }
                    out[i] = args[nargs + k];
                    found = 1;
                    break;
                }
            }
            if (!found) {
                PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%s'", fname, kn);
                return -1;
            }
        }
    }
    for (int i = 0; i < nreq; i++) {
        if (!out[i]) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fname, names[i]);
            return -1;
        }
    }
    return 0;
}

int get_expires(PyObject *o, uint64_t *out) {
    if (!o || o == Py_None) { *out = 0; return 0; }
    if (!PyLong_Check(o)) {
        PyErr_Format(PyExc_TypeError, "expires must be an int (seconds), not %.100s", Py_TYPE(o)->tp_name);
        return -1;
    }
    long long v = PyLong_AsLongLong(o);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (v < 0) {
        PyErr_SetString(PyExc_ValueError, "expires must be >= 0 seconds (0 means never)");
        return -1;
    }
    if ((unsigned long long)v > (1ull << 40)) {
        PyErr_SetString(PyExc_ValueError, "expires is too far in the future (at most 2**40 seconds)");
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}


/* ---- errors ---- */

const char *cname(CacheObject *self) {
    const char *n = PyUnicode_AsUTF8(self->name);
    if (!n) { PyErr_Clear(); n = "?"; }
    return n;
}

int raise_broken(CacheObject *self) {
    PyErr_Format(ErrCorruptStore,
                 "the region of cache '%s' was truncated by another process while this process had it "
                 "attached; this handle is unusable: close it and open the cache again", cname(self));
    return -1;
}

/* On error paths only: a region truncated and extended again reads as zeros, header included. */
static int region_wiped(CacheObject *self) {
    return self->open && (self->broken || memcmp(self->view.buf, UWC_MAGIC, 8) != 0);
}

/* ---- engine status -> (exception class, message) ----
 * One row per status (and variant: a value too large with or without mode_bitmap, a cache
 * full of items or of blocks). Messages name the limit and the option behind it; {field}
 * placeholders are filled by status_field() below. */

enum { V_ANY = 0, V_BITMAP = 1, V_ITEMS_FULL = 1 };

typedef struct {
    int rc;
    int variant;
    PyObject **cls;
    const char *msg;
} status_row;

static const status_row status_table[] = {
    {UWC_EKEY_EMPTY, V_ANY, &ErrEmptyValue, "keys must not be empty"},
    {UWC_EKEY_LONG, V_ANY, &ErrKeyTooLong,
     "key of {klen} bytes is longer than the {key_size} bytes allowed by key_size of cache '{name}'"},
    {UWC_EVAL_EMPTY, V_ANY, &ErrEmptyValue, "values must not be empty (uWSGI's cache cannot store an empty value)"},
    {UWC_EVAL_LARGE, V_BITMAP, &ErrValueTooLarge,
     "value of {vlen} bytes is larger than the {max_item_size} bytes one item can hold in cache '{name}' "
     "(block_size={block_size} * block_count={blocks})"},
    {UWC_EVAL_LARGE, V_ANY, &ErrValueTooLarge,
     "value of {vlen} bytes is larger than the {max_item_size} bytes one item can hold in cache '{name}' "
     "(block_size; or use mode_bitmap to let values span blocks)"},
    {UWC_FULL, V_ITEMS_FULL, &ErrCacheFull,
     "cache '{name}' is full: all {capacity} items are in use (max_items={max_items}, one slot is reserved); "
     "raise max_items or enable full_purge_lru"},
    {UWC_FULL, V_ANY, &ErrCacheFull,
     "cache '{name}' is full: no run of {blocks_needed} free blocks of {block_size} bytes for a {vlen}-byte value "
     "(block_count={blocks}); raise block_count or enable full_purge_lru"},
    {UWC_ENOTINT, V_ANY, &ErrNotAnInteger, "the value stored in cache '{name}' is not an 8-byte integer"},
    {UWC_ELOCK, V_ANY, &ErrCache, "the lock of cache '{name}' is unusable (not recoverable)"},
    {UWC_ECORRUPT, V_ANY, &ErrCorruptStore,
     "cache '{name}' was found damaged during this operation and has been rebuilt; retry it"},
    {0, V_ANY, &ErrCache, "cache '{name}': engine error {rc}"},  /* any other status */
};

static int status_variant(CacheObject *self, int rc) {
    if (rc == UWC_EVAL_LARGE) return (self->c.p.options & UWC_OPT_BITMAP) ? V_BITMAP : V_ANY;
    if (rc == UWC_FULL) return uwc_n_items(&self->c) >= self->c.p.max_items - 1 ? V_ITEMS_FULL : V_ANY;
    return V_ANY;
}

/* The value of one {field} of a status message, written at out (at most room bytes). */
static int status_field(CacheObject *self, const char *f, size_t n, int rc, Py_ssize_t klen, Py_ssize_t vlen,
                        char *out, size_t room) {
    const uwc_params *p = &self->c.p;
#define FIELD(s) (n == sizeof(s) - 1 && memcmp(f, s, n) == 0)
    if (FIELD("name")) return snprintf(out, room, "%s", cname(self));
    long long v;
    if (FIELD("rc")) v = rc;
    else if (FIELD("klen")) v = (long long)klen;
    else if (FIELD("vlen")) v = (long long)vlen;
    else {
        unsigned long long u;
        if (FIELD("key_size")) u = p->key_size;
        else if (FIELD("max_item_size")) u = self->c.max_item_size;
        else if (FIELD("block_size")) u = p->block_size;
        else if (FIELD("blocks")) u = p->blocks;
        else if (FIELD("max_items")) u = p->max_items;
        else if (FIELD("capacity")) u = p->max_items - 1;
        else if (FIELD("blocks_needed")) u = ((unsigned long long)vlen + p->block_size - 1) / p->block_size;
        else return snprintf(out, room, "?");
        return snprintf(out, room, "%llu", u);
    }
#undef FIELD
    return snprintf(out, room, "%lld", v);
}

PyObject *raise_status(CacheObject *self, int rc, Py_ssize_t klen, Py_ssize_t vlen) {
    if ((rc == UWC_FULL || rc == UWC_ENOTINT || rc >= UWC_ELOCK) && region_wiped(self)) {
        PyErr_Format(ErrCorruptStore,
                     "the region of cache '%s' was wiped (its header is gone: truncated and extended again "
                     "by another process?); close it and open the cache again", cname(self));
        return NULL;
    }
    if (rc == UWC_ENOMEM) {
        if (!PyErr_Occurred()) PyErr_NoMemory();
        return NULL;
    }
    int variant = status_variant(self, rc);
    const status_row *row = status_table;
    while (row->rc && !(row->rc == rc && row->variant == variant)) row++;
    char msg[640];
    size_t len = 0;
    for (const char *m = row->msg; *m && len < sizeof msg - 1;) {
        const char *end = m[0] == '{' ? strchr(m, '}') : NULL;
        if (end) {
            int w = status_field(self, m + 1, (size_t)(end - m - 1), rc, klen, vlen, msg + len, sizeof msg - len);
            if (w > 0) len += (size_t)w < sizeof msg - len ? (size_t)w : sizeof msg - len - 1;
            m = end + 1;
        } else {
            msg[len++] = *m++;
        }
    }
    msg[len] = '\0';
    PyErr_SetString(*row->cls, msg);
    return NULL;
}

/* ---- construction helper shared by CacheBase and region_size ---- */

int parse_params(PyObject *t, uwc_params *p) {
    unsigned long long mi, ks, bs, bl, hs, ms;
    unsigned int ha, opt;
    long long init;
    if (!PyArg_ParseTuple(t, "KKKKKIILK;params must be (max_items, key_size, block_size, blocks, hash_size, "
                             "hash_algo, options, math_initial, sweep_on_full)",
                          &mi, &ks, &bs, &bl, &hs, &ha, &opt, &init, &ms))
        return -1;
    memset(p, 0, sizeof *p);
    p->max_items = mi; p->key_size = ks; p->block_size = bs; p->blocks = bl; p->hash_size = hs;
    p->hash_algo = ha; p->options = opt; p->math_initial = init; p->sweep_on_full = ms;
    const char *why = NULL;
    if (uwc_params_check(p, &why)) {
        PyErr_Format(PyExc_ValueError, "invalid cache geometry: %s", why);
        return -1;
    }
    return 0;
}


/* _resp_bulks(buffer, pos, max_count) -> (list of bytes, new pos): the near listener's RESP
 * parser hands runs of bulk strings (an invalidation push's keys) to this loop. It takes only
 * complete, well-formed "$<digits>\r\n<data>\r\n" items and stops at anything else, which the
 * Python parser then handles (errors included). */
static PyObject *near_resp_bulks(PyObject *mod, PyObject *args) {
    Py_buffer view;
    Py_ssize_t pos, maxn;
    if (!PyArg_ParseTuple(args, "y*nn:_resp_bulks", &view, &pos, &maxn)) return NULL;
    PyObject *list = PyList_New(0);
    if (!list) { PyBuffer_Release(&view); return NULL; }
    const char *b = view.buf;
    Py_ssize_t len = view.len, got = 0;
    while (got < maxn && pos >= 0 && pos < len && b[pos] == '$') {
        Py_ssize_t p = pos + 1, n = 0;
        int digits = 0;
        while (p < len && b[p] >= '0' && b[p] <= '9' && digits < 10) { n = n * 10 + (b[p] - '0'); p++; digits++; }
        if (!digits || p + 1 >= len || b[p] != '\r' || b[p + 1] != '\n') break;
        Py_ssize_t start = p + 2, stop = start + n;
        if (n > (Py_ssize_t)512 * 1024 * 1024 || stop + 2 > len || b[stop] != '\r' || b[stop + 1] != '\n') break;
        PyObject *item = PyBytes_FromStringAndSize(b + start, n);
        if (!item || PyList_Append(list, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(list);
            PyBuffer_Release(&view);
            return NULL;
        }
        Py_DECREF(item);
        got++;
        pos = stop + 2;
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("(Nn)", list, pos);
}

/* ---- module functions for the Python layer ---- */

static PyObject *mod_region_size(PyObject *m, PyObject *params) {
    uwc_params p;
    if (parse_params(params, &p)) return NULL;
    uint64_t size;
    uwc_region_size(&p, &size);
    return PyLong_FromUnsignedLongLong(size);
}

/* region_layout(params) -> {area: bytes}: the areas of a region in order (header, items,
 * data, hash table, free stack, bitmap, then the padding that aligns them), summing to
 * region_size(params). The one place the geometry is computed is the engine. */
static PyObject *mod_region_layout(PyObject *m, PyObject *params) {
    uwc_params p;
    uwc_layout l;
    if (parse_params(params, &p)) return NULL;
    if (uwc_region_layout(&p, &l) != UWC_OK) {
        PyErr_SetString(PyExc_ValueError, "invalid cache geometry: the cache would need more than 2**46 bytes");
        return NULL;
    }
    unsigned long long areas[6] = {
        UWC_HEADER_SIZE,
        (UWC_ITEM_HEADER + p.key_size) * p.max_items,
        p.block_size * p.blocks,
        (unsigned long long)UWC_BUCKET_BYTES * p.hash_size,
        sizeof(uint32_t) * p.max_items,
        (p.options & UWC_OPT_BITMAP) ? (p.blocks + 7) / 8 : 0,
    };
    static const char *const names[6] = {"header", "items", "data", "hash table", "free stack", "bitmap"};
    unsigned long long used = 0;
    PyObject *d = PyDict_New();
    if (!d) return NULL;
    for (int i = 0; i <= 6; i++) {
        unsigned long long v = i < 6 ? areas[i] : l.total - used;
        if (i < 6) used += v;
        if (dict_put_new(d, i < 6 ? names[i] : "alignment", PyLong_FromUnsignedLongLong(v)) < 0) {
            Py_DECREF(d);
            return NULL;
        }
    }
    return d;
}

/* image_size(max_items, key_size, block_size, blocks) -> bytes of a uWSGI raw image (its
 * dump / store file body): the item records, then the data blocks. */
static PyObject *mod_image_size(PyObject *m, PyObject *args) {
    unsigned long long mi, ks, bs, bl, items, data, total;
    if (!PyArg_ParseTuple(args, "KKKK:image_size", &mi, &ks, &bs, &bl)) return NULL;
    if (__builtin_mul_overflow(UWC_ITEM_HEADER + ks, mi, &items) || __builtin_mul_overflow(bs, bl, &data) ||
        __builtin_add_overflow(items, data, &total)) {
        PyErr_SetString(PyExc_OverflowError, "image_size: the image would need more than 2**64 bytes");
        return NULL;
    }
    return PyLong_FromUnsignedLongLong(total);
}

/* region_problem(header, file_size, params) -> str or None: why an existing region (header:
 * its first bytes, file_size: its whole size) cannot be used with params, or None when it can.
 * An unreadable header raises CorruptStore (as peek_header does). */
static PyObject *mod_region_problem(PyObject *m, PyObject *args) {
    Py_buffer view;
    unsigned long long file_size;
    PyObject *params;
    if (!PyArg_ParseTuple(args, "y*KO:region_problem", &view, &file_size, &params)) return NULL;
    uwc_params want, have;
    uint64_t size;
    if (parse_params(params, &want)) { PyBuffer_Release(&view); return NULL; }
    uwc_region_size(&want, &size);
    if (view.len < (Py_ssize_t)sizeof(uwc_header)) {
        PyBuffer_Release(&view);
        PyErr_SetString(ErrCorruptStore, "the region is smaller than a uwcache header");
        return NULL;
    }
    char name[UWC_NAME_MAX + 1];
    const char *why = NULL;
    int rc = uwc_header_peek(view.buf, (uint64_t)file_size, &have, name, &why);
    int ready = rc == UWC_OK && ((const uwc_header *)view.buf)->state == UWC_STATE_READY;
    PyBuffer_Release(&view);
    if (rc) {
        PyErr_SetString(ErrCorruptStore, why ? why : "not a uwcache region");
        return NULL;
    }
    PyObject *decoded = PyUnicode_DecodeUTF8(name, (Py_ssize_t)strlen(name), "strict");
    if (!decoded) {
        PyErr_Clear();
        PyErr_SetString(ErrCorruptStore, "the cache name in the region header is not valid UTF-8 (damaged header)");
        return NULL;
    }
    Py_DECREF(decoded);
    if (!ready) return PyUnicode_FromString("its initialisation never finished");
    const struct { const char *label; uint64_t have, want; } geometry[] = {
        {"max_items", have.max_items, want.max_items},   {"key_size", have.key_size, want.key_size},
        {"block_size", have.block_size, want.block_size}, {"block_count", have.blocks, want.blocks},
        {"hash_size", have.hash_size, want.hash_size},   {"hash_algo", have.hash_algo, want.hash_algo},
    };
    for (size_t i = 0; i < sizeof geometry / sizeof geometry[0]; i++)
        if (geometry[i].have != geometry[i].want)
            return PyUnicode_FromFormat("it was created with %s=%llu, the configuration says %llu", geometry[i].label,
                                        (unsigned long long)geometry[i].have, (unsigned long long)geometry[i].want);
    const uint32_t shared = UWC_OPT_BITMAP | UWC_OPT_LRU | UWC_OPT_LAZY | UWC_OPT_CLEAR_ON_FULL;
    if ((have.options ^ want.options) & shared)
        return PyUnicode_FromString("it was created with other mode_bitmap/full_purge_lru/lazy_expire/clear_on_full "
                                    "settings");
    if (have.math_initial != want.math_initial || have.sweep_on_full != want.sweep_on_full)
        return PyUnicode_FromString("it was created with another math_initial or sweep_on_full");
    if (file_size != size)
        return PyUnicode_FromFormat("its size is %llu bytes, %llu expected", file_size, (unsigned long long)size);
    Py_RETURN_NONE;
}

static PyObject *mod_cold_upgrade_to(PyObject *m, PyObject *args) {
    /* cold_upgrade_to(header_bytes) -> the version to write over an older format's, or 0 */
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "y*:cold_upgrade_to", &view)) return NULL;
    uint32_t to = uwc_cold_upgrade_to(view.buf, (uint64_t)view.len);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(to);
}

static PyObject *mod_peek_header(PyObject *m, PyObject *args) {
    /* peek_header(buffer, file_size=len(buffer)): the buffer may hold just the header */
    Py_buffer view;
    unsigned long long file_size = 0;
    if (!PyArg_ParseTuple(args, "y*|K:peek_header", &view, &file_size)) return NULL;
    if (view.len < (Py_ssize_t)sizeof(uwc_header)) {
        PyBuffer_Release(&view);
        PyErr_SetString(ErrCorruptStore, "the region is smaller than a uwcache header");
        return NULL;
    }
    uwc_params p;
    char name[UWC_NAME_MAX + 1];
    const char *why = NULL;
    int rc = uwc_header_peek(view.buf, file_size ? (uint64_t)file_size : (uint64_t)view.len, &p, name, &why);
    int ready = rc == UWC_OK && ((const uwc_header *)view.buf)->state == UWC_STATE_READY;
    PyBuffer_Release(&view);
    if (rc) {
        PyErr_SetString(ErrCorruptStore, why ? why : "not a uwcache region");
        return NULL;
    }
    return Py_BuildValue("{sssKsKsKsKsKsIsIsLsKsO}", "name", name, "max_items", (unsigned long long)p.max_items,
                         "key_size", (unsigned long long)p.key_size, "block_size", (unsigned long long)p.block_size,
                         "blocks", (unsigned long long)p.blocks, "hash_size", (unsigned long long)p.hash_size,
                         "hash_algo", p.hash_algo, "options", p.options, "math_initial", (long long)p.math_initial,
                         "sweep_on_full", (unsigned long long)p.sweep_on_full, "ready", ready ? Py_True : Py_False);
}

static PyObject *mod_hash(PyObject *m, PyObject *args) {
    Py_buffer b;
    const char *algo = "djb33x";
    if (!PyArg_ParseTuple(args, "y*|s:hash", &b, &algo)) return NULL;
    uint32_t h;
    if (strcmp(algo, "djb33x") == 0) h = uwc_djb33x(b.buf, (uint64_t)b.len);
    else if (strcmp(algo, "murmur2") == 0) h = uwc_murmur2(b.buf, (uint64_t)b.len);
    else if (strcmp(algo, "wyhash") == 0) h = uwc_wyhash(b.buf, (uint64_t)b.len);
    else {
        PyBuffer_Release(&b);
        PyErr_SetString(PyExc_ValueError, "algorithm must be djb33x, murmur2 or wyhash");
        return NULL;
    }
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLong(h);
}

/* ---- huge pages for large regions (issue 16: the 1M-item get) ----
 * map_huge(reservation, fd, size) maps the first size bytes of fd (MAP_SHARED) over the
 * anonymous mapping `reservation` (at least size + 2 MiB, unused), at its first 2 MiB-aligned
 * address, then asks the kernel to back it with 2 MiB pages (MADV_COLLAPSE). A get in a
 * large cache then misses the TLB far less often. MADV_COLLAPSE works on tmpfs files even
 * where transparent_hugepage/shmem_enabled is "never"; where it is refused (older kernels,
 * disk files, no free huge page) the mapping simply stays on 4 KiB pages. Every process maps
 * aligned, so one that attaches later gets the already-collapsed pages with 2 MiB mappings.
 * With collapse false (an attacher) only the aligned mapping is made. Returns (offset of
 * the mapping in the reservation, whether the kernel collapsed it). */
#define UWCB_HUGE (2u << 20)
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
static PyObject *mod_map_huge(PyObject *m, PyObject *args) {
    Py_buffer res;
    int fd;
    unsigned long long size;
    int collapse = 1;
    if (!PyArg_ParseTuple(args, "w*iK|p:map_huge", &res, &fd, &size, &collapse)) return NULL;
    uintptr_t base = (uintptr_t)res.buf;
    uintptr_t off = (UWCB_HUGE - (base & (UWCB_HUGE - 1))) & (UWCB_HUGE - 1);
    long page = sysconf(_SC_PAGESIZE);
    if (size == 0 || size > (unsigned long long)res.len || off > (uintptr_t)res.len - size ||
        page <= 0 || base % (uintptr_t)page) {
        PyBuffer_Release(&res);
        PyErr_SetString(PyExc_ValueError, "map_huge: the reservation must be page-aligned and hold size + 2 MiB");
        return NULL;
    }
    void *want = (void *)(base + off);
    void *got = mmap(want, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
    PyBuffer_Release(&res);
    if (got == MAP_FAILED) return PyErr_SetFromErrno(PyExc_OSError);
    int collapsed = 0;
    if (collapse && size >= UWCB_HUGE) {
        Py_BEGIN_ALLOW_THREADS
        collapsed = madvise(want, (size_t)size, MADV_COLLAPSE) == 0;
        Py_END_ALLOW_THREADS
    }
    return Py_BuildValue("(KO)", (unsigned long long)off, collapsed ? Py_True : Py_False);
}

static PyMethodDef module_methods[] = {
    {"_resp_bulks", near_resp_bulks, METH_VARARGS, NULL},  /* near cache (issue 11) */
    {"region_size", mod_region_size, METH_O, "region_size(params) -> bytes the region needs"},
    {"region_layout", mod_region_layout, METH_O,
     "region_layout(params) -> {area: bytes}, in region order, summing to region_size(params)"},
    {"image_size", mod_image_size, METH_VARARGS,
     "image_size(max_items, key_size, block_size, blocks) -> bytes of a uWSGI raw image (dump, store body)"},
    {"region_problem", mod_region_problem, METH_VARARGS,
     "region_problem(header, file_size, params) -> why an existing region cannot be used with params, or None"},
    {"cold_upgrade_to", mod_cold_upgrade_to, METH_VARARGS,
     "cold_upgrade_to(header) -> the format an unused older region can be rewritten to, or 0"},
    {"peek_header", mod_peek_header, METH_VARARGS, "peek_header(buffer) -> dict of the region's stored parameters"},
    {"hash", mod_hash, METH_VARARGS, "hash(key, algo='djb33x') -> uWSGI's 32-bit hash of key"},
    {"map_huge", mod_map_huge, METH_VARARGS,
     "map_huge(reservation, fd, size, collapse=True) -> (offset, collapsed): map fd 2 MiB-aligned inside reservation and collapse it onto 2 MiB pages"},
    {NULL},
};

static struct PyModuleDef engine_module = {
    PyModuleDef_HEAD_INIT, "uwcache._engine", "uwcache's C engine binding (private).", -1, module_methods, NULL, NULL, NULL, NULL,
};

static PyObject *get_error(PyObject *errors, const char *name) {
    PyObject *e = PyObject_GetAttrString(errors, name);
    return e;
}

PyMODINIT_FUNC PyInit__engine(void) {
    PyObject *errors = PyImport_ImportModule("uwcache.errors");
    if (!errors) return NULL;
    ErrCache = get_error(errors, "CacheError");
    ErrKeyTooLong = get_error(errors, "KeyTooLong");
    ErrValueTooLarge = get_error(errors, "ValueTooLarge");
    ErrEmptyValue = get_error(errors, "EmptyValue");
    ErrCacheFull = get_error(errors, "CacheFull");
    ErrNotAnInteger = get_error(errors, "NotAnInteger");
    ErrRegionMismatch = get_error(errors, "RegionMismatch");
    ErrCorruptStore = get_error(errors, "CorruptStore");
    ErrCacheClosed = get_error(errors, "CacheClosed");
    Py_DECREF(errors);
    if (!ErrCache || !ErrKeyTooLong || !ErrValueTooLarge || !ErrEmptyValue || !ErrCacheFull || !ErrNotAnInteger ||
        !ErrRegionMismatch || !ErrCorruptStore || !ErrCacheClosed)
        return NULL;
    if (PyType_Ready(&CacheType) < 0) return NULL;
    PyObject *m = PyModule_Create(&engine_module);
    if (!m) return NULL;
    if (PyModule_AddFunctions(m, uwcb_compat_methods) < 0) return NULL;
    compat_registry = PyDict_New();
    if (!compat_registry) return NULL;
    Py_INCREF(Py_None);
    compat_remote = Py_None;
    Py_INCREF(&CacheType);
    if (PyModule_AddObject(m, "CacheBase", (PyObject *)&CacheType) < 0) return NULL;
    PyModule_AddIntConstant(m, "OPT_BITMAP", UWC_OPT_BITMAP);
    PyModule_AddIntConstant(m, "OPT_LRU", UWC_OPT_LRU);
    PyModule_AddIntConstant(m, "OPT_LAZY", UWC_OPT_LAZY);
    PyModule_AddIntConstant(m, "OPT_NO_EXPIRE", UWC_OPT_NO_EXPIRE);
    PyModule_AddIntConstant(m, "OPT_LASTMOD", UWC_OPT_LASTMOD);
    PyModule_AddIntConstant(m, "OPT_CLEAR_ON_FULL", UWC_OPT_CLEAR_ON_FULL);
    PyModule_AddIntConstant(m, "OPT_FULL_SILENT", UWC_OPT_FULL_SILENT);
    PyModule_AddIntConstant(m, "HASH_DJB33X", UWC_HASH_DJB33X);
    PyModule_AddIntConstant(m, "HASH_MURMUR2", UWC_HASH_MURMUR2);
    PyModule_AddIntConstant(m, "HASH_WYHASH", UWC_HASH_WYHASH);
    PyModule_AddIntConstant(m, "HEADER_SIZE", UWC_HEADER_SIZE);
    PyModule_AddIntConstant(m, "ITEM_HEADER_SIZE", UWC_ITEM_HEADER);
    PyObject *limits = Py_BuildValue("{s(KK)s(KK)s(KK)s(KK)s(KK)sK}",
                                     "max_items", UWC_MAX_ITEMS_MIN, UWC_MAX_ITEMS_MAX, "key_size", 1ull, UWC_KEY_SIZE_MAX,
                                     "block_size", 1ull, UWC_BLOCK_SIZE_MAX, "blocks", UWC_MAX_ITEMS_MIN, UWC_BLOCKS_MAX,
                                     "hash_size", 1ull, UWC_HASH_SIZE_MAX, "region_size", UWC_REGION_SIZE_MAX);
    if (!limits || PyModule_AddObject(m, "LIMITS", limits) < 0) { Py_XDECREF(limits); return NULL; }
    PyModule_AddIntConstant(m, "FORMAT_VERSION", UWC_FORMAT_VERSION);
    PyModule_AddIntConstant(m, "F_UPDATE", UWC_F_UPDATE);
    PyModule_AddIntConstant(m, "F_ABSEXPIRE", UWC_F_ABSEXPIRE);
    PyModule_AddIntConstant(m, "OP_SET", OP_SET);
    PyModule_AddIntConstant(m, "OP_DELETE", OP_DELETE);
    PyModule_AddIntConstant(m, "OP_CLEAR", OP_CLEAR);
    PyModule_AddIntConstant(m, "NET_COUNTERS", UWC_NET_COUNTERS);
    PyModule_AddIntConstant(m, "MODE_CREATE", UWCB_MODE_CREATE);
    PyModule_AddIntConstant(m, "MODE_ATTACH", UWCB_MODE_ATTACH);
    PyModule_AddIntConstant(m, "MODE_RECOVER", UWCB_MODE_RECOVER);
    pthread_atfork(NULL, NULL, after_fork_child);
    return m;
}
