import Foundation
import KeywardCrypto
import Synchronization

/// The embedded key store: master keys, each with versions, their material encrypted
/// under a root key. Material cannot be exported; disabled and pending-deletion keys refuse every
/// operation; after the waiting period the material is destroyed.
///
/// Keys live in a ``LocalKeyBackend``: files in a folder (one machine) or a database table (every
/// replica). Writers hold the backend's lock, so several processes can share a store. Readers keep
/// decrypted key state in memory and re-read a key only when its stamp changes (a `stat`, or one
/// indexed query), which keeps an unwrap to that check and one AES-GCM open.
///
/// Wrapped data key layout: `0x01 || version (4) || IV (12) || ciphertext || tag (16)`, with AAD
/// `keyward-local-dek:NAME || serialized encryption context`.
public final class LocalKeyStore: KeyStore {
    public let scheme = "local"
    public let providerID = "keyward-local"
    public let backend: any LocalKeyBackend

    private let rootKey: SecretBytes
    private let now: @Sendable () -> Date
    private let cache = Mutex<[String: CachedKey]>([:])

    struct CachedKey: @unchecked Sendable {
        var stamp: String
        var file: LocalKeyFile
        var materials: [UInt32: SecretBytes]
    }

    /// Opens the store in `folder`, creating the folder, its header and (for a file source that
    /// does not exist yet) the root key on first use.
    public convenience init(folder: String, rootKey source: RootKeySource, now: @escaping @Sendable () -> Date = { Date() }) throws {
        let backend = try FileKeyBackend(folder: folder)
        self.init(backend: backend, rootKey: try backend.openRootKey(source), now: now)
    }

    private init(backend: any LocalKeyBackend, rootKey: SecretBytes, now: @escaping @Sendable () -> Date) {
        self.backend = backend
        self.rootKey = rootKey
        self.now = now
    }

    /// Opens the store kept in `backend`, creating its header on first use. A root key that does
    /// not open an existing store is refused with `storeCorrupt`, before anything is written.
    public static func open(backend: any LocalKeyBackend, rootKey source: RootKeySource,
                            now: @escaping @Sendable () -> Date = { Date() }) async throws -> LocalKeyStore {
        var (key, newHeader) = try RootKey.open(header: try await backend.header(), source: source)
        if let newHeader {
            // Another replica may have made the header first: then the root key must open theirs.
            let stored = try await backend.createHeader(newHeader)
            if stored != newHeader { key = try RootKey.open(header: stored, source: source).key }
        }
        return LocalKeyStore(backend: backend, rootKey: key, now: now)
    }

    /// Key names: 1–128 of letters, digits, `-`, `_`, `.`, not starting with a dot.
    public static func validateName(_ name: String) throws {
        let allowed = name.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2D || c == 0x5F || c == 0x2E
        }
        guard (1...128).contains(name.utf8.count), allowed, !name.hasPrefix(".") else {
            throw KeyStoreError(.invalidArgument, "a local key name is 1 to 128 letters, digits, '-', '_' or '.', not starting with '.'")
        }
    }

    // MARK: Cryptographic operations

    public func generateDataKey(keyID: String, length: Int, context: EncryptionContext) async throws -> (plaintext: SecretBytes, wrapped: WrappedKey) {
        let dataKey = SecretBytes(randomCount: length)
        return (dataKey, try await encrypt(keyID: keyID, plaintext: dataKey, context: context))
    }

    public func encrypt(keyID: String, plaintext: SecretBytes, context: EncryptionContext) async throws -> WrappedKey {
        let key = try await usableKey(keyID)
        guard let version = key.file.current?.version, let material = key.materials[version] else {
            throw KeyStoreError(.storeCorrupt, "local key \(keyID) has no usable version")
        }
        let iv = SecretBytes(randomCount: AESGCM.ivLength).withUnsafeBytes { Array($0) }
        var out: [UInt8] = [1]
        withUnsafeBytes(of: version.bigEndian) { out.append(contentsOf: $0) }
        out += iv
        out += try AESGCM.seal(key: material, iv: iv, aad: try Self.dataKeyAAD(keyID, context), secret: plaintext)
        return WrappedKey(ciphertext: out, keyID: keyID)
    }

    public func decrypt(keyID: String, ciphertext: [UInt8], context: EncryptionContext) async throws -> SecretBytes {
        guard ciphertext.count >= 1 + 4 + AESGCM.ivLength + AESGCM.tagLength, ciphertext[0] == 1 else {
            throw KeyStoreError(.invalidCiphertext, "not a data key wrapped by the local key store")
        }
        let version = ciphertext[1..<5].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        let key = try await usableKey(keyID)
        guard let material = key.materials[version] else {
            throw KeyStoreError(.invalidCiphertext, "local key \(keyID) has no version \(version)")
        }
        do {
            return try AESGCM.open(key: material, iv: Array(ciphertext[5..<17]), aad: try Self.dataKeyAAD(keyID, context),
                                   sealed: Array(ciphertext[17...]))
        } catch {
            throw KeyStoreError(.invalidCiphertext, "the data key was not wrapped by local key \(keyID) with this encryption context")
        }
    }

    static func dataKeyAAD(_ name: String, _ context: EncryptionContext) throws -> [UInt8] {
        Array("keyward-local-dek:\(name)".utf8) + (try context.serialized())
    }

    // MARK: Life cycle

    public func describe(keyID: String) async throws -> KeyDescription {
        describe(try await loaded(keyID).file)
    }

    public func createKey(name: String?) async throws -> KeyDescription {
        guard let name else { throw KeyStoreError(.invalidArgument, "a local key needs a name: local:NAME") }
        try Self.validateName(name)
        let created = now()
        var file = LocalKeyFile(name: name, created: created, state: .enabled, deletionDate: nil, versions: [])
        try addVersion(&file, at: created)
        try await backend.create(name, try LocalKeyFile.encoder.encode(file))
        return describe(file)
    }

    public func enableKey(keyID: String) async throws {
        try await modify(keyID) { file in
            guard file.state != .pendingDeletion else {
                throw KeyStoreError(.keyPendingDeletion, "local key \(keyID) is pending deletion; cancel the deletion first")
            }
            file.state = .enabled
        }
    }

    public func disableKey(keyID: String) async throws {
        try await modify(keyID) { file in
            guard file.state != .pendingDeletion else {
                throw KeyStoreError(.keyPendingDeletion, "local key \(keyID) is pending deletion")
            }
            file.state = .disabled
        }
    }

    public func rotateKey(keyID: String) async throws {
        try await modify(keyID) { [self] file in
            guard file.state == .enabled else {
                throw KeyStoreError(file.state == .disabled ? .keyDisabled : .keyPendingDeletion, "local key \(keyID) is \(file.state.rawValue)")
            }
            try addVersion(&file, at: now())
        }
    }

    public var deletion: KeyDeletion { .scheduled }

    public func scheduleKeyDeletion(keyID: String, days: Int) async throws -> Date {
        try Self.checkWaitingPeriod(days)
        let date = now().addingTimeInterval(Double(days) * 86_400)
        try await modify(keyID) { file in
            file.state = .pendingDeletion
            file.deletionDate = date
        }
        return date
    }

    public func cancelKeyDeletion(keyID: String) async throws {
        try await modify(keyID) { file in
            guard file.state == .pendingDeletion else {
                throw KeyStoreError(.invalidArgument, "local key \(keyID) is not pending deletion")
            }
            file.state = .disabled
            file.deletionDate = nil
        }
    }

    public func listKeys() async throws -> [KeyDescription] {
        var out: [KeyDescription] = []
        for name in try await backend.names() { out.append(describe(try await loaded(name).file)) }
        return out
    }

    // MARK: State

    private func describe(_ file: LocalKeyFile) -> KeyDescription {
        KeyDescription(reference: "local:\(file.name)", state: file.state, created: file.created,
                       deletionDate: file.deletionDate, versions: file.versions.count)
    }

    /// The key, checked usable for wrapping and unwrapping.
    private func usableKey(_ name: String) async throws -> CachedKey {
        let key = try await loaded(name)
        switch key.file.state {
        case .enabled: return key
        case .disabled: throw KeyStoreError(.keyDisabled, "local key \(name) is disabled")
        case .pendingDeletion: throw KeyStoreError(.keyPendingDeletion, "local key \(name) is pending deletion")
        case .destroyed: throw KeyStoreError(.keyDestroyed, "local key \(name) was destroyed")
        }
    }

    /// The key as stored now: from memory if its document is unchanged, else re-read and
    /// decrypted. A key whose deletion date has passed is destroyed here, on first sight.
    private func loaded(_ name: String) async throws -> CachedKey {
        try Self.validateName(name)
        guard let stamp = try await backend.stamp(name) else {
            throw KeyStoreError(.keyNotFound, "no local key \(name)")
        }
        if let hit = cache.withLock({ $0[name] }), hit.stamp == stamp, !isDue(hit.file) {
            return hit
        }
        guard let (document, readStamp) = try await backend.read(name) else {
            throw KeyStoreError(.keyNotFound, "no local key \(name)")
        }
        let file = try decode(document, name)
        if isDue(file) {
            try await backend.update(name) { [self] data in
                var file = try decode(data, name)
                guard isDue(file) else { return data }
                file.state = .destroyed
                for i in file.versions.indices { file.versions[i].material = nil }
                return try LocalKeyFile.encoder.encode(file)
            }
            cache.withLock { $0[name] = nil }
            return try await loaded(name)
        }
        var materials: [UInt32: SecretBytes] = [:]
        for v in file.versions {
            guard let sealed = v.material.flatMap({ Data(base64Encoded: $0) }), sealed.count == 12 + 32 + 16 else { continue }
            do {
                materials[v.version] = try AESGCM.open(
                    key: rootKey, iv: Array(sealed.prefix(12)), aad: LocalKeyFile.materialAAD(name: name, version: v.version),
                    sealed: Array(sealed.dropFirst(12)))
            } catch {
                throw KeyStoreError(.storeCorrupt, "local key \(name) version \(v.version) does not open with the root key")
            }
        }
        let fresh = CachedKey(stamp: readStamp, file: file, materials: materials)
        cache.withLock { $0[name] = fresh }
        return fresh
    }

    private func isDue(_ file: LocalKeyFile) -> Bool {
        file.state == .pendingDeletion && (file.deletionDate.map { $0 <= now() } ?? false)
    }

    private func decode(_ data: Data, _ name: String) throws -> LocalKeyFile {
        do {
            return try LocalKeyFile.decoder.decode(LocalKeyFile.self, from: data)
        } catch {
            throw KeyStoreError(.storeCorrupt, "the document of local key \(name) is not readable")
        }
    }

    /// Read, change and write a key under the backend's lock, so concurrent writers (threads,
    /// processes, replicas) serialise and none loses another's change.
    private func modify(_ name: String, _ change: @escaping @Sendable (inout LocalKeyFile) throws -> Void) async throws {
        _ = try await loaded(name)  // destroys a due key first, and reports a missing one
        try await backend.update(name) { [self] data in
            var file = try decode(data, name)
            guard file.state != .destroyed else { throw KeyStoreError(.keyDestroyed, "local key \(name) was destroyed") }
            try change(&file)
            return try LocalKeyFile.encoder.encode(file)
        }
        cache.withLock { $0[name] = nil }
    }

    private func addVersion(_ file: inout LocalKeyFile, at date: Date) throws {
        let version = (file.versions.last?.version ?? 0) + 1
        let material = SecretBytes(randomCount: 32)
        let iv = SecretBytes(randomCount: 12).withUnsafeBytes { Array($0) }
        let sealed = try AESGCM.seal(key: rootKey, iv: iv, aad: LocalKeyFile.materialAAD(name: file.name, version: version), secret: material)
        file.versions.append(.init(version: version, created: date, material: Data(iv + sealed).base64EncodedString()))
    }
}
