import Foundation
import KeywardCrypto

/// A KMIP key manager (KMIP 1.4 over mutual TLS) as a key store: `kmip:UID`, or `kmip:name=LABEL`
/// for the newest active key carrying that Name.
///
/// Data keys are wrapped by the server's AES-256-GCM Encrypt, the encryption context (its ESDK
/// serialization) as the additional authenticated data: key material never leaves the server.
/// The encrypted data key's provider ID is `kmip`, its provider info the reference's key ID, and
/// its ciphertext `01 ‖ uid length (2) ‖ uid ‖ IV (12) ‖ tag (16) ‖ ciphertext`, naming the key
/// that wrapped it so that older keys of a name keep unwrapping after a rotation.
public final class KMIPKeyStore: KeyStore {
    public let scheme = "kmip"
    public let providerID = "kmip"
    public let client: KMIPClient

    public init(client: KMIPClient) {
        self.client = client
    }

    public static func fromEnvironment() throws -> KMIPKeyStore {
        KMIPKeyStore(client: try KMIPClient(configuration: .fromEnvironment()))
    }

    /// A key ID: a unique identifier, or a Name.
    enum KeyName: Hashable {
        case uid(String)
        case name(String)

        init(_ keyID: String) throws {
            if keyID.hasPrefix("name=") {
                let label = String(keyID.dropFirst(5))
                guard !label.isEmpty, label.count <= 256, !label.contains(where: \.isNewline) else {
                    throw KeyStoreError(.invalidArgument, "a kmip key is kmip:UID or kmip:name=LABEL")
                }
                self = .name(label)
            } else {
                guard !keyID.isEmpty, keyID.count <= 256, keyID.allSatisfy({ $0.isLetter || $0.isNumber || "-_.:".contains($0) }) else {
                    throw KeyStoreError(.invalidArgument, "a kmip key is kmip:UID or kmip:name=LABEL")
                }
                self = .uid(keyID)
            }
        }
    }

    public func providerInfo(forKeyID keyID: String) throws -> String {
        _ = try KeyName(keyID)
        return keyID
    }

    // MARK: Server calls

    /// The server's failures to our codes; its messages name objects and states, never material.
    private func call(_ operation: KMIPOperation, _ payload: [TTLV]) async throws -> TTLV {
        do {
            return try await client.call(operation, payload)
        } catch let f as KMIPClient.Failure {
            throw f.keyStoreError(operation)
        }
    }

    private static func uid(_ uid: String) -> TTLV { TTLV(KMIPTag.uniqueIdentifier, .textString(uid)) }

    /// A unique identifier the server named, held to what a reference may name (it goes into
    /// encrypted data keys and errors).
    private static func serverUID(_ item: TTLV) throws -> String {
        guard let text = item.text, case .uid = try? KeyName(text) else {
            throw KeyStoreError(.keyUnavailable, "the KMIP server named a key with an identifier Keyward does not accept")
        }
        return text
    }

    private static func attribute(_ name: String, _ value: TTLV.Value) -> TTLV {
        TTLV(KMIPTag.attribute, [TTLV(KMIPTag.attributeName, .textString(name)), TTLV(KMIPTag.attributeValue, value)])
    }

    private static func nameValue(_ label: String) -> TTLV.Value {
        .structure([TTLV(KMIPTag.nameValue, .textString(label)), TTLV(KMIPTag.nameType, .enumeration(KMIPValue.nameTypeText))])
    }

    /// The unique identifiers of the keys named `label`.
    private func locate(_ label: String) async throws -> [String] {
        let payload = try await call(.locate, [Self.attribute("Name", Self.nameValue(label))])
        return try payload.all(KMIPTag.uniqueIdentifier).map(Self.serverUID)
    }

    private struct Attributes {
        var state: KMIPValue.State?
        var initialDate: Int64?
        var names: [String] = []

        /// From a Get Attributes answer's payload.
        init(_ payload: TTLV) {
            for attribute in payload.all(KMIPTag.attribute) {
                guard let name = attribute[KMIPTag.attributeName]?.text, let value = attribute[KMIPTag.attributeValue] else { continue }
                if name == "State", let raw = value.enumeration {
                    state = KMIPValue.State(rawValue: raw)
                } else if name == "Initial Date" {
                    initialDate = value.dateTime
                } else if name == "Name", let label = value[KMIPTag.nameValue]?.text {
                    names.append(label)
                }
            }
        }
    }

    private func attributes(_ uid: String) async throws -> Attributes {
        Attributes(try await call(.getAttributes, Self.attributesPayload(uid)))
    }

    private static func attributesPayload(_ uid: String) -> [TTLV] {
        [
            Self.uid(uid),
            TTLV(KMIPTag.attributeName, .textString("State")),
            TTLV(KMIPTag.attributeName, .textString("Initial Date")),
            TTLV(KMIPTag.attributeName, .textString("Name")),
        ]
    }

    /// The keys of a reference, newest first, with their attributes.
    private func versions(_ key: KeyName) async throws -> [(uid: String, attributes: Attributes)] {
        switch key {
        case .uid(let uid):
            return [(uid, try await attributes(uid))]
        case .name(let label):
            var found: [(uid: String, attributes: Attributes, order: Int)] = []
            for (i, uid) in try await locate(label).enumerated() { found.append((uid, try await attributes(uid), i)) }
            guard !found.isEmpty else { throw KeyStoreError(.keyNotFound, "the KMIP server has no key named \(label)") }
            // Newest first: by Initial Date, which has whole seconds; within one second by the UID's
            // number where the server numbers its objects (PyKMIP), else as Locate listed them.
            let numbered = found.allSatisfy { Int($0.uid) != nil }
            return found.sorted { a, b in
                let (da, db) = (a.attributes.initialDate ?? 0, b.attributes.initialDate ?? 0)
                if da != db { return da > db }
                return numbered ? Int(a.uid)! > Int(b.uid)! : a.order < b.order
            }.map { ($0.uid, $0.attributes) }
        }
    }

    /// The key that wraps now: the newest of a name, which must be active.
    private func current(_ key: KeyName) async throws -> String {
        if case .uid(let uid) = key { return uid }  // the server refuses it if it is not active
        let newest = try await versions(key)[0]
        guard newest.attributes.state == .active else {
            throw KeyStoreError(.keyDisabled, "the newest KMIP key named \(key) is not active")
        }
        return newest.uid
    }

    // MARK: Wrapping

    /// AES-GCM with a 16-byte tag; fields in the specification's order, which servers parse by.
    private static func gcm() -> TTLV {
        TTLV(KMIPTag.cryptographicParameters, [
            TTLV(KMIPTag.blockCipherMode, .enumeration(KMIPValue.modeGCM)),
            TTLV(KMIPTag.cryptographicAlgorithm, .enumeration(KMIPValue.algorithmAES)),
            TTLV(KMIPTag.tagLength, .integer(16)),
        ])
    }

    /// An Encrypt request's payload (separate for a test against a reference client's bytes).
    static func encryptPayload(uid: String, plaintext: [UInt8], iv: [UInt8], additionalData: [UInt8]) -> [TTLV] {
        [
            Self.uid(uid), Self.gcm(),
            TTLV(KMIPTag.data, .byteString(plaintext)),
            TTLV(KMIPTag.ivCounterNonce, .byteString(iv)),
            TTLV(KMIPTag.authenticatedEncryptionAdditionalData, .byteString(additionalData)),
        ]
    }

    /// A data key made here (the system CSPRNG) and wrapped by the server: one call.
    public func generateDataKey(keyID: String, length: Int, context: EncryptionContext) async throws -> (plaintext: SecretBytes, wrapped: WrappedKey) {
        let key = SecretBytes(randomCount: length)
        return (key, try await encrypt(keyID: keyID, plaintext: key, context: context))
    }

    public func encrypt(keyID: String, plaintext: SecretBytes, context: EncryptionContext) async throws -> WrappedKey {
        let uid = try await current(try KeyName(keyID))
        let iv = SecretBytes(randomCount: 12).withUnsafeBytes { Array($0) }
        let payload = try await call(.encrypt, Self.encryptPayload(
            uid: uid, plaintext: plaintext.withUnsafeBytes { Array($0) }, iv: iv, additionalData: try context.serialized()))
        guard let ciphertext = payload[KMIPTag.data]?.bytes, ciphertext.count == plaintext.count,
              let tag = payload[KMIPTag.authenticatedEncryptionTag]?.bytes, tag.count == 16 else {
            throw KeyStoreError(.keyUnavailable, "the KMIP server's Encrypt answer lacks the ciphertext or the GCM tag")
        }
        // A server may choose its own IV and return it.
        let usedIV = payload[KMIPTag.ivCounterNonce]?.bytes ?? iv
        guard usedIV.count == 12 else { throw KeyStoreError(.keyUnavailable, "the KMIP server used an IV of \(usedIV.count) bytes") }
        return WrappedKey(ciphertext: Blob(uid: uid, iv: usedIV, tag: tag, ciphertext: ciphertext).bytes, keyID: keyID)
    }

    public func decrypt(keyID: String, ciphertext: [UInt8], context: EncryptionContext) async throws -> SecretBytes {
        let key = try KeyName(keyID)
        let blob = try Blob(ciphertext)
        // The blob names its key; it must be the reference's (a UID), or one carrying its Name,
        // lest a forged data key name a key of someone else's choosing.
        let attributes: Attributes
        switch key {
        case .uid(let uid):
            guard blob.uid == uid else { throw KeyStoreError(.invalidCiphertext, "wrapped by another KMIP key") }
            attributes = try await self.attributes(uid)
        case .name(let label):
            attributes = try await self.attributes(blob.uid)
            guard attributes.names.contains(label) else { throw KeyStoreError(.invalidCiphertext, "wrapped by a KMIP key not named \(label)") }
        }
        // KMIP lets a deactivated key still decrypt; Keyward's disable means it may not.
        switch attributes.state {
        case .active: break
        case .destroyed, .destroyedCompromised: throw KeyStoreError(.keyDestroyed, "the KMIP key \(blob.uid) was destroyed")
        default: throw KeyStoreError(.keyDisabled, "the KMIP key \(blob.uid) is not active")
        }
        let payload = try await call(.decrypt, Self.decryptPayload(blob, additionalData: try context.serialized()))
        guard let plaintext = payload[KMIPTag.data]?.bytes, plaintext.count == blob.ciphertext.count else {
            throw KeyStoreError(.keyUnavailable, "the KMIP server's Decrypt answer lacks the plaintext")
        }
        return SecretBytes(copying: plaintext)
    }

    private static func decryptPayload(_ blob: Blob, additionalData: [UInt8]) -> [TTLV] {
        [
            Self.uid(blob.uid), Self.gcm(),
            TTLV(KMIPTag.data, .byteString(blob.ciphertext)),
            TTLV(KMIPTag.ivCounterNonce, .byteString(blob.iv)),
            TTLV(KMIPTag.authenticatedEncryptionAdditionalData, .byteString(additionalData)),
            TTLV(KMIPTag.authenticatedEncryptionTag, .byteString(blob.tag)),
        ]
    }

    /// The encoded requests an unwrap of `wrapped` sends (Get Attributes, then Decrypt), for
    /// measuring the bare round trips (`KMIPClient.roundTrip`) that its own work is compared with.
    package static func unwrapRequests(_ wrapped: [UInt8], context: EncryptionContext) throws -> [[UInt8]] {
        let blob = try Blob(wrapped)
        return [
            KMIPClient.request(.getAttributes, attributesPayload(blob.uid)).encoded,
            KMIPClient.request(.decrypt, decryptPayload(blob, additionalData: try context.serialized())).encoded,
        ]
    }

    /// A wrapped data key as stored in the encrypted data key.
    struct Blob {
        var uid: String
        var iv: [UInt8]
        var tag: [UInt8]
        var ciphertext: [UInt8]

        init(uid: String, iv: [UInt8], tag: [UInt8], ciphertext: [UInt8]) {
            self.uid = uid
            self.iv = iv
            self.tag = tag
            self.ciphertext = ciphertext
        }

        init(_ bytes: [UInt8]) throws {
            guard bytes.count >= 3, bytes[0] == 1 else { throw KeyStoreError(.invalidCiphertext, "not a KMIP-wrapped data key") }
            let n = Int(bytes[1]) << 8 | Int(bytes[2])
            guard bytes.count >= 3 + n + 28 + 1, let uid = String(validating: bytes[3..<(3 + n)], as: UTF8.self) else {
                throw KeyStoreError(.invalidCiphertext, "a KMIP-wrapped data key that is cut short")
            }
            self.uid = uid
            iv = Array(bytes[(3 + n)..<(15 + n)])
            tag = Array(bytes[(15 + n)..<(31 + n)])
            ciphertext = Array(bytes[(31 + n)...])
        }

        var bytes: [UInt8] {
            let u = Array(uid.utf8)
            return [1, UInt8(u.count >> 8), UInt8(u.count & 0xFF)] + u + iv + tag + ciphertext
        }
    }

    // MARK: Life cycle

    public func describe(keyID: String) async throws -> KeyDescription {
        Self.description("kmip:\(keyID)", try await versions(try KeyName(keyID)).map(\.attributes))
    }

    /// The newest version's state and creation; how many versions there are.
    private static func description(_ reference: String, _ versions: [Attributes]) -> KeyDescription {
        let newest = versions[0]
        let state: KeyState = switch newest.state {
        case .active: .enabled
        case .destroyed, .destroyedCompromised: .destroyed
        default: .disabled
        }
        return KeyDescription(reference: reference, state: state,
                              created: newest.initialDate.map { Date(timeIntervalSince1970: Double($0)) }, versions: versions.count)
    }

    /// Creates an active AES-256 key for encrypt and decrypt: `name=LABEL` names it (refused if a
    /// key already has that Name); nil leaves it unnamed, known by the UID printed.
    public func createKey(name: String?) async throws -> KeyDescription {
        var label: String?
        if let name {
            guard case .name(let l) = try KeyName(name) else {
                throw KeyStoreError(.invalidArgument, "the server assigns UIDs: create kmip:name=LABEL, or kmip for an unnamed key")
            }
            guard try await locate(l).isEmpty else { throw KeyStoreError(.alreadyExists, "the KMIP server already has a key named \(l)") }
            label = l
        }
        let uid = try await createActive(label)
        return try await describe(keyID: label.map { "name=\($0)" } ?? uid)
    }

    private func createActive(_ label: String?) async throws -> String {
        var attributes = [
            Self.attribute("Cryptographic Algorithm", .enumeration(KMIPValue.algorithmAES)),
            Self.attribute("Cryptographic Length", .integer(256)),
            Self.attribute("Cryptographic Usage Mask", .integer(KMIPValue.usageEncrypt | KMIPValue.usageDecrypt)),
        ]
        if let label { attributes.append(Self.attribute("Name", Self.nameValue(label))) }
        let payload = try await call(.create, [
            TTLV(KMIPTag.objectType, .enumeration(KMIPValue.objectTypeSymmetricKey)),
            TTLV(KMIPTag.templateAttribute, attributes),
        ])
        guard let item = payload[KMIPTag.uniqueIdentifier] else {
            throw KeyStoreError(.keyUnavailable, "the KMIP server's Create answer lacks the new key's UID")
        }
        let uid = try Self.serverUID(item)
        do {
            _ = try await call(.activate, [Self.uid(uid)])
        } catch {
            // Leave no pre-active key behind under the name (a retry would find it "existing").
            _ = try? await call(.destroy, [Self.uid(uid)])
            throw error
        }
        return uid
    }

    /// A new key carrying the same Name, which wraps from now on; the older keys of the name still
    /// unwrap. (PyKMIP's server, which the tests use, has no Re-key; a new key under the name is
    /// what every server supports.) A key named only by UID cannot rotate.
    public func rotateKey(keyID: String) async throws {
        guard case .name(let label) = try KeyName(keyID) else {
            throw KeyStoreError(.invalidArgument, "only a key referenced by name (kmip:name=LABEL) can rotate: a new key takes the name")
        }
        // key_not_found if there is none; a name all of whose keys were revoked stays disabled.
        guard try await versions(.name(label)).contains(where: { $0.attributes.state == .active || $0.attributes.state == .preActive }) else {
            throw KeyStoreError(.keyDisabled, "every KMIP key named \(label) is revoked: a disabled key does not rotate back to life")
        }
        _ = try await createActive(label)
    }

    /// Revokes every key of the reference (cessation of operation): the server then refuses to
    /// encrypt with them, and Keyward refuses to unwrap with them. KMIP has no way back.
    public func disableKey(keyID: String) async throws {
        // A pre-active key is unusable already, and KMIP revokes it only as compromised.
        for (uid, attributes) in try await versions(try KeyName(keyID)) where attributes.state == .active {
            try await revoke(uid)
        }
    }

    private func revoke(_ uid: String) async throws {
        _ = try await call(.revoke, [
            Self.uid(uid),
            TTLV(KMIPTag.revocationReason, [TTLV(KMIPTag.revocationReasonCode, .enumeration(KMIPValue.revocationCessationOfOperation))]),
        ])
    }

    public func enableKey(keyID: String) async throws {
        throw KeyStoreError(.invalidArgument, "a revoked KMIP key cannot become active again (KMIP has no such transition); create a new key and re-key the tenants onto it")
    }

    /// KMIP's Destroy is immediate: Keyward keeps the waiting period (``deletion``).
    public func scheduleKeyDeletion(keyID: String, days: Int) async throws -> Date { throw Self.noDeletionSchedule }
    public func cancelKeyDeletion(keyID: String) async throws { throw Self.noDeletionSchedule }

    private static let noDeletionSchedule = KeyStoreError(
        .invalidArgument, "a KMIP server keeps no deletion schedule: schedule the deletion through a gateway, which keeps the waiting period and destroys the key when it ends")

    public var deletion: KeyDeletion { .immediate }

    /// Destroys every key of the reference, revoking first those still active (KMIP destroys no
    /// active key; a pre-active one it destroys as it is). A reference the server no longer knows is already destroyed.
    public func destroyKey(keyID: String) async throws {
        let versions: [(uid: String, attributes: Attributes)]
        do { versions = try await self.versions(try KeyName(keyID)) } catch let e as KeyStoreError where e.code == .keyNotFound { return }
        for (uid, attributes) in versions {
            switch attributes.state {
            case .destroyed, .destroyedCompromised: continue
            case .active: try await revoke(uid)
            default: break
            }
            _ = try await call(.destroy, [Self.uid(uid)])
        }
    }

    /// Every symmetric key the server shows this client, by UID.
    public func listKeys() async throws -> [KeyDescription] {
        let payload = try await call(.locate, [Self.attribute("Object Type", .enumeration(KMIPValue.objectTypeSymmetricKey))])
        var result: [KeyDescription] = []
        for uid in try payload.all(KMIPTag.uniqueIdentifier).map(Self.serverUID) {
            let a = try await attributes(uid)
            result.append(Self.description("kmip:\(uid)" + (a.names.first.map { " (name=\($0))" } ?? ""), [a]))
        }
        return result
    }
}
