import CKeywardOpenSSL

/// An RSA key parsed from PEM, private (encrypts and decrypts) or public (encrypts only).
public final class RSAKey: @unchecked Sendable, CustomStringConvertible {
    // The EVP_PKEY is never mutated after parsing; each operation makes its own EVP_PKEY_CTX.
    private let key: OpaquePointer
    public let isPrivate: Bool

    /// Padding schemes of the ESDK's raw RSA keyring (OAEP uses MGF1 with the same hash).
    public enum Padding: String, Sendable, CaseIterable {
        case pkcs1 = "pkcs1"
        case oaepSHA1 = "oaep-sha1"
        case oaepSHA256 = "oaep-sha256"
        case oaepSHA384 = "oaep-sha384"
        case oaepSHA512 = "oaep-sha512"

        var cValue: Int32 {
            switch self {
            case .pkcs1: Int32(KW_RSA_PKCS1)
            case .oaepSHA1: Int32(KW_RSA_OAEP_SHA1)
            case .oaepSHA256: Int32(KW_RSA_OAEP_SHA256)
            case .oaepSHA384: Int32(KW_RSA_OAEP_SHA384)
            case .oaepSHA512: Int32(KW_RSA_OAEP_SHA512)
            }
        }
    }

    /// Parses PKCS#8 / PKCS#1 private keys and SubjectPublicKeyInfo / PKCS#1 public keys.
    /// Encrypted PEMs are refused.
    public init(pem: [UInt8]) throws {
        var isPrivate: Int32 = 0
        guard let key = pem.withUnsafeBufferPointer({ kw_rsa_from_pem($0.baseAddress, $0.count, &isPrivate) }) else {
            throw KeywardCryptoError(.invalidKey, "not an unencrypted RSA key in PEM form")
        }
        self.key = key
        self.isPrivate = isPrivate != 0
    }

    deinit { kw_rsa_free(key) }

    public var description: String { isPrivate ? "<RSA private key>" : "<RSA public key>" }

    /// The modulus length in bytes.
    public var size: Int { kw_rsa_size(key) }

    func encrypt(_ plaintext: UnsafeRawBufferPointer, padding: Padding) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: size)
        var n = 0
        let ok = out.withUnsafeMutableBufferPointer { o in
            kw_rsa_encrypt(key, padding.cValue, plaintext.u8, plaintext.count, o.baseAddress, &n)
        }
        guard ok == 1 else { throw KeywardCryptoError(.invalidKey, "RSA encryption failed (key too small for the padding?)") }
        return Array(out[0..<n])
    }

    /// nil if the ciphertext does not decrypt under this key and padding.
    func decrypt(_ ciphertext: [UInt8], padding: Padding) -> SecretBytes? {
        guard isPrivate else { return nil }
        var n = 0
        var ok: Int32 = 0
        let buffer = SecretBytes(count: size) { out in
            ok = ciphertext.withUnsafeBufferPointer { c in
                kw_rsa_decrypt(key, padding.cValue, c.baseAddress, c.count,
                               out.baseAddress!.assumingMemoryBound(to: UInt8.self), &n)
            }
        }
        guard ok == 1 else { return nil }
        return buffer.withUnsafeBytes { SecretBytes(copying: $0[0..<n]) }
    }
}
