import CKeywardOpenSSL
import Crypto

/// How a message's data key becomes its content key and key commitment.
enum KeyDerivation {
    static let deriveKeyLabel = Array("DERIVEKEY".utf8)
    static let commitKeyLabel = Array("COMMITKEY".utf8)

    /// The key that encrypts the header tag and the frames.
    static func contentKey(dataKey: SecretBytes, suite: AlgorithmSuite, messageID: [UInt8]) -> SecretBytes {
        var suiteID: [UInt8] = []
        suiteID.appendUInt16(suite.id)
        switch (suite.kdf, suite.isCommitting) {
        case (.identity, _):
            return dataKey
        case (_, true):
            // Committing suites: salt = message ID, info = suite ID || "DERIVEKEY".
            return hkdf(suite.kdf, dataKey, salt: messageID, info: suiteID + deriveKeyLabel, length: suite.keyLength)
        case (_, false):
            // Version 1 suites: no salt, info = suite ID || message ID.
            return hkdf(suite.kdf, dataKey, salt: nil, info: suiteID + messageID, length: suite.keyLength)
        }
    }

    /// Both keys of a committing suite — the content key and the key commitment stored in the
    /// header (public in every message) — from one HKDF extract (they share key and salt), the two
    /// expands differing only in their info: a third less hashing on every message.
    static func committingKeys(dataKey: SecretBytes, suite: AlgorithmSuite, messageID: [UInt8]) -> (content: SecretBytes, commit: [UInt8]) {
        precondition(suite.isCommitting && suite.kdf == .hkdfSHA512 && suite.keyLength <= 64)
        // HKDF-SHA-512 (RFC 5869) written out: both outputs fit in one expand block each.
        var prk = [UInt8](repeating: 0, count: 64)
        var block = [UInt8](repeating: 0, count: 64)
        defer {
            prk.withUnsafeMutableBytes { kw_cleanse($0.baseAddress, $0.count) }
            block.withUnsafeMutableBytes { kw_cleanse($0.baseAddress, $0.count) }
        }
        dataKey.withUnsafeBytes { ikm in
            messageID.withUnsafeBytes { salt in
                prk.withUnsafeMutableBytes { out in
                    let ok = kw_hmac_sha512(salt.bindMemory(to: UInt8.self).baseAddress, salt.count,
                                            ikm.bindMemory(to: UInt8.self).baseAddress, ikm.count, out.bindMemory(to: UInt8.self).baseAddress)
                    // Only lengths the suites fix could fail it: a bug, never a zero key.
                    precondition(ok == 1, "HMAC-SHA-512 failed")
                }
            }
        }
        func expand(_ info: [UInt8]) {
            let input = info + [1]
            prk.withUnsafeBytes { key in
                input.withUnsafeBytes { data in
                    block.withUnsafeMutableBytes { out in
                        let ok = kw_hmac_sha512(key.bindMemory(to: UInt8.self).baseAddress, 64,
                                                data.bindMemory(to: UInt8.self).baseAddress, data.count, out.bindMemory(to: UInt8.self).baseAddress)
                        precondition(ok == 1, "HMAC-SHA-512 failed")
                    }
                }
            }
        }
        var suiteID: [UInt8] = []
        suiteID.appendUInt16(suite.id)
        expand(suiteID + deriveKeyLabel)
        let content = block.withUnsafeBytes { SecretBytes(copying: UnsafeRawBufferPointer(rebasing: $0[0..<suite.keyLength])) }
        expand(commitKeyLabel)
        return (content, Array(block[0..<32]))
    }

    private static func hkdf(_ kdf: AlgorithmSuite.KDF, _ ikm: SecretBytes, salt: [UInt8]?, info: [UInt8], length: Int) -> SecretBytes {
        let key = ikm.withUnsafeBytes { SymmetricKey(data: $0) }
        let derived: SymmetricKey
        switch kdf {
        case .hkdfSHA256: derived = derive(SHA256.self, key, salt, info, length)
        case .hkdfSHA384: derived = derive(SHA384.self, key, salt, info, length)
        case .hkdfSHA512: derived = derive(SHA512.self, key, salt, info, length)
        case .identity: preconditionFailure("no KDF")
        }
        return derived.withUnsafeBytes { SecretBytes(copying: $0) }
    }

    private static func derive<H: HashFunction>(_: H.Type, _ key: SymmetricKey, _ salt: [UInt8]?, _ info: [UInt8], _ length: Int) -> SymmetricKey {
        if let salt {
            return HKDF<H>.deriveKey(inputKeyMaterial: key, salt: salt, info: info, outputByteCount: length)
        }
        return HKDF<H>.deriveKey(inputKeyMaterial: key, info: info, outputByteCount: length)
    }
}
