/// One-shot AES-GCM for small values (wrapped data keys, key material at rest), on the same
/// libcrypto path as the message format. The output is ciphertext followed by the 16-byte tag.
public enum AESGCM {
    public static let ivLength = 12
    public static let tagLength = 16

    public static func seal(key: SecretBytes, iv: [UInt8], aad: [UInt8], plaintext: [UInt8]) throws -> [UInt8] {
        try plaintext.withUnsafeBytes { try AESGCMContext.seal(key: key, iv: iv, aad: aad, plaintext: $0) }
    }

    public static func seal(key: SecretBytes, iv: [UInt8], aad: [UInt8], secret: SecretBytes) throws -> [UInt8] {
        try secret.withUnsafeBytes { try AESGCMContext.seal(key: key, iv: iv, aad: aad, plaintext: $0) }
    }

    /// Opens ciphertext-then-tag into secret memory; throws `authenticationFailed` if it does not verify.
    public static func open(key: SecretBytes, iv: [UInt8], aad: [UInt8], sealed: [UInt8]) throws -> SecretBytes {
        guard iv.count == ivLength, let plaintext = try AESGCMContext.openSecret(key: key, iv: iv, aad: aad, sealed: sealed) else {
            throw KeywardCryptoError(.authenticationFailed, "AES-GCM authentication failed")
        }
        return plaintext
    }
}
