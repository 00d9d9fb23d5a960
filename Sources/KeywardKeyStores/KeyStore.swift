import Foundation
import KeywardCrypto

/// The life-cycle state of a master key.
public enum KeyState: String, Sendable, Codable {
    case enabled
    case disabled
    case pendingDeletion = "pending-deletion"
    case destroyed
}

/// What a key store says about one master key.
public struct KeyDescription: Sendable, Hashable {
    /// The key's reference, as accepted everywhere (`local:NAME`, `aws-kms:ARN`, `pkcs11:…`).
    public var reference: String
    public var state: KeyState
    public var created: Date?
    /// When a key pending deletion will be destroyed.
    public var deletionDate: Date?
    /// Number of key versions (local store, PKCS#11), if the store counts them.
    public var versions: Int?
    /// Whether the store rotates the key on a schedule (AWS KMS).
    public var rotationEnabled: Bool?
    /// The oldest version that still unwraps (Vault Transit's `min_decryption_version`).
    public var minDecryptionVersion: Int?
    /// The state the key's store reports, where Keyward's own state (``KeyStateOverlay``) differs
    /// from it: a key Keyward revoked that its store still has enabled.
    public var storeState: KeyState?

    public init(reference: String, state: KeyState, created: Date? = nil, deletionDate: Date? = nil,
                versions: Int? = nil, rotationEnabled: Bool? = nil) {
        self.reference = reference
        self.state = state
        self.created = created
        self.deletionDate = deletionDate
        self.versions = versions
        self.rotationEnabled = rotationEnabled
    }
}

/// A data key wrapped by a master key, and the identifier of the key that wrapped it (for AWS KMS
/// the full key ARN, which becomes the encrypted data key's provider info).
public struct WrappedKey: Sendable {
    public var ciphertext: [UInt8]
    public var keyID: String

    public init(ciphertext: [UInt8], keyID: String) {
        self.ciphertext = ciphertext
        self.keyID = keyID
    }
}

/// How a store's keys are destroyed.
public enum KeyDeletion: Sendable {
    /// The store keeps the waiting period itself (AWS KMS, the local store): ``KeyStore/scheduleKeyDeletion(keyID:days:)``.
    case scheduled
    /// The store destroys at once (KMIP Destroy, Transit's delete): Keyward keeps the waiting
    /// period and calls ``KeyStore/destroyKey(keyID:)`` when it ends.
    case immediate
    /// Neither: the store's operator destroys keys with its own tools (PKCS#11 tokens).
    case unsupported
}

/// A customer key store: it holds master keys and wraps, unwraps and re-wraps data keys with them,
/// so that master key material never leaves it. Every call passes the encryption context, which the
/// store binds as authenticated data where it can.
///
/// `keyID` is the part of a key reference after the scheme: a name (local), an ARN (AWS KMS), a
/// PKCS#11 URI body.
public protocol KeyStore: Sendable {
    /// The reference scheme this store serves: `local`, `aws-kms`, `pkcs11`.
    var scheme: String { get }
    /// The provider ID its encrypted data keys carry (`aws-kms` for AWS KMS, as the ESDK writes).
    var providerID: String { get }

    func generateDataKey(keyID: String, length: Int, context: EncryptionContext) async throws -> (plaintext: SecretBytes, wrapped: WrappedKey)
    func encrypt(keyID: String, plaintext: SecretBytes, context: EncryptionContext) async throws -> WrappedKey
    func decrypt(keyID: String, ciphertext: [UInt8], context: EncryptionContext) async throws -> SecretBytes
    /// Re-wraps a data key under another key of the same store. Stores that can do this inside the
    /// store (AWS KMS) never show the data key to the caller.
    func reEncrypt(ciphertext: [UInt8], from source: String, sourceContext: EncryptionContext,
                   to destination: String, destinationContext: EncryptionContext) async throws -> WrappedKey

    func describe(keyID: String) async throws -> KeyDescription
    /// Creates a key. `name` is required where the store names keys (local); others assign an ID.
    func createKey(name: String?) async throws -> KeyDescription
    func enableKey(keyID: String) async throws
    func disableKey(keyID: String) async throws
    /// Makes a new key version that wraps from now on; older versions still unwrap.
    func rotateKey(keyID: String) async throws
    /// Schedules destruction after 7 to 30 days; the key refuses every operation meanwhile.
    func scheduleKeyDeletion(keyID: String, days: Int) async throws -> Date
    /// Cancels a scheduled deletion; the key comes back disabled, as in AWS KMS.
    func cancelKeyDeletion(keyID: String) async throws
    /// How this store's keys are destroyed.
    var deletion: KeyDeletion { get }
    /// Destroys the key's material now (stores whose ``deletion`` is `.immediate`): every version,
    /// so that nothing it wrapped can be unwrapped again. A key already gone is not an error.
    func destroyKey(keyID: String) async throws
    func listKeys() async throws -> [KeyDescription]

    /// What encrypted data keys record as provider info for `keyID` (default: the key ID itself;
    /// PKCS#11 leaves out the module path and PIN).
    func providerInfo(forKeyID keyID: String) throws -> String
}

extension KeyStore {
    public func providerInfo(forKeyID keyID: String) throws -> String { keyID }

    public func destroyKey(keyID: String) async throws {
        throw KeyStoreError(.invalidArgument, "\(scheme): keys are not destroyed by Keyward: schedule their deletion")
    }

    /// Unwraps and wraps again, for stores that cannot re-wrap internally.
    public func reEncrypt(ciphertext: [UInt8], from source: String, sourceContext: EncryptionContext,
                          to destination: String, destinationContext: EncryptionContext) async throws -> WrappedKey {
        let plaintext = try await decrypt(keyID: source, ciphertext: ciphertext, context: sourceContext)
        return try await encrypt(keyID: destination, plaintext: plaintext, context: destinationContext)
    }

    /// Validates a deletion waiting period the way AWS KMS does.
    public static func checkWaitingPeriod(_ days: Int) throws {
        guard (7...30).contains(days) else {
            throw KeyStoreError(.invalidArgument, "the deletion waiting period must be 7 to 30 days, not \(days)")
        }
    }
}
