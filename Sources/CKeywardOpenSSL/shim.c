/* PKCS#1 "RSA PUBLIC KEY" PEMs need the RSA-level reader, deprecated but kept in OpenSSL 3. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include "CKeywardOpenSSL.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/bio.h>
#include <limits.h>
#include <pthread.h>
#include <openssl/sha.h>
#include <string.h>
#include <errno.h>
#ifdef __linux__
#include <sys/random.h>
#endif

/* glibc's explicit_bzero is memset plus a compiler barrier: as safe as OPENSSL_cleanse and far
   faster on large buffers, which matters because stream buffers are wiped on every drain. */
void kw_cleanse(void *ptr, size_t len) { if (ptr && len) explicit_bzero(ptr, len); }

/* The kernel's CSPRNG, straight: RAND_bytes takes locks, checks for a fork (a getpid call) and
   walks its DRBG chain for each message id. In the server's profile it was 3.5 us a call among
   the request path's cold caches; sealing an exchange's two records fell 1.5 us without it. */
int kw_random(uint8_t *out, size_t len) {
#ifdef __linux__
    while (len > 0) {
        ssize_t n = getrandom(out, len, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            return 0;
        }
        out += n;
        len -= (size_t)n;
    }
    return 1;
#else
    if (len > INT_MAX) return 0;
    return RAND_bytes(out, (int)len) == 1;
#endif
}

struct kw_gcm { EVP_CIPHER_CTX *ctx; int encrypt; size_t key_len; };

/* Fetched once: OpenSSL 3 looks an implementation up on every init from the legacy EVP_aes_*_gcm()
   handles, which cost more than the key schedule of a small record. */
static const EVP_CIPHER *kw_gcm_cipher(size_t key_len) {
    static EVP_CIPHER *cached[3];
    int i = key_len == 16 ? 0 : key_len == 24 ? 1 : key_len == 32 ? 2 : -1;
    if (i < 0) return NULL;
    if (!cached[i]) {
        static const char *names[3] = {"AES-128-GCM", "AES-192-GCM", "AES-256-GCM"};
        EVP_CIPHER *c = EVP_CIPHER_fetch(NULL, names[i], NULL);
        if (!c) return NULL;
        if (!__sync_bool_compare_and_swap(&cached[i], NULL, c)) EVP_CIPHER_free(c);
    }
    return cached[i];
}

/* Contexts are kept for reuse: every record has a key of its own, and a new EVP context (its
   provider state, several allocations) costs more than the key schedule. A context returns to the
   pool keyed with zeros, so no key schedule outlives its message. */
#define KW_GCM_POOL 16
static kw_gcm *gcm_pool[3][KW_GCM_POOL];
static int gcm_pool_count[3];
static pthread_mutex_t gcm_pool_lock = PTHREAD_MUTEX_INITIALIZER;
static const uint8_t zero_key[32];

static int gcm_pool_index(size_t key_len) { return key_len == 16 ? 0 : key_len == 24 ? 1 : 2; }

kw_gcm *kw_gcm_new(const uint8_t *key, size_t key_len, int encrypt) {
    const EVP_CIPHER *cipher = kw_gcm_cipher(key_len);
    if (!cipher) return NULL;
    int i = gcm_pool_index(key_len);
    kw_gcm *g = NULL;
    pthread_mutex_lock(&gcm_pool_lock);
    if (gcm_pool_count[i] > 0) g = gcm_pool[i][--gcm_pool_count[i]];
    pthread_mutex_unlock(&gcm_pool_lock);
    if (g) {
        g->encrypt = encrypt;
        if (EVP_CipherInit_ex(g->ctx, NULL, NULL, key, NULL, encrypt) == 1) return g;
        EVP_CIPHER_CTX_free(g->ctx);
        OPENSSL_free(g);
        return NULL;
    }
    g = OPENSSL_zalloc(sizeof(*g));
    if (!g) return NULL;
    g->ctx = EVP_CIPHER_CTX_new();
    g->encrypt = encrypt;
    g->key_len = key_len;
    if (!g->ctx || EVP_CipherInit_ex(g->ctx, cipher, NULL, key, NULL, encrypt) != 1) {
        EVP_CIPHER_CTX_free(g->ctx);
        OPENSSL_free(g);
        return NULL;
    }
    return g;
}

void kw_gcm_free(kw_gcm *g) {
    if (!g) return;
    int i = gcm_pool_index(g->key_len);
    /* Overwrite the key schedule before the context waits in the pool. */
    if (EVP_CipherInit_ex(g->ctx, NULL, NULL, zero_key, NULL, 1) == 1) {
        pthread_mutex_lock(&gcm_pool_lock);
        int kept = gcm_pool_count[i] < KW_GCM_POOL;
        if (kept) gcm_pool[i][gcm_pool_count[i]++] = g;
        pthread_mutex_unlock(&gcm_pool_lock);
        if (kept) return;
    }
    EVP_CIPHER_CTX_free(g->ctx); /* cleanses the key schedule */
    OPENSSL_free(g);
}

/* EVP takes int lengths; frames are at most 2^32-1 bytes, so feed in chunks below INT_MAX. */
static int gcm_update(EVP_CIPHER_CTX *ctx, uint8_t *out, const uint8_t *in, size_t len) {
    const size_t step = (size_t)1 << 30;
    while (len > 0) {
        int n = (int)(len < step ? len : step), outl = 0;
        if (EVP_CipherUpdate(ctx, out, &outl, in, n) != 1 || outl != n) return 0;
        in += n; out += n; len -= (size_t)n;
    }
    return 1;
}

static int gcm_begin(kw_gcm *g, const uint8_t *iv, const uint8_t *aad, size_t aad_len) {
    if (EVP_CipherInit_ex(g->ctx, NULL, NULL, NULL, iv, g->encrypt) != 1) return 0;
    if (aad_len > INT_MAX) return 0;
    if (aad_len > 0) {
        int outl = 0;
        if (EVP_CipherUpdate(g->ctx, NULL, &outl, aad, (int)aad_len) != 1) return 0;
    }
    return 1;
}

int kw_gcm_seal(kw_gcm *g, const uint8_t *iv, const uint8_t *aad, size_t aad_len,
                const uint8_t *in, size_t len, uint8_t *out, uint8_t *tag) {
    if (!g || !g->encrypt) return 0;
    if (!gcm_begin(g, iv, aad, aad_len)) return 0;
    if (!gcm_update(g->ctx, out, in, len)) return 0;
    int outl = 0;
    if (EVP_CipherFinal_ex(g->ctx, out + len, &outl) != 1) return 0;
    return EVP_CIPHER_CTX_ctrl(g->ctx, EVP_CTRL_GCM_GET_TAG, 16, tag) == 1;
}

int kw_gcm_open(kw_gcm *g, const uint8_t *iv, const uint8_t *aad, size_t aad_len,
                const uint8_t *in, size_t len, uint8_t *out, const uint8_t *tag) {
    if (!g || g->encrypt) return -1;
    if (!gcm_begin(g, iv, aad, aad_len)) return -1;
    if (!gcm_update(g->ctx, out, in, len)) return -1;
    if (EVP_CIPHER_CTX_ctrl(g->ctx, EVP_CTRL_GCM_SET_TAG, 16, (void *)tag) != 1) return -1;
    int outl = 0;
    return EVP_CipherFinal_ex(g->ctx, out + len, &outl) == 1 ? 1 : 0;
}

struct kw_rsa { EVP_PKEY *pkey; };

kw_rsa *kw_rsa_from_pem(const uint8_t *pem, size_t len, int *is_private) {
    if (len > INT_MAX) return NULL;
    EVP_PKEY *pkey = NULL;
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    if (!bio) return NULL;
    /* A NULL password callback with an empty passphrase refuses encrypted PEMs instead of prompting. */
    pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, (void *)"");
    *is_private = pkey != NULL;
    if (!pkey) {
        (void)BIO_reset(bio);
        pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    }
    if (!pkey) {
        (void)BIO_reset(bio);
        RSA *rsa = PEM_read_bio_RSAPublicKey(bio, NULL, NULL, NULL);
        if (rsa) {
            pkey = EVP_PKEY_new();
            if (!pkey || EVP_PKEY_assign_RSA(pkey, rsa) != 1) { RSA_free(rsa); EVP_PKEY_free(pkey); pkey = NULL; }
        }
    }
    BIO_free(bio);
    if (!pkey) return NULL;
    if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_RSA) { EVP_PKEY_free(pkey); return NULL; }
    kw_rsa *k = OPENSSL_zalloc(sizeof(*k));
    if (!k) { EVP_PKEY_free(pkey); return NULL; }
    k->pkey = pkey;
    return k;
}

void kw_rsa_free(kw_rsa *k) {
    if (!k) return;
    EVP_PKEY_free(k->pkey);
    OPENSSL_free(k);
}

size_t kw_rsa_size(const kw_rsa *k) { return (size_t)EVP_PKEY_get_size(k->pkey); }

static int rsa_configure(EVP_PKEY_CTX *ctx, int padding) {
    const EVP_MD *md = NULL;
    switch (padding) {
    case KW_RSA_PKCS1: return EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) > 0;
    case KW_RSA_OAEP_SHA1: md = EVP_sha1(); break;
    case KW_RSA_OAEP_SHA256: md = EVP_sha256(); break;
    case KW_RSA_OAEP_SHA384: md = EVP_sha384(); break;
    case KW_RSA_OAEP_SHA512: md = EVP_sha512(); break;
    default: return 0;
    }
    /* The ESDK's raw RSA keyring uses MGF1 with the same hash as OAEP, and no label. */
    return EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) > 0
        && EVP_PKEY_CTX_set_rsa_oaep_md(ctx, md) > 0
        && EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, md) > 0;
}

static int rsa_crypt(const kw_rsa *k, int padding, int encrypt, const uint8_t *in, size_t in_len,
                     uint8_t *out, size_t *out_len) {
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(k->pkey, NULL);
    if (!ctx) return 0;
    int ok = (encrypt ? EVP_PKEY_encrypt_init(ctx) : EVP_PKEY_decrypt_init(ctx)) > 0
        && rsa_configure(ctx, padding);
    if (ok) {
        size_t cap = kw_rsa_size(k);
        ok = (encrypt ? EVP_PKEY_encrypt(ctx, out, &cap, in, in_len)
                      : EVP_PKEY_decrypt(ctx, out, &cap, in, in_len)) > 0;
        *out_len = ok ? cap : 0;
    }
    EVP_PKEY_CTX_free(ctx);
    return ok;
}

int kw_rsa_encrypt(const kw_rsa *k, int padding, const uint8_t *in, size_t in_len, uint8_t *out, size_t *out_len) {
    return rsa_crypt(k, padding, 1, in, in_len, out, out_len);
}

int kw_rsa_decrypt(const kw_rsa *k, int padding, const uint8_t *in, size_t in_len, uint8_t *out, size_t *out_len) {
    return rsa_crypt(k, padding, 0, in, in_len, out, out_len);
}

struct kw_digest { EVP_MD_CTX *ctx; };

kw_digest *kw_digest_new(int bits) {
    const EVP_MD *md = bits == 256 ? EVP_sha256() : bits == 384 ? EVP_sha384() : NULL;
    if (!md) return NULL;
    kw_digest *d = OPENSSL_zalloc(sizeof(*d));
    if (!d) return NULL;
    d->ctx = EVP_MD_CTX_new();
    if (!d->ctx || EVP_DigestInit_ex(d->ctx, md, NULL) != 1) { kw_digest_free(d); return NULL; }
    return d;
}

int kw_digest_update(kw_digest *d, const void *data, size_t len) { return EVP_DigestUpdate(d->ctx, data, len) == 1; }

int kw_digest_final(kw_digest *d, uint8_t *out) {
    unsigned int n = 0;
    return EVP_DigestFinal_ex(d->ctx, out, &n) == 1;
}

void kw_digest_free(kw_digest *d) {
    if (!d) return;
    EVP_MD_CTX_free(d->ctx);
    OPENSSL_free(d);
}

/* HMAC by its definition over libcrypto's SHA-512 (the same vectorised code the EVP layer calls),
   without the EVP contexts it allocates twice per digest: the HKDF of every record (three HMACs)
   is on the gateway's hot path. Keys and data here are small (HKDF of a data key). */
int kw_hmac_sha512(const uint8_t *key, size_t key_len, const uint8_t *data, size_t data_len, uint8_t *out) {
    if (key_len > 128) return 0;
    uint8_t pad[128], inner[64];
    SHA512_CTX c;
    memset(pad, 0, sizeof(pad));
    memcpy(pad, key, key_len);
    for (int i = 0; i < 128; i++) pad[i] ^= 0x36;
    int ok = SHA512_Init(&c) && SHA512_Update(&c, pad, 128) && SHA512_Update(&c, data, data_len) && SHA512_Final(inner, &c);
    for (int i = 0; i < 128; i++) pad[i] ^= 0x36 ^ 0x5c;
    ok = ok && SHA512_Init(&c) && SHA512_Update(&c, pad, 128) && SHA512_Update(&c, inner, 64) && SHA512_Final(out, &c);
    OPENSSL_cleanse(pad, sizeof(pad));
    OPENSSL_cleanse(inner, sizeof(inner));
    OPENSSL_cleanse(&c, sizeof(c));
    return ok;
}
