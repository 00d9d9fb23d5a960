/// An AWS Encryption SDK algorithm suite: which cipher, key derivation, commitment and signature a
/// message uses. All suites use AES-GCM with 12-byte IVs and 16-byte tags.
public struct AlgorithmSuite: Hashable, Sendable, CustomStringConvertible {
    /// How the data key becomes the content key.
    public enum KDF: Hashable, Sendable { case identity, hkdfSHA256, hkdfSHA384, hkdfSHA512 }
    /// The message signature, if any.
    public enum Signature: Hashable, Sendable { case none, ecdsaP256SHA256, ecdsaP384SHA384 }

    /// The two-byte identifier in the header.
    public let id: UInt16
    /// 1 or 2.
    public let messageFormatVersion: UInt8
    /// Data key and content key length in bytes.
    public let keyLength: Int
    public let kdf: KDF
    public let signature: Signature
    /// Whether the header carries a key commitment (format version 2 suites with commitment).
    public let isCommitting: Bool
    /// The ESDK's name for the suite, as accepted by `--algorithm`.
    public let name: String

    public var ivLength: Int { 12 }
    public var tagLength: Int { 16 }
    /// Length of the algorithm suite data (the commit key) in a v2 header.
    public var suiteDataLength: Int { isCommitting ? 32 : 0 }
    public var isSigned: Bool { signature != .none }

    public var description: String { hex4(id) }

    // Format version 2, committing.
    public static let aes256GCMHKDFSHA512CommitKey = AlgorithmSuite(
        id: 0x0478, messageFormatVersion: 2, keyLength: 32, kdf: .hkdfSHA512, signature: .none,
        isCommitting: true, name: "AES_256_GCM_HKDF_SHA512_COMMIT_KEY")
    public static let aes256GCMHKDFSHA512CommitKeyECDSAP384 = AlgorithmSuite(
        id: 0x0578, messageFormatVersion: 2, keyLength: 32, kdf: .hkdfSHA512, signature: .ecdsaP384SHA384,
        isCommitting: true, name: "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384")

    // Format version 1, decrypt only.
    public static let v1Suites: [AlgorithmSuite] = [
        .init(id: 0x0014, messageFormatVersion: 1, keyLength: 16, kdf: .identity, signature: .none,
              isCommitting: false, name: "AES_128_GCM_IV12_TAG16"),
        .init(id: 0x0046, messageFormatVersion: 1, keyLength: 24, kdf: .identity, signature: .none,
              isCommitting: false, name: "AES_192_GCM_IV12_TAG16"),
        .init(id: 0x0078, messageFormatVersion: 1, keyLength: 32, kdf: .identity, signature: .none,
              isCommitting: false, name: "AES_256_GCM_IV12_TAG16"),
        .init(id: 0x0114, messageFormatVersion: 1, keyLength: 16, kdf: .hkdfSHA256, signature: .none,
              isCommitting: false, name: "AES_128_GCM_IV12_TAG16_HKDF_SHA256"),
        .init(id: 0x0146, messageFormatVersion: 1, keyLength: 24, kdf: .hkdfSHA256, signature: .none,
              isCommitting: false, name: "AES_192_GCM_IV12_TAG16_HKDF_SHA256"),
        .init(id: 0x0178, messageFormatVersion: 1, keyLength: 32, kdf: .hkdfSHA256, signature: .none,
              isCommitting: false, name: "AES_256_GCM_IV12_TAG16_HKDF_SHA256"),
        .init(id: 0x0214, messageFormatVersion: 1, keyLength: 16, kdf: .hkdfSHA256, signature: .ecdsaP256SHA256,
              isCommitting: false, name: "AES_128_GCM_IV12_TAG16_HKDF_SHA256_ECDSA_P256"),
        .init(id: 0x0346, messageFormatVersion: 1, keyLength: 24, kdf: .hkdfSHA384, signature: .ecdsaP384SHA384,
              isCommitting: false, name: "AES_192_GCM_IV12_TAG16_HKDF_SHA384_ECDSA_P384"),
        .init(id: 0x0378, messageFormatVersion: 1, keyLength: 32, kdf: .hkdfSHA384, signature: .ecdsaP384SHA384,
              isCommitting: false, name: "AES_256_GCM_IV12_TAG16_HKDF_SHA384_ECDSA_P384"),
    ]

    /// Every suite this implementation can decrypt.
    public static let all: [AlgorithmSuite] =
        v1Suites + [.aes256GCMHKDFSHA512CommitKey, .aes256GCMHKDFSHA512CommitKeyECDSAP384]

    /// The suite with this identifier, or nil.
    public static func byID(_ id: UInt16) -> AlgorithmSuite? { all.first { $0.id == id } }
}

extension AlgorithmSuite {
    /// Parses `0x0478`, `1144` or an ESDK suite name (case-insensitive).
    public init?(parsing text: String) {
        let t = text.trimmingWhitespace()
        let lowered = t.lowercased()
        let id: UInt16? = lowered.hasPrefix("0x") ? UInt16(lowered.dropFirst(2), radix: 16) : UInt16(t)
        if let id, let suite = AlgorithmSuite.byID(id) { self = suite; return }
        if let suite = AlgorithmSuite.all.first(where: { $0.name.lowercased() == lowered }) { self = suite; return }
        return nil
    }
}

/// `0x0478`-style hex for a suite ID.
func hex4(_ value: UInt16) -> String {
    let hex = String(value, radix: 16)
    return "0x" + String(repeating: "0", count: max(0, 4 - hex.count)) + hex
}

extension String {
    func trimmingWhitespace() -> Substring {
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s.removeFirst() }
        while let l = s.last, l.isWhitespace { s.removeLast() }
        return s
    }
}
