/* envcrypt._gcmbatch: OpenSSL EVP AES-GCM / AES-256-SIV over many segments, GIL released.
 *
 * The one native kernel of envcrypt: the C2SP chunks of an object body (envcrypt/chunked.py)
 * and the cells of an encrypted column (envcrypt/columns/_engine.py) are both "many short
 * AEAD messages under one key", sealed or opened here in one call per run.
 *
 * Only the driving loop is here: every segment is one standard EVP AEAD operation of the
 * system OpenSSL (no AES, no GHASH of our own).  One cipher context per call, the key
 * set once.  Key derivation (HKDF) stays in Python (cryptography).
 *
 * Chunks (FORMAT.md, C2SP chunked encryption): chunk i of a run starting at chunk index
 * `first` is in[i * step_in, min((i + 1) * step_in, len(in))), its nonce base_nonce XOR
 * BE96(first + i), no associated data; sealed = ciphertext || tag(16).
 *
 * Cells: a run of cells [lo, hi) is described by int64 offsets into one source and
 * one destination buffer, and a uint8 validity mask (0: a null, skipped).  The layouts
 * are those of envcrypt/columns/_engine.py (its pure path gives the same bytes):
 *   GCM seal: dst = nonce(12) || ciphertext || tag(16), nonce = BE96(counter0 + i)
 *   salted GCM seal: dst = salt(16) || nonce(12) || ciphertext || tag(16), nonce = BE96(2 (row0 + i) + 1)
 *   SIV seal: dst = siv(16) || ciphertext
 * The open functions return -1, or the index of the first cell that failed.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>

#define NONCE 12
#define TAG 16
#define SALT 16

/* AES-GCM by key length (16, 24, 32 bytes: the known-answer tests use all three) */
static const EVP_CIPHER *gcm_cipher(Py_ssize_t keylen) {
    return keylen == 16 ? EVP_aes_128_gcm() : keylen == 24 ? EVP_aes_192_gcm() : EVP_aes_256_gcm();
}

typedef struct {
    Py_buffer key, salt, ad, src, src_off, valid, dst, dst_off;
    int nbuf;
} bufs_t;

static void release(bufs_t *b) {
    Py_buffer *all[8] = {&b->key, &b->ad, &b->src, &b->src_off, &b->valid, &b->dst, &b->dst_off, &b->salt};
    for (int i = 0; i < b->nbuf; i++) PyBuffer_Release(all[i]);
    b->nbuf = 0;
}

static int get(PyObject *o, Py_buffer *view, int writable, bufs_t *b) {
    if (PyObject_GetBuffer(o, view, writable ? (PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) : PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    b->nbuf++;
    return 0;
}

/* parse (key, [salt,] ad, src, src_off, valid, dst, dst_off[, counter0], lo, hi); a salted cell's span
 * starts with its salt (the caller's SALT bytes), so it is at least SALT + NONCE + TAG long */
static int parse(PyObject *args, int with_counter, int salted, bufs_t *b, unsigned long long *counter0,
                 Py_ssize_t *lo, Py_ssize_t *hi, size_t keylen) {
    PyObject *o[8];
    memset(b, 0, sizeof(*b));
    *counter0 = 0;
    int ok;
    if (salted && with_counter)
        ok = PyArg_ParseTuple(args, "OOOOOOOOKnn", &o[0], &o[7], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6], counter0,
                              lo, hi);
    else if (salted)
        ok = PyArg_ParseTuple(args, "OOOOOOOOnn", &o[0], &o[7], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6], lo, hi);
    else if (with_counter)
        ok = PyArg_ParseTuple(args, "OOOOOOOKnn", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6], counter0, lo, hi);
    else
        ok = PyArg_ParseTuple(args, "OOOOOOOnn", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6], lo, hi);
    if (!ok) return -1;
    /* the order here is that of release() */
    if (get(o[0], &b->key, 0, b) || get(o[1], &b->ad, 0, b) || get(o[2], &b->src, 0, b) ||
        get(o[3], &b->src_off, 0, b) || get(o[4], &b->valid, 0, b) || get(o[5], &b->dst, 1, b) ||
        get(o[6], &b->dst_off, 0, b) || (salted && get(o[7], &b->salt, 0, b))) {
        release(b);
        return -1;
    }
    Py_ssize_t n = b->valid.len;
    if ((keylen ? (size_t)b->key.len != keylen : (b->key.len != 16 && b->key.len != 24 && b->key.len != 32)) ||
        (salted && b->salt.len != SALT) || b->src_off.len != (n + 1) * 8 || b->dst_off.len != (n + 1) * 8 ||
        *lo < 0 || *hi > n || *lo > *hi) {
        release(b);
        PyErr_SetString(PyExc_ValueError, "bad key or salt length, offsets or cell range");
        return -1;
    }
    /* every span must lie inside its buffer: checked here, once, so the loop cannot overrun */
    const int64_t *so = (const int64_t *)b->src_off.buf, *dof = (const int64_t *)b->dst_off.buf;
    const unsigned char *v = (const unsigned char *)b->valid.buf;
    for (Py_ssize_t i = *lo; i < *hi; i++) {
        if (!v[i]) continue;
        if (so[i] < 0 || so[i + 1] < so[i] || so[i + 1] > b->src.len || dof[i] < 0 || dof[i + 1] < dof[i] ||
            dof[i + 1] > b->dst.len) {
            release(b);
            PyErr_SetString(PyExc_ValueError, "a cell span lies outside its buffer");
            return -1;
        }
    }
    return 0;
}

/* the tag of the message just finished (EVP_CIPHER_CTX_get_params: no ctrl translation per cell) */
static int get_tag(EVP_CIPHER_CTX *ctx, unsigned char *tag) {
    OSSL_PARAM p[2] = {OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, tag, TAG),
                       OSSL_PARAM_construct_end()};
    return EVP_CIPHER_CTX_get_params(ctx, p);
}

static int set_tag(EVP_CIPHER_CTX *ctx, unsigned char *tag) {
    OSSL_PARAM p[2] = {OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, tag, TAG),
                       OSSL_PARAM_construct_end()};
    return EVP_CIPHER_CTX_set_params(ctx, p);
}

/* one AES-GCM cell: out = nonce(12) || ciphertext(len) || tag(16), nonce = BE96(c) */
static int seal_one(EVP_CIPHER_CTX *ctx, const unsigned char *ad, int adl, const unsigned char *in, int len,
                    unsigned long long c, unsigned char *out) {
    int outl = 0;
    memset(out, 0, 4);
    for (int k = 0; k < 8; k++) out[4 + k] = (unsigned char)(c >> (56 - 8 * k));
    return EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, out) == 1 &&
           (!adl || EVP_EncryptUpdate(ctx, NULL, &outl, ad, adl) == 1) &&
           EVP_EncryptUpdate(ctx, out + NONCE, &outl, in, len) == 1 &&
           EVP_EncryptFinal_ex(ctx, out + NONCE + outl, &outl) == 1 && get_tag(ctx, out + NONCE + len) == 1;
}

/* open one AES-GCM cell in = nonce(12) || ciphertext(len) || tag(16) into out (len bytes) */
static int open_one(EVP_CIPHER_CTX *ctx, const unsigned char *ad, int adl, const unsigned char *in, int len,
                    unsigned char *out) {
    int outl = 0;
    unsigned char tag[TAG];
    memcpy(tag, in + NONCE + len, TAG);
    return EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, in) == 1 &&
           (!adl || EVP_DecryptUpdate(ctx, NULL, &outl, ad, adl) == 1) &&
           EVP_DecryptUpdate(ctx, out, &outl, in + NONCE, len) == 1 && set_tag(ctx, tag) == 1 &&
           EVP_DecryptFinal_ex(ctx, out + outl, &outl) == 1;
}

/* GCM seal of cells [lo, hi).  Unsalted: dst = nonce || ct || tag, nonce = BE96(counter0 + i).
 * Salted: dst = salt || nonce || ct || tag, nonce = BE96(2 * (counter0 + i) + 1) (counter0: the first row),
 * the layout the pure core makes from alternating salt slots and messages (_engine.seal_salted). */
static PyObject *gcm_seal_run(PyObject *args, int salted) {
    bufs_t b;
    unsigned long long c0;
    Py_ssize_t lo, hi, failed = -1;
    if (parse(args, 1, salted, &b, &c0, &lo, &hi, 0) < 0) return NULL;
    const unsigned char *src = b.src.buf, *ad = b.ad.buf, *v = b.valid.buf, *salt = b.salt.buf;
    unsigned char *dst = b.dst.buf;
    const int64_t *so = b.src_off.buf, *dof = b.dst_off.buf;
    int adl = (int)b.ad.len, ok = 1, pre = salted ? SALT : 0;
    Py_BEGIN_ALLOW_THREADS
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    ok = ctx && EVP_EncryptInit_ex(ctx, gcm_cipher(b.key.len), NULL, b.key.buf, NULL) == 1;
    for (Py_ssize_t i = lo; ok && i < hi; i++) {
        if (!v[i]) continue;
        unsigned char *out = dst + dof[i];
        int64_t len = so[i + 1] - so[i];
        unsigned long long c = salted ? 2 * (c0 + (unsigned long long)i) + 1 : c0 + (unsigned long long)i;
        if (len > INT_MAX - NONCE - TAG - SALT || dof[i + 1] - dof[i] != len + pre + NONCE + TAG) {
            failed = i;
            break;
        }
        if (salted) memcpy(out, salt, SALT);
        if (!seal_one(ctx, ad, adl, src + so[i], (int)len, c, out + pre)) {
            failed = i;
            break;
        }
    }
    if (!ok) failed = lo;
    EVP_CIPHER_CTX_free(ctx);
    Py_END_ALLOW_THREADS
    release(&b);
    return PyLong_FromSsize_t(failed);
}

/* GCM open of cells [lo, hi); salted cells must start with the given salt (else the cell fails) */
static PyObject *gcm_open_run(PyObject *args, int salted) {
    bufs_t b;
    unsigned long long c0;
    Py_ssize_t lo, hi, failed = -1;
    if (parse(args, 0, salted, &b, &c0, &lo, &hi, 0) < 0) return NULL;
    const unsigned char *src = b.src.buf, *ad = b.ad.buf, *v = b.valid.buf, *salt = b.salt.buf;
    unsigned char *dst = b.dst.buf;
    const int64_t *so = b.src_off.buf, *dof = b.dst_off.buf;
    int adl = (int)b.ad.len, ok = 1, pre = salted ? SALT : 0;
    Py_BEGIN_ALLOW_THREADS
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    ok = ctx && EVP_DecryptInit_ex(ctx, gcm_cipher(b.key.len), NULL, b.key.buf, NULL) == 1;
    for (Py_ssize_t i = lo; ok && i < hi; i++) {
        if (!v[i]) continue;
        const unsigned char *in = src + so[i];
        int64_t total = so[i + 1] - so[i], len = total - pre - NONCE - TAG;
        if (len < 0 || len > INT_MAX || dof[i + 1] - dof[i] < len || (salted && memcmp(in, salt, SALT) != 0) ||
            !open_one(ctx, ad, adl, in + pre, (int)len, dst + dof[i])) {
            failed = i;
            break;
        }
    }
    if (!ok) failed = lo;
    EVP_CIPHER_CTX_free(ctx);
    Py_END_ALLOW_THREADS
    release(&b);
    return PyLong_FromSsize_t(failed);
}

static PyObject *gcm_seal(PyObject *self, PyObject *args) { return gcm_seal_run(args, 0); }
static PyObject *gcm_open(PyObject *self, PyObject *args) { return gcm_open_run(args, 0); }
static PyObject *gcm_seal_salted(PyObject *self, PyObject *args) { return gcm_seal_run(args, 1); }
static PyObject *gcm_open_salted(PyObject *self, PyObject *args) { return gcm_open_run(args, 1); }

/* -1, or the first valid cell of [lo, hi) that does not start with salt (every valid cell is at least
 * SALT bytes long: the caller checked) */
static PyObject *salt_mismatch(PyObject *self, PyObject *args) {
    PyObject *o[4];
    Py_buffer bs, bsrc, boff, bv;
    Py_ssize_t found = -1;
    if (!PyArg_ParseTuple(args, "OOOO", &o[0], &o[1], &o[2], &o[3])) return NULL;
    if (PyObject_GetBuffer(o[0], &bs, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    if (PyObject_GetBuffer(o[1], &bsrc, PyBUF_C_CONTIGUOUS) < 0) { PyBuffer_Release(&bs); return NULL; }
    if (PyObject_GetBuffer(o[2], &boff, PyBUF_C_CONTIGUOUS) < 0) {
        PyBuffer_Release(&bs); PyBuffer_Release(&bsrc); return NULL;
    }
    if (PyObject_GetBuffer(o[3], &bv, PyBUF_C_CONTIGUOUS) < 0) {
        PyBuffer_Release(&bs); PyBuffer_Release(&bsrc); PyBuffer_Release(&boff); return NULL;
    }
    Py_ssize_t n = bv.len;
    int bad = bs.len != SALT || boff.len != (n + 1) * 8;
    const int64_t *so = boff.buf;
    const unsigned char *v = bv.buf, *src = bsrc.buf, *salt = bs.buf;
    for (Py_ssize_t i = 0; !bad && i < n; i++)
        if (v[i] && (so[i] < 0 || so[i] > bsrc.len - SALT)) bad = 1;
    if (!bad) {
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < n; i++)
            if (v[i] && memcmp(src + so[i], salt, SALT) != 0) { found = i; break; }
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&bs); PyBuffer_Release(&bsrc); PyBuffer_Release(&boff); PyBuffer_Release(&bv);
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "bad salt length, offsets or cell span");
        return NULL;
    }
    return PyLong_FromSsize_t(found);
}

/* AES-256-SIV (RFC 5297) with one associated-data string; OpenSSL 3.0's "AES-256-SIV".
 * OpenSSL 3.0 resets a SIV context only when the key is given again (slow: a MAC fetch per cell),
 * so each cell starts from a copy of one keyed template context instead. */
static PyObject *siv_run(PyObject *args, int enc) {
    bufs_t b;
    unsigned long long c0;
    Py_ssize_t lo, hi, failed = -1;
    if (parse(args, 0, 0, &b, &c0, &lo, &hi, 64) < 0) return NULL;
    const unsigned char *src = b.src.buf, *ad = b.ad.buf, *v = b.valid.buf;
    unsigned char *dst = b.dst.buf;
    const int64_t *so = b.src_off.buf, *dof = b.dst_off.buf;
    int adl = (int)b.ad.len, ok;
    Py_BEGIN_ALLOW_THREADS
    EVP_CIPHER *siv = EVP_CIPHER_fetch(NULL, "AES-256-SIV", NULL);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new(), *keyed = EVP_CIPHER_CTX_new();
    ok = siv && ctx && keyed && EVP_CipherInit_ex(keyed, siv, NULL, b.key.buf, NULL, enc) == 1;
    for (Py_ssize_t i = lo; ok && i < hi; i++) {
        if (!v[i]) continue;
        int64_t total = so[i + 1] - so[i];
        int outl = 0;
        if (enc) {
            int len = (int)total;
            unsigned char *out = dst + dof[i];
            if (dof[i + 1] - dof[i] != total + TAG ||
                EVP_CIPHER_CTX_copy(ctx, keyed) != 1 ||
                EVP_CipherUpdate(ctx, NULL, &outl, ad, adl) != 1 ||
                EVP_CipherUpdate(ctx, out + TAG, &outl, src + so[i], len) != 1 ||
                EVP_CipherFinal_ex(ctx, out + TAG + outl, &outl) != 1 ||
                EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, TAG, out) != 1) {
                failed = i;
                break;
            }
        } else {
            const unsigned char *in = src + so[i];
            int len = (int)(total - TAG);
            unsigned char tag[TAG];
            if (total < TAG || dof[i + 1] - dof[i] < len) { failed = i; break; }
            memcpy(tag, in, TAG);
            if (EVP_CIPHER_CTX_copy(ctx, keyed) != 1 ||
                EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, TAG, tag) != 1 ||
                EVP_CipherUpdate(ctx, NULL, &outl, ad, adl) != 1 ||
                EVP_CipherUpdate(ctx, dst + dof[i], &outl, in + TAG, len) != 1 ||
                EVP_CipherFinal_ex(ctx, dst + dof[i] + outl, &outl) != 1) {
                failed = i;
                break;
            }
        }
    }
    if (!ok) failed = lo;
    EVP_CIPHER_CTX_free(ctx);
    EVP_CIPHER_CTX_free(keyed);
    EVP_CIPHER_free(siv);
    Py_END_ALLOW_THREADS
    release(&b);
    return PyLong_FromSsize_t(failed);
}

static PyObject *siv_seal(PyObject *self, PyObject *args) { return siv_run(args, 1); }
static PyObject *siv_open(PyObject *self, PyObject *args) { return siv_run(args, 0); }

/* ------------------------------------------------------------------ C2SP chunks */

#define CHUNK 16384
#define SEALED (CHUNK + TAG)
/* C2SP: at most 2^38 chunks per message (the Python side refuses more; here only no overflow) */
#define MAX_FIRST (1ULL << 62)

/* chunk_seal / chunk_open (key, base_nonce, first, src, dst, count, lo, hi) -> -1 or the run index of
 * the first chunk that failed.  The run has `count` chunks: every one but the last is whole, the last
 * is what remains of src (empty allowed when sealing; at least a tag when opening).  Only chunks
 * [lo, hi) are processed, so that two threads can share one run. */
/* the chunks [lo, hi) of a run: -1, or the run index of the first that failed (ctx has the key) */
typedef struct {
    const unsigned char *in0, *base_nonce;
    unsigned char *out0;
    unsigned long long first;
    Py_ssize_t count, step_in, step_out, last_in, last_out;
    int enc;
} chunks_t;

static Py_ssize_t chunk_loop(EVP_CIPHER_CTX *ctx, const chunks_t *r, Py_ssize_t lo, Py_ssize_t hi) {
    unsigned char iv[NONCE], tag[TAG];
    for (Py_ssize_t i = lo; i < hi; i++) {
        unsigned long long c = r->first + (unsigned long long)i;
        const unsigned char *in = r->in0 + i * r->step_in;
        unsigned char *out = r->out0 + i * r->step_out;
        int len = (int)(i == r->count - 1 ? (r->enc ? r->last_in : r->last_out) : CHUNK), outl = 0, ok;
        memcpy(iv, r->base_nonce, NONCE);
        for (int k = 0; k < 8; k++) iv[4 + k] ^= (unsigned char)(c >> (56 - 8 * k));
        if (r->enc) {
            ok = EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, iv) == 1 &&
                 EVP_EncryptUpdate(ctx, out, &outl, in, len) == 1 &&
                 EVP_EncryptFinal_ex(ctx, out + outl, &outl) == 1 && get_tag(ctx, out + len) == 1;
        } else {
            memcpy(tag, in + len, TAG);
            ok = EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, iv) == 1 &&
                 EVP_DecryptUpdate(ctx, out, &outl, in, len) == 1 && set_tag(ctx, tag) == 1 &&
                 EVP_DecryptFinal_ex(ctx, out + outl, &outl) == 1;
        }
        if (!ok) return i;
    }
    return -1;
}

/* A shared run's pieces are claimed from one counter (int64 at the start of a writable buffer)
 * by both threads: the calling thread through claim() between its own calls, the helper inside
 * chunk_*_shared, which so never needs the GIL between pieces.  A claim takes a quarter of what
 * is left, at most `piece` and at least a quarter of it, so the thread that finishes first waits
 * for little work of the other's. */
#if defined(__GNUC__) || defined(__clang__)
#define HAVE_SHARED 1
static int claim_range(long long *counter, long long count, long long piece, long long *lo, long long *hi) {
    long long smallest = piece / 4 > 0 ? piece / 4 : 1;
    long long cur = __atomic_load_n(counter, __ATOMIC_RELAXED);
    for (;;) {
        if (cur >= count) return 0;
        long long left = count - cur, take = left / 4;
        if (take > piece) take = piece;
        if (take < smallest) take = smallest;
        if (take > left) take = left;
        if (__atomic_compare_exchange_n(counter, &cur, cur + take, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
            *lo = cur;
            *hi = cur + take;
            return 1;
        }
    }
}

static int get_counter(PyObject *o, Py_buffer *view) {
    if (PyObject_GetBuffer(o, view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) return -1;
    if (view->len < 8 || ((uintptr_t)view->buf % 8) != 0) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "the claim counter must be an aligned writable buffer of 8 bytes");
        return -1;
    }
    return 0;
}

/* claim(counter, count, piece) -> (lo, hi), or None when nothing is left */
static PyObject *claim(PyObject *self, PyObject *args) {
    PyObject *co;
    long long count, piece, lo, hi;
    Py_buffer counter;
    if (!PyArg_ParseTuple(args, "OLL", &co, &count, &piece)) return NULL;
    if (piece < 1 || count < 0) {
        PyErr_SetString(PyExc_ValueError, "bad count or piece");
        return NULL;
    }
    if (get_counter(co, &counter) < 0) return NULL;
    int got = claim_range((long long *)counter.buf, count, piece, &lo, &hi);
    PyBuffer_Release(&counter);
    if (!got) Py_RETURN_NONE;
    return Py_BuildValue("(LL)", lo, hi);
}
#endif

/* chunk_seal / chunk_open (key, base_nonce, first, src, dst, count, lo, hi) -> -1 or the run index of
 * the first chunk that failed.  The run has `count` chunks: every one but the last is whole, the last
 * is what remains of src (empty allowed when sealing; at least a tag when opening).  Only chunks
 * [lo, hi) are processed, so that two threads can share one run.
 * chunk_seal_shared / chunk_open_shared (key, base_nonce, first, src, dst, count, counter, piece):
 * the chunks of pieces claimed from `counter` until none is left; -1 or the first failed index. */
static PyObject *chunk_run(PyObject *args, int enc, int shared) {
    PyObject *ko, *no, *so, *dobj, *co = NULL;
    unsigned long long first;
    Py_ssize_t count, lo = 0, hi = 0, failed = -1;
    long long piece = 0;
    Py_buffer key, nonce, src, dst, counter;
    int ok = shared ? PyArg_ParseTuple(args, "OOKOOnOL", &ko, &no, &first, &so, &dobj, &count, &co, &piece)
                    : PyArg_ParseTuple(args, "OOKOOnnn", &ko, &no, &first, &so, &dobj, &count, &lo, &hi);
    if (!ok) return NULL;
    if (shared) {
        if (piece < 1) {
            PyErr_SetString(PyExc_ValueError, "bad piece");
            return NULL;
        }
#ifdef HAVE_SHARED
        if (get_counter(co, &counter) < 0) return NULL;
#else
        PyErr_SetString(PyExc_NotImplementedError, "shared runs need GCC atomics");
        return NULL;
#endif
        hi = count;
    }
    if (PyObject_GetBuffer(ko, &key, PyBUF_C_CONTIGUOUS) < 0) goto fail_counter;
    if (PyObject_GetBuffer(no, &nonce, PyBUF_C_CONTIGUOUS) < 0) {
        PyBuffer_Release(&key);
        goto fail_counter;
    }
    if (PyObject_GetBuffer(so, &src, PyBUF_C_CONTIGUOUS) < 0) {
        PyBuffer_Release(&key);
        PyBuffer_Release(&nonce);
        goto fail_counter;
    }
    if (PyObject_GetBuffer(dobj, &dst, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
        PyBuffer_Release(&key);
        PyBuffer_Release(&nonce);
        PyBuffer_Release(&src);
        goto fail_counter;
    }
    chunks_t r;
    r.enc = enc;
    r.first = first;
    r.count = count;
    r.step_in = enc ? CHUNK : SEALED;
    r.step_out = enc ? SEALED : CHUNK;
    /* the last chunk's length; every span is checked here, once, so the loop cannot overrun */
    r.last_in = count > 0 ? src.len - (count - 1) * r.step_in : 0;
    r.last_out = enc ? r.last_in + TAG : r.last_in - TAG;
    int bad = (key.len != 16 && key.len != 24 && key.len != 32) || nonce.len != NONCE || count < 0 ||
              count > PY_SSIZE_T_MAX / SEALED - 1 || first > MAX_FIRST || lo < 0 || lo > hi || hi > count;
    if (!bad && count > 0)
        bad = r.last_in < 0 || r.last_in > r.step_in || r.last_out < 0 ||
              dst.len < (count - 1) * r.step_out + r.last_out;
    if (bad) {
        PyBuffer_Release(&key);
        PyBuffer_Release(&nonce);
        PyBuffer_Release(&src);
        PyBuffer_Release(&dst);
        PyErr_SetString(PyExc_ValueError, "bad key or nonce length, chunk count, range or buffer sizes");
        goto fail_counter;
    }
    r.in0 = src.buf;
    r.out0 = dst.buf;
    r.base_nonce = nonce.buf;
    Py_BEGIN_ALLOW_THREADS
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int keyed = ctx && EVP_CipherInit_ex(ctx, gcm_cipher(key.len), NULL, key.buf, NULL, enc) == 1;
    if (!keyed) {
        failed = lo; /* no context, or the key could not be set */
    } else if (!shared) {
        failed = chunk_loop(ctx, &r, lo, hi);
    }
#ifdef HAVE_SHARED
    else {
        long long a, b;
        while (claim_range((long long *)counter.buf, count, piece, &a, &b)) {
            Py_ssize_t bad_at = chunk_loop(ctx, &r, (Py_ssize_t)a, (Py_ssize_t)b);
            if (bad_at >= 0 && (failed < 0 || bad_at < failed)) failed = bad_at;
        }
    }
#endif
    EVP_CIPHER_CTX_free(ctx);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&key);
    PyBuffer_Release(&nonce);
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
#ifdef HAVE_SHARED
    if (shared) PyBuffer_Release(&counter);
#endif
    return PyLong_FromSsize_t(failed);
fail_counter:
#ifdef HAVE_SHARED
    if (shared) PyBuffer_Release(&counter);
#endif
    return NULL;
}

static PyObject *chunk_seal(PyObject *self, PyObject *args) { return chunk_run(args, 1, 0); }
static PyObject *chunk_open(PyObject *self, PyObject *args) { return chunk_run(args, 0, 0); }
#ifdef HAVE_SHARED
static PyObject *chunk_seal_shared(PyObject *self, PyObject *args) { return chunk_run(args, 1, 1); }
static PyObject *chunk_open_shared(PyObject *self, PyObject *args) { return chunk_run(args, 0, 1); }
#endif

static PyObject *openssl_version(PyObject *self, PyObject *noargs) {
    return PyUnicode_FromString(OpenSSL_version(OPENSSL_VERSION));
}

static PyMethodDef methods[] = {
    {"gcm_seal", gcm_seal, METH_VARARGS, "seal cells [lo, hi) with AES-256-GCM; -1 or a failed index"},
    {"gcm_open", gcm_open, METH_VARARGS, "open cells [lo, hi) with AES-256-GCM; -1 or the first failed index"},
    {"siv_seal", siv_seal, METH_VARARGS, "seal cells [lo, hi) with AES-256-SIV; -1 or a failed index"},
    {"siv_open", siv_open, METH_VARARGS, "open cells [lo, hi) with AES-256-SIV; -1 or the first failed index"},
    {"gcm_seal_salted", gcm_seal_salted, METH_VARARGS,
     "seal cells [lo, hi) as salt || nonce || ct || tag, nonce 2 * (row0 + i) + 1; -1 or a failed index"},
    {"gcm_open_salted", gcm_open_salted, METH_VARARGS,
     "open salted cells [lo, hi) that start with salt; -1 or the first failed index"},
    {"salt_mismatch", salt_mismatch, METH_VARARGS, "-1 or the first valid cell not starting with salt"},
    {"chunk_seal", chunk_seal, METH_VARARGS,
     "seal C2SP chunks [lo, hi) of a run of count chunks starting at chunk index first; -1 or a failed index"},
    {"chunk_open", chunk_open, METH_VARARGS,
     "open C2SP chunks [lo, hi) of a run of count sealed chunks; -1 or the first failed index"},
#ifdef HAVE_SHARED
    {"chunk_seal_shared", chunk_seal_shared, METH_VARARGS,
     "seal the chunks of pieces claimed from counter until none is left; -1 or the first failed index"},
    {"chunk_open_shared", chunk_open_shared, METH_VARARGS,
     "open the chunks of pieces claimed from counter until none is left; -1 or the first failed index"},
    {"claim", claim, METH_VARARGS, "claim the next piece of a shared run: (lo, hi), or None when none is left"},
#endif
    {"openssl_version", openssl_version, METH_NOARGS, "the OpenSSL this module runs with"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_gcmbatch",
                                    "OpenSSL EVP AEAD over many chunks or cells", -1, methods};

PyMODINIT_FUNC PyInit__gcmbatch(void) { return PyModule_Create(&module); }
