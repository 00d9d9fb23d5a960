/// The ESDK's default materials manager: adds the signing key for signed suites and asks one
/// keyring for the data key.
public struct DefaultMaterialsManager: CryptographicMaterialsManager {
    public let keyring: any Keyring
    /// The suite used when a request names none: 0x0578, as in the ESDK.
    public static let defaultSuite = AlgorithmSuite.aes256GCMHKDFSHA512CommitKeyECDSAP384

    public init(keyring: any Keyring) { self.keyring = keyring }

    public func encryptionMaterials(for request: EncryptionMaterialsRequest) async throws -> EncryptionMaterials {
        let suite = request.suite ?? Self.defaultSuite
        try request.commitmentPolicy.checkEncrypt(suite)
        guard !request.encryptionContext.hasReservedKeys else {
            throw KeywardCryptoError(.invalidEncryptionContext, "encryption context keys starting with aws-crypto- are reserved")
        }
        var context = request.encryptionContext
        var signingKey: SigningKey?
        if suite.isSigned {
            let key = SigningKey()
            context.setValue(key.publicKeyContextValue, forKey: EncryptionContext.publicKeyKey)
            signingKey = key
        }
        let m = try await keyring.onEncrypt(EncryptionMaterials(suite: suite, encryptionContext: context, signingKey: signingKey))
        guard let key = m.plaintextDataKey, key.count == suite.keyLength, !m.encryptedDataKeys.isEmpty else {
            throw KeywardCryptoError(.internalError, "the keyring returned no data key or no encrypted data key")
        }
        return m
    }

    public func decryptionMaterials(for request: DecryptionMaterialsRequest) async throws -> DecryptionMaterials {
        try request.commitmentPolicy.checkDecrypt(request.suite)
        let publicKey = request.encryptionContext.value(forKey: EncryptionContext.publicKeyKey)
        var verificationKey: VerificationKey?
        switch (request.suite.isSigned, publicKey) {
        case (true, let value?): verificationKey = try VerificationKey(suite: request.suite, contextValue: value)
        case (true, nil): throw KeywardCryptoError(.malformedMessage, "a signed message has no public key in its encryption context")
        case (false, _?): throw KeywardCryptoError(.malformedMessage, "an unsigned message carries a signing public key")
        case (false, nil): break
        }
        let m = try await keyring.onDecrypt(
            DecryptionMaterials(suite: request.suite, encryptionContext: request.encryptionContext, verificationKey: verificationKey),
            encryptedDataKeys: request.encryptedDataKeys)
        guard let key = m.plaintextDataKey, key.count == request.suite.keyLength else {
            throw KeywardCryptoError(.noDecryptableKey, "none of the given wrapping keys can decrypt this message's data keys")
        }
        return m
    }
}
