import Foundation
import KeywardCrypto

/// Keyward's own state of a key, where it has one: it holds over whatever the key's store says.
public struct KeyStateOverride: Sendable, Hashable {
    /// `.disabled`, `.pendingDeletion` or `.destroyed`.
    public var state: KeyState
    /// When a key pending deletion is destroyed.
    public var deletionDate: Date?

    public init(state: KeyState, deletionDate: Date? = nil) {
        self.state = state
        self.deletionDate = deletionDate
    }
}

/// Where Keyward keeps its own key states (the gateway: its database, shared by every replica).
public protocol KeyStateOverlay: Sendable {
    /// Keyward's state of the key `reference` names (as tenants name it), or nil if it has none
    /// and the store alone decides. Current across replicas; throws rather than guess.
    func state(of reference: String) async throws -> KeyStateOverride?
}

/// A store seen through Keyward's own key states: a key Keyward revoked wraps and unwraps nothing
/// (whatever its store says, and whether or not the store can disable it), and is described in
/// Keyward's state with the store's own beside it. Life-cycle calls pass through: the gateway's
/// key life cycle records Keyward's state itself.
struct GovernedKeyStore: ForwardingKeyStore {
    let inner: any KeyStore
    let overlay: any KeyStateOverlay

    private func reference(_ keyID: String) -> String { KeyReference(scheme: scheme, keyID: keyID).canonical }

    /// Refuses a key Keyward revoked, with the code the store itself would give.
    private func check(_ keyID: String) async throws {
        guard let override = try await overlay.state(of: reference(keyID)) else { return }
        let ref = reference(keyID)
        switch override.state {
        case .destroyed: throw KeyStoreError(.keyDestroyed, "\(ref) was destroyed")
        case .pendingDeletion: throw KeyStoreError(.keyPendingDeletion, "\(ref) is pending deletion in Keyward")
        default: throw KeyStoreError(.keyDisabled, "\(ref) is revoked in Keyward")
        }
    }

    func generateDataKey(keyID: String, length: Int, context: EncryptionContext) async throws -> (plaintext: SecretBytes, wrapped: WrappedKey) {
        try await check(keyID)
        return try await inner.generateDataKey(keyID: keyID, length: length, context: context)
    }

    func encrypt(keyID: String, plaintext: SecretBytes, context: EncryptionContext) async throws -> WrappedKey {
        try await check(keyID)
        return try await inner.encrypt(keyID: keyID, plaintext: plaintext, context: context)
    }

    func decrypt(keyID: String, ciphertext: [UInt8], context: EncryptionContext) async throws -> SecretBytes {
        try await check(keyID)
        return try await inner.decrypt(keyID: keyID, ciphertext: ciphertext, context: context)
    }

    func reEncrypt(ciphertext: [UInt8], from source: String, sourceContext: EncryptionContext,
                   to destination: String, destinationContext: EncryptionContext) async throws -> WrappedKey {
        try await check(source)
        try await check(destination)
        return try await inner.reEncrypt(ciphertext: ciphertext, from: source, sourceContext: sourceContext,
                                         to: destination, destinationContext: destinationContext)
    }

    func describe(keyID: String) async throws -> KeyDescription {
        let override = try await overlay.state(of: reference(keyID))
        do {
            return Self.overlaid(try await inner.describe(keyID: keyID), override)
        } catch let e as KeyStoreError where e.code == .keyNotFound && override?.state == .destroyed {
            return KeyDescription(reference: reference(keyID), state: .destroyed)  // the store forgot it: Keyward remembers
        }
    }

    func listKeys() async throws -> [KeyDescription] {
        var result: [KeyDescription] = []
        for d in try await inner.listKeys() {
            result.append(Self.overlaid(d, try await overlay.state(of: KeyReference(parsing: d.reference)?.canonical ?? d.reference)))
        }
        return result
    }

    /// The description in the graver of the two states, the store's own beside it if Keyward's wins.
    static func overlaid(_ d: KeyDescription, _ override: KeyStateOverride?) -> KeyDescription {
        guard let override, gravity(override.state) > gravity(d.state) else { return d }
        var result = d
        result.storeState = d.state
        result.state = override.state
        result.deletionDate = override.deletionDate ?? d.deletionDate
        return result
    }

    private static func gravity(_ state: KeyState) -> Int {
        switch state {
        case .enabled: 0
        case .disabled: 1
        case .pendingDeletion: 2
        case .destroyed: 3
        }
    }
}

/// A store seen through another type: every call goes to `inner` unless the type says otherwise.
public protocol ForwardingKeyStore: KeyStore {
    var inner: any KeyStore { get }
}

extension ForwardingKeyStore {
    public var scheme: String { inner.scheme }
    public var providerID: String { inner.providerID }
    public var deletion: KeyDeletion { inner.deletion }

    public func generateDataKey(keyID: String, length: Int, context: EncryptionContext) async throws -> (plaintext: SecretBytes, wrapped: WrappedKey) {
        try await inner.generateDataKey(keyID: keyID, length: length, context: context)
    }
    public func encrypt(keyID: String, plaintext: SecretBytes, context: EncryptionContext) async throws -> WrappedKey {
        try await inner.encrypt(keyID: keyID, plaintext: plaintext, context: context)
    }
    public func decrypt(keyID: String, ciphertext: [UInt8], context: EncryptionContext) async throws -> SecretBytes {
        try await inner.decrypt(keyID: keyID, ciphertext: ciphertext, context: context)
    }
    public func reEncrypt(ciphertext: [UInt8], from source: String, sourceContext: EncryptionContext,
                          to destination: String, destinationContext: EncryptionContext) async throws -> WrappedKey {
        try await inner.reEncrypt(ciphertext: ciphertext, from: source, sourceContext: sourceContext,
                                  to: destination, destinationContext: destinationContext)
    }
    public func describe(keyID: String) async throws -> KeyDescription { try await inner.describe(keyID: keyID) }
    public func listKeys() async throws -> [KeyDescription] { try await inner.listKeys() }
    public func createKey(name: String?) async throws -> KeyDescription { try await inner.createKey(name: name) }
    public func enableKey(keyID: String) async throws { try await inner.enableKey(keyID: keyID) }
    public func disableKey(keyID: String) async throws { try await inner.disableKey(keyID: keyID) }
    public func rotateKey(keyID: String) async throws { try await inner.rotateKey(keyID: keyID) }
    public func scheduleKeyDeletion(keyID: String, days: Int) async throws -> Date { try await inner.scheduleKeyDeletion(keyID: keyID, days: days) }
    public func cancelKeyDeletion(keyID: String) async throws { try await inner.cancelKeyDeletion(keyID: keyID) }
    public func destroyKey(keyID: String) async throws { try await inner.destroyKey(keyID: keyID) }
    public func providerInfo(forKeyID keyID: String) throws -> String { try inner.providerInfo(forKeyID: keyID) }
}
