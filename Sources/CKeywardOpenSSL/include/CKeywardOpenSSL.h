// A narrow C surface over the system libcrypto (OpenSSL 3). Only these functions are visible to
// Swift; OpenSSL's own headers stay private to shim.c so that they cannot clash with swift-crypto's
// bundled BoringSSL.
#ifndef CKEYWARD_OPENSSL_H
#define CKEYWARD_OPENSSL_H

#include <stddef.h>
#include <stdint.h>

/// Overwrites memory in a way the compiler may not elide.
void kw_cleanse(void *ptr, size_t len);

/// Fills `out` from the kernel's CSPRNG (`getrandom`). Returns 1 on success.
int kw_random(uint8_t *out, size_t len);

/// An AES-GCM context with its key schedule set once and reused for every frame.
typedef struct kw_gcm kw_gcm;

/// `key_len` is 16, 24 or 32. `encrypt` is 1 to seal, 0 to open. NULL on failure.
kw_gcm *kw_gcm_new(const uint8_t *key, size_t key_len, int encrypt);
void kw_gcm_free(kw_gcm *ctx);

/// Encrypts `len` bytes (in may equal out) with a 12-byte IV; writes a 16-byte tag. Returns 1 on success.
int kw_gcm_seal(kw_gcm *ctx, const uint8_t *iv, const uint8_t *aad, size_t aad_len,
                const uint8_t *in, size_t len, uint8_t *out, uint8_t *tag);

/// Decrypts and authenticates. Returns 1 if the tag verifies, 0 if not (then `out` must be discarded),
/// -1 on an internal error.
int kw_gcm_open(kw_gcm *ctx, const uint8_t *iv, const uint8_t *aad, size_t aad_len,
                const uint8_t *in, size_t len, uint8_t *out, const uint8_t *tag);

/// An RSA key (EVP_PKEY) parsed from PEM.
typedef struct kw_rsa kw_rsa;

/// Parses a PEM private key (PKCS#8 or PKCS#1) or public key (SubjectPublicKeyInfo or PKCS#1).
/// Sets *is_private. NULL if the PEM is not an RSA key.
kw_rsa *kw_rsa_from_pem(const uint8_t *pem, size_t len, int *is_private);
void kw_rsa_free(kw_rsa *key);
/// Modulus size in bytes.
size_t kw_rsa_size(const kw_rsa *key);

/// Paddings, matching the raw RSA keyring's.
enum {
    KW_RSA_PKCS1 = 0,
    KW_RSA_OAEP_SHA1 = 1,
    KW_RSA_OAEP_SHA256 = 2,
    KW_RSA_OAEP_SHA384 = 3,
    KW_RSA_OAEP_SHA512 = 4,
};

/// `out` must hold kw_rsa_size() bytes; *out_len is set to the output length. Return 1 on success.
int kw_rsa_encrypt(const kw_rsa *key, int padding, const uint8_t *in, size_t in_len,
                   uint8_t *out, size_t *out_len);
int kw_rsa_decrypt(const kw_rsa *key, int padding, const uint8_t *in, size_t in_len,
                   uint8_t *out, size_t *out_len);

/// Streaming SHA-256 / SHA-384 (bits = 256 or 384).
typedef struct kw_digest kw_digest;
kw_digest *kw_digest_new(int bits);
int kw_digest_update(kw_digest *ctx, const void *data, size_t len);
/// Writes bits/8 bytes.
int kw_digest_final(kw_digest *ctx, uint8_t *out);
void kw_digest_free(kw_digest *ctx);

/// HMAC-SHA-512 of `data` under `key` (key_len <= 128, data_len <= 256) into out[64], on the
/// stack: no allocation, and every intermediate holding key material is cleansed. Returns 1.
int kw_hmac_sha512(const uint8_t *key, size_t key_len, const uint8_t *data, size_t data_len, uint8_t *out);

#endif
