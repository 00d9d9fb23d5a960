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
#include <string.h>

/* glibc's explicit_bzero is memset plus a compiler barrier: as safe as OPENSSL_cleanse and far
   faster on large buffers, which matters because stream buffers are wiped on every drain. */
void kw_cleanse(void *ptr, size_t len) { if (ptr && len) explicit_bzero(ptr, len); }

int kw_random(uint8_t *out, size_t len) {
    if (len > INT_MAX) return 0;
    return RAND_bytes(out, (int)len) == 1;
}

struct kw_gcm { EVP_CIPHER_CTX *ctx; int encrypt; };

kw_gcm *kw_gcm_new(const uint8_t *key, size_t key_len, int encrypt) {
    const EVP_CIPHER *cipher;
    switch (key_len) {
    case 16: cipher = EVP_aes_128_gcm(); break;
    case 24: cipher = EVP_aes_192_gcm(); break;
    case 32: cipher = EVP_aes_256_gcm(); break;
    default: return NULL;
    }
    kw_gcm *g = OPENSSL_zalloc(sizeof(*g));
    if (!g) return NULL;
    g->ctx = EVP_CIPHER_CTX_new();
    g->encrypt = encrypt;
    if (!g->ctx || EVP_CipherInit_ex(g->ctx, cipher, NULL, key, NULL, encrypt) != 1) {
        kw_gcm_free(g);
        return NULL;
    }
    return g;
}

void kw_gcm_free(kw_gcm *g) {
    if (!g) return;
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

// HMAC by its definition over the one-shot EVP_Digest, with SHA-512 fetched once: the HKDF of
// every record (three HMACs) is on the gateway's hot path, and OpenSSL's SHA-512 uses the CPU's
// vector units where the portable one does not.
int kw_hmac_sha512(const uint8_t *key, size_t key_len, const uint8_t *data, size_t data_len, uint8_t *out) {
    static EVP_MD *sha512 = NULL;
    if (!sha512) {
        EVP_MD *md = EVP_MD_fetch(NULL, "SHA512", NULL);
        if (!md) return 0;
        if (!__sync_bool_compare_and_swap(&sha512, NULL, md)) EVP_MD_free(md);
    }
    if (key_len > 128 || data_len > 256) return 0;
    uint8_t block[128 + 256];
    uint8_t inner[128 + 64];
    unsigned int n = 0;
    memset(block, 0, 128);
    memcpy(block, key, key_len);
    memcpy(inner, block, 128);
    for (int i = 0; i < 128; i++) { block[i] ^= 0x36; inner[i] ^= 0x5c; }
    memcpy(block + 128, data, data_len);
    int ok = EVP_Digest(block, 128 + data_len, inner + 128, &n, sha512, NULL) == 1
          && EVP_Digest(inner, 128 + 64, out, &n, sha512, NULL) == 1;
    OPENSSL_cleanse(block, sizeof(block));
    OPENSSL_cleanse(inner, sizeof(inner));
    return ok;
}
