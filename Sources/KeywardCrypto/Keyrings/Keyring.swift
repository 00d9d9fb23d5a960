/// Wraps and unwraps data keys under one or more master keys.
///
/// `onEncrypt` generates the data key if the materials have none, then adds its encrypted data
/// key(s). `onDecrypt` returns the materials unchanged if they already hold a data key or none of
/// the encrypted data keys is for this keyring; it throws only for a definite failure.
public protocol Keyring: Sendable {
    func onEncrypt(_ materials: EncryptionMaterials) async throws -> EncryptionMaterials
    func onDecrypt(_ materials: DecryptionMaterials, encryptedDataKeys: [EncryptedDataKey]) async throws -> DecryptionMaterials
}

extension EncryptionMaterials {
    /// The data key, generated now if the keyring is the first to see the materials.
    mutating func dataKeyGeneratingIfNeeded() -> SecretBytes {
        if let key = plaintextDataKey { return key }
        let key = SecretBytes(randomCount: suite.keyLength)
        plaintextDataKey = key
        return key
    }
}

/// Checks a raw keyring's namespace: the ESDK reserves `aws-kms` for its KMS keyrings.
func validateRawNamespace(_ namespace: String) throws {
    guard !namespace.isEmpty else {
        throw KeywardCryptoError(.invalidArgument, "a raw keyring needs a key namespace")
    }
    guard !namespace.hasPrefix("aws-kms") else {
        throw KeywardCryptoError(.invalidArgument, "the key namespace aws-kms is reserved for AWS KMS keyrings")
    }
}
