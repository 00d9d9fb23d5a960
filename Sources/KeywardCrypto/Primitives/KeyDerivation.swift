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

    /// The key commitment stored in the header (not secret: it is public in every message).
    static func commitKey(dataKey: SecretBytes, suite: AlgorithmSuite, messageID: [UInt8]) -> [UInt8] {
        precondition(suite.isCommitting)
        return hkdf(suite.kdf, dataKey, salt: messageID, info: commitKeyLabel, length: 32)
            .withUnsafeBytes { Array($0) }
    }

    /// Both keys of a committing suite from one HKDF extract (they share key and salt), the two
    /// expands differing only in their info: a third less hashing on every message.
    static func committingKeys(dataKey: SecretBytes, suite: AlgorithmSuite, messageID: [UInt8]) -> (content: SecretBytes, commit: [UInt8]) {
        precondition(suite.isCommitting && suite.kdf == .hkdfSHA512)
        var suiteID: [UInt8] = []
        suiteID.appendUInt16(suite.id)
        let key = dataKey.withUnsafeBytes { SymmetricKey(data: $0) }
        let prk = HKDF<SHA512>.extract(inputKeyMaterial: key, salt: messageID)
        let content = HKDF<SHA512>.expand(pseudoRandomKey: prk, info: suiteID + deriveKeyLabel, outputByteCount: suite.keyLength)
        let commit = HKDF<SHA512>.expand(pseudoRandomKey: prk, info: commitKeyLabel, outputByteCount: 32)
        return (content.withUnsafeBytes { SecretBytes(copying: $0) }, commit.withUnsafeBytes { Array($0) })
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
