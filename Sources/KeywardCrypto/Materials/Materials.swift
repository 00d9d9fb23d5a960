/// What encrypting one message needs: the suite, the final encryption context, the plaintext data
/// key and its wrapped copies, and a signing key for signed suites.
public struct EncryptionMaterials: Sendable {
    public var suite: AlgorithmSuite
    public var encryptionContext: EncryptionContext
    public var plaintextDataKey: SecretBytes?
    public var encryptedDataKeys: [EncryptedDataKey]
    public var signingKey: SigningKey?

    public init(suite: AlgorithmSuite, encryptionContext: EncryptionContext, plaintextDataKey: SecretBytes? = nil,
                encryptedDataKeys: [EncryptedDataKey] = [], signingKey: SigningKey? = nil) {
        self.suite = suite
        self.encryptionContext = encryptionContext
        self.plaintextDataKey = plaintextDataKey
        self.encryptedDataKeys = encryptedDataKeys
        self.signingKey = signingKey
    }
}

/// What decrypting one message needs: the unwrapped data key and, for signed suites, the key
/// that verifies the footer.
public struct DecryptionMaterials: Sendable {
    public var suite: AlgorithmSuite
    public var encryptionContext: EncryptionContext
    public var plaintextDataKey: SecretBytes?
    public var verificationKey: VerificationKey?

    public init(suite: AlgorithmSuite, encryptionContext: EncryptionContext,
                plaintextDataKey: SecretBytes? = nil, verificationKey: VerificationKey? = nil) {
        self.suite = suite
        self.encryptionContext = encryptionContext
        self.plaintextDataKey = plaintextDataKey
        self.verificationKey = verificationKey
    }
}

/// The ESDK's commitment policies: whether messages must be written, and may be read, without
/// key commitment.
public enum CommitmentPolicy: String, Sendable, CaseIterable {
    case requireEncryptRequireDecrypt = "require-encrypt-require-decrypt"
    case requireEncryptAllowDecrypt = "require-encrypt-allow-decrypt"
    case forbidEncryptAllowDecrypt = "forbid-encrypt-allow-decrypt"

    func checkEncrypt(_ suite: AlgorithmSuite) throws {
        if self == .forbidEncryptAllowDecrypt {
            // Only committing (format version 2) suites are written by Keyward.
            throw KeywardCryptoError(.commitmentPolicy, "policy \(rawValue) forbids committing suites, and Keyward writes only committing suites")
        }
        guard suite.isCommitting else {
            throw KeywardCryptoError(.commitmentPolicy, "policy \(rawValue) requires a committing algorithm suite, not \(suite)")
        }
    }

    func checkDecrypt(_ suite: AlgorithmSuite) throws {
        if self == .requireEncryptRequireDecrypt && !suite.isCommitting {
            throw KeywardCryptoError(.commitmentPolicy, "policy \(rawValue) refuses messages without key commitment (suite \(suite)); use require-encrypt-allow-decrypt to read them")
        }
    }
}

/// Asks for materials to encrypt one message.
public struct EncryptionMaterialsRequest: Sendable {
    public var encryptionContext: EncryptionContext
    /// nil lets the materials manager choose.
    public var suite: AlgorithmSuite?
    /// The plaintext length if known in advance (the caching manager needs it to count bytes).
    public var plaintextLength: Int?
    public var commitmentPolicy: CommitmentPolicy

    public init(encryptionContext: EncryptionContext, suite: AlgorithmSuite? = nil, plaintextLength: Int? = nil,
                commitmentPolicy: CommitmentPolicy = .requireEncryptRequireDecrypt) {
        self.encryptionContext = encryptionContext
        self.suite = suite
        self.plaintextLength = plaintextLength
        self.commitmentPolicy = commitmentPolicy
    }
}

/// Asks for materials to decrypt one message, from its header.
public struct DecryptionMaterialsRequest: Sendable {
    public var suite: AlgorithmSuite
    public var encryptedDataKeys: [EncryptedDataKey]
    public var encryptionContext: EncryptionContext
    public var commitmentPolicy: CommitmentPolicy

    public init(suite: AlgorithmSuite, encryptedDataKeys: [EncryptedDataKey], encryptionContext: EncryptionContext,
                commitmentPolicy: CommitmentPolicy = .requireEncryptRequireDecrypt) {
        self.suite = suite
        self.encryptedDataKeys = encryptedDataKeys
        self.encryptionContext = encryptionContext
        self.commitmentPolicy = commitmentPolicy
    }
}

/// Supplies the materials for each message (the ESDK's "cryptographic materials manager").
public protocol CryptographicMaterialsManager: Sendable {
    func encryptionMaterials(for request: EncryptionMaterialsRequest) async throws -> EncryptionMaterials
    func decryptionMaterials(for request: DecryptionMaterialsRequest) async throws -> DecryptionMaterials
}
