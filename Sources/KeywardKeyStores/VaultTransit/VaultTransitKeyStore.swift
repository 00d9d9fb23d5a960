import Foundation
import KeywardCrypto
import NIOHTTP1
import Synchronization

/// Vault's (or OpenBao's) Transit engine as a key store: `vault-transit:NAME`, or
/// `vault-transit:NAME?mount=MOUNT` for an engine mounted elsewhere than `transit`.
///
/// Data keys come from Transit `datakey/plaintext` (or are wrapped by `encrypt`) under an
/// `aes256-gcm96` key, with the encryption context (its canonical ESDK serialization) as
/// `associated_data`, so a wrapped key opens only with the context it was made for. The encrypted data key's provider ID is `vault-transit`, its
/// provider info `MOUNT/keys/NAME`, its ciphertext Transit's own `vault:vN:…` string: whoever holds
/// a Vault token for the key can unwrap it with Transit `decrypt`, without Keyward.
public final class VaultTransitKeyStore: KeyStore {
    public let scheme = "vault-transit"
    public let providerID = "vault-transit"
    public let client: VaultClient
    /// Keys seen to exist, and when: Transit's `encrypt` creates a missing key when the token may,
    /// and neither a typo nor a key deleted in Vault may mint one, so a key is read before `encrypt`
    /// uses it unless it was read in the last minute. (New data keys come from `datakey`, which
    /// never creates a key; `encrypt` wraps existing data keys: a second keyring, a re-key.)
    private let knownSince = Mutex<[KeyName: ContinuousClock.Instant]>([:])
    private static let knownFor: Duration = .seconds(60)

    public init(client: VaultClient) {
        self.client = client
    }

    public static func fromEnvironment() throws -> VaultTransitKeyStore {
        VaultTransitKeyStore(client: try VaultClient(configuration: .fromEnvironment()))
    }

    /// A Transit key: its engine's mount and its name.
    public struct KeyName: Hashable, Sendable {
        public var mount: String
        public var name: String

        /// Parses `NAME` or `NAME?mount=MOUNT`.
        public init(_ keyID: String) throws {
            let parts = keyID.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
            name = String(parts[0])
            mount = "transit"
            if parts.count == 2 {
                for pair in parts[1].split(separator: "&") {
                    let kv = pair.split(separator: "=", maxSplits: 1)
                    guard kv.count == 2, kv[0] == "mount" else {
                        throw KeyStoreError(.invalidArgument, "a vault-transit key takes one option, ?mount=MOUNT")
                    }
                    mount = String(kv[1])
                }
            }
            let nameCharacters = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
            guard !name.isEmpty, name.count <= 128, name.unicodeScalars.allSatisfy(nameCharacters.contains), name != ".", name != ".." else {
                throw KeyStoreError(.invalidArgument, "a vault-transit key name is 1 to 128 letters, digits, '-', '_' or '.'")
            }
            let segments = mount.split(separator: "/", omittingEmptySubsequences: false)
            guard !mount.isEmpty, segments.allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".." && $0.unicodeScalars.allSatisfy(nameCharacters.contains) }) else {
                throw KeyStoreError(.invalidArgument, "a vault-transit mount is a path of letters, digits, '-', '_' and '.' segments")
            }
        }

        /// The reference's key ID: the name, and the mount when it is not `transit`.
        public var keyID: String { mount == "transit" ? name : "\(name)?mount=\(mount)" }
        var path: String { "\(mount)/keys/\(name)" }
    }

    public func providerInfo(forKeyID keyID: String) throws -> String { try KeyName(keyID).path }

    // MARK: Wrapping

    private struct EncryptBody: Encodable {
        var plaintext: String
        var associated_data: String
    }

    private struct EncryptAnswer: Decodable {
        var ciphertext: String
    }

    private struct DecryptBody: Encodable {
        var ciphertext: String
        var associated_data: String
    }

    private struct DecryptAnswer: Decodable {
        var plaintext: String
    }

    /// The context as Transit's associated data: the ESDK's serialization (sorted, length-prefixed),
    /// base64. An empty context serializes to nothing, and binds nothing.
    static func associatedData(_ context: EncryptionContext) throws -> String {
        Data(try context.serialized()).base64EncodedString()
    }

    private struct DataKeyBody: Encodable {
        var bits: Int
        var associated_data: String
    }

    private struct DataKeyAnswer: Decodable {
        var plaintext: String
        var ciphertext: String
    }

    /// Transit's `datakey/plaintext`, the context bound as associated data: one call, and unlike
    /// `encrypt` it never creates a missing key (a key deleted in Vault stays gone). Lengths it
    /// does not make (24 bytes) are made here and wrapped with `encrypt`.
    public func generateDataKey(keyID: String, length: Int, context: EncryptionContext) async throws -> (plaintext: SecretBytes, wrapped: WrappedKey) {
        guard [16, 32, 64].contains(length) else {
            let key = SecretBytes(randomCount: length)
            return (key, try await encrypt(keyID: keyID, plaintext: key, context: context))
        }
        let key = try KeyName(keyID)
        let body = DataKeyBody(bits: length * 8, associated_data: try Self.associatedData(context))
        guard let answer = try await client.call(.POST, "\(key.mount)/datakey/plaintext/\(key.name)", body, as: DataKeyAnswer.self,
                                                 what: "datakey"),
              answer.ciphertext.hasPrefix("vault:v"), let bytes = Data(base64Encoded: answer.plaintext), bytes.count == length else {
            throw KeyStoreError(.keyUnavailable, "Vault's datakey answered without a data key of \(length) bytes")
        }
        return (SecretBytes(copying: bytes), WrappedKey(ciphertext: Array(answer.ciphertext.utf8), keyID: key.path))
    }

    public func encrypt(keyID: String, plaintext: SecretBytes, context: EncryptionContext) async throws -> WrappedKey {
        let key = try KeyName(keyID)
        let now = ContinuousClock.now
        if knownSince.withLock({ $0[key].map { now - $0 > Self.knownFor } ?? true }) {
            if try await read(key).soft_deleted == true { throw KeyStoreError(.keyDisabled, "the Transit key \(key.path) is disabled (soft-deleted)") }
            knownSince.withLock { $0[key] = now }
        }
        let body = EncryptBody(plaintext: plaintext.withUnsafeBytes { Data($0).base64EncodedString() },
                               associated_data: try Self.associatedData(context))
        guard let answer = try await client.call(.POST, "\(key.mount)/encrypt/\(key.name)", body, as: EncryptAnswer.self, what: "encrypt"),
              answer.ciphertext.hasPrefix("vault:v") else {
            throw KeyStoreError(.keyUnavailable, "Vault's encrypt answered without a ciphertext")
        }
        return WrappedKey(ciphertext: Array(answer.ciphertext.utf8), keyID: key.path)
    }

    public func decrypt(keyID: String, ciphertext: [UInt8], context: EncryptionContext) async throws -> SecretBytes {
        let key = try KeyName(keyID)
        guard let text = String(validating: ciphertext, as: UTF8.self), text.hasPrefix("vault:v") else {
            throw KeyStoreError(.invalidCiphertext, "not a Transit ciphertext")
        }
        let body = DecryptBody(ciphertext: text, associated_data: try Self.associatedData(context))
        guard let answer = try await client.call(.POST, "\(key.mount)/decrypt/\(key.name)", body, as: DecryptAnswer.self, what: "decrypt"),
              let bytes = Data(base64Encoded: answer.plaintext) else {
            throw KeyStoreError(.keyUnavailable, "Vault's decrypt answered without a plaintext")
        }
        return SecretBytes(copying: bytes)
    }

    // MARK: Life cycle

    private struct KeyAnswer: Decodable {
        var type: String?
        var latest_version: Int?
        var min_decryption_version: Int?
        /// OpenBao's soft delete, which Keyward uses as disable.
        var soft_deleted: Bool?
        /// Version number to its creation time: Unix seconds for symmetric keys (the only kind
        /// Keyward uses); anything else is left out rather than failing the read.
        var keys: [String: Created]?

        struct Created: Decodable {
            var date: Date?
            init(from decoder: any Decoder) throws {
                date = (try? decoder.singleValueContainer().decode(Double.self)).map { Date(timeIntervalSince1970: $0) }
            }
        }
    }

    private func read(_ key: KeyName) async throws -> KeyAnswer {
        guard let answer = try await client.call(.GET, key.path, nil as Empty?, as: KeyAnswer.self, what: "read key \(key.name)") else {
            throw KeyStoreError(.keyNotFound, "Vault has no Transit key \(key.path)")
        }
        guard answer.type == nil || answer.type == "aes256-gcm96" else {
            throw KeyStoreError(.invalidArgument, "\(key.path) is a \(answer.type!) key; Keyward wraps with aes256-gcm96 keys")
        }
        return answer
    }

    private struct Empty: Codable {}

    /// A key that exists is enabled, unless OpenBao soft-deleted it (disabled).
    public func describe(keyID: String) async throws -> KeyDescription {
        let key = try KeyName(keyID)
        let answer = try await read(key)
        var d = KeyDescription(reference: "vault-transit:\(key.keyID)", state: answer.soft_deleted == true ? .disabled : .enabled,
                               created: answer.keys?["1"]?.date, versions: answer.latest_version)
        d.minDecryptionVersion = answer.min_decryption_version
        return d
    }

    private struct CreateBody: Encodable { var type = "aes256-gcm96" }

    /// Creates an `aes256-gcm96` key named `name` (`NAME` or `NAME?mount=MOUNT`).
    public func createKey(name: String?) async throws -> KeyDescription {
        guard let name else { throw KeyStoreError(.invalidArgument, "name the key: vault-transit:NAME") }
        let key = try KeyName(name)
        do {
            _ = try await read(key)
            throw KeyStoreError(.alreadyExists, "Vault already has a Transit key \(key.path)")
        } catch let e as KeyStoreError where e.code == .keyNotFound {}
        _ = try await client.call(.POST, key.path, CreateBody(), as: Empty.self, what: "create key \(key.name)", idempotent: false)
        return try await describe(keyID: key.keyID)
    }

    public func rotateKey(keyID: String) async throws {
        let key = try KeyName(keyID)
        _ = try await client.call(.POST, "\(key.path)/rotate", Empty(), as: Empty.self, what: "rotate key \(key.name)", idempotent: false)
    }

    /// Disables with OpenBao's soft delete: the server then refuses the key to every client until
    /// it is restored, and Keyward sees `key_disabled`. HashiCorp Vault's Transit has no such state.
    public func disableKey(keyID: String) async throws {
        try await softDelete(keyID, .DELETE, "soft-delete", what: "disable")
    }

    public func enableKey(keyID: String) async throws {
        try await softDelete(keyID, .POST, "soft-delete-restore", what: "enable")
    }

    private func softDelete(_ keyID: String, _ method: HTTPMethod, _ action: String, what: String) async throws {
        let key = try KeyName(keyID)
        _ = try await read(key)  // a missing key is key_not_found, not "unsupported"
        do {
            _ = try await client.call(method, "\(key.path)/\(action)", method == .POST ? Empty() : nil, as: Empty.self, what: "\(what) key \(key.name)")
        } catch let e as KeyStoreError where e.code == .keyNotFound || e.code == .invalidArgument {
            // Vault answers 404 or 405 to a path its Transit does not have.
            throw KeyStoreError(.invalidArgument, "this server's Transit cannot \(what) a key (OpenBao's soft delete is missing): "
                                + "\(what) it through a gateway (--url), which keeps its own revocation for every replica; \(e.reason)")
        }
    }

    /// Transit deletes at once: Keyward keeps the waiting period (``deletion``).
    public func scheduleKeyDeletion(keyID: String, days: Int) async throws -> Date { throw Self.noDeletionSchedule }
    public func cancelKeyDeletion(keyID: String) async throws { throw Self.noDeletionSchedule }

    private static let noDeletionSchedule = KeyStoreError(
        .invalidArgument, "Vault Transit keeps no deletion schedule: schedule the deletion through a gateway, which keeps the waiting period and deletes the key when it ends")

    public var deletion: KeyDeletion { .immediate }

    private struct AllowDeletion: Encodable { var deletion_allowed = true }

    /// Allows the key's deletion (Transit refuses it otherwise), then deletes it with every
    /// version. Works on an OpenBao key that is soft-deleted (measured against the bundled `bao`).
    public func destroyKey(keyID: String) async throws {
        let key = try KeyName(keyID)
        do { _ = try await read(key) } catch let e as KeyStoreError where e.code == .keyNotFound { return }
        _ = try await client.call(.POST, "\(key.path)/config", AllowDeletion(), as: Empty.self, what: "allow deleting key \(key.name)")
        _ = try await client.call(.DELETE, key.path, nil as Empty?, as: Empty.self, what: "delete key \(key.name)")
        knownSince.withLock { $0[key] = nil }
    }

    private struct ListAnswer: Decodable { var keys: [String] }

    /// The keys of the `transit` mount.
    public func listKeys() async throws -> [KeyDescription] {
        let names: [String]
        do {
            names = try await client.call(.GET, "transit/keys?list=true", nil as Empty?, as: ListAnswer.self, what: "list keys")?.keys ?? []
        } catch let e as KeyStoreError where e.code == .keyNotFound {
            names = []  // Vault answers 404 to a list with nothing in it
        }
        var result: [KeyDescription] = []
        for name in names.sorted() { result.append(try await describe(keyID: name)) }
        return result
    }
}
