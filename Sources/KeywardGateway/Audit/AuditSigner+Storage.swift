import CKeywardOpenSSL
import Foundation
import KeywardAudit
import KeywardCrypto
import KeywardKeyStores
import KeywardStorage

/// Where the gateway keeps its audit signing key: the private half as an encrypted message under a
/// key-store key (`local:keyward-audit` by default), the public half in the clear next to it, for
/// `keyward audit verify`.
extension AuditSigner {
    static let context: EncryptionContext = ["keyward:purpose": "audit-signing"]

    /// The public key's file in a data folder: 64 hex digits.
    public static func publicKeyPath(folder: String) -> String { folder + "/audit-signing.pub" }
    static func privateKeyPath(folder: String) -> String { folder + "/audit-signing.key" }

    /// Where the sealed private half and the public half are kept.
    enum Home {
        /// `audit-signing.key` and `audit-signing.pub` in the data folder.
        case folder(String)
        /// The shared database's settings, so every replica signs with the same key.
        case settings(any SettingsStore)
    }

    static let privateSetting = "audit-signing.key"
    /// The public half's name in a database's settings: 32 raw bytes.
    public static let publicSetting = "audit-signing.pub"

    /// Loads the signing key, or makes one (creating the wrapping key in the local store if
    /// needed) on first start. Replicas starting together agree on the first one stored.
    static func loadOrCreate(home: Home, keyStores: KeyStores, keyReference: String) async throws -> (AuditSigner, created: Bool) {
        let reference = try KeyReference.parse(keyReference)
        let store = try keyStores.store(for: reference)
        let manager = DefaultMaterialsManager(keyring: KeyStoreKeyring(store: store, keyID: reference.keyID))
        func open(_ sealed: [UInt8]) async throws -> AuditSigner {
            var (seed, _) = try await Message.decrypt(sealed, materialsManager: manager,
                                                      options: DecryptionOptions(requiredContext: context, maxEncryptedDataKeys: 1))
            defer { seed.withUnsafeMutableBytes { kw_cleanse($0.baseAddress, $0.count) } }
            return try AuditSigner(seed: SecretBytes(copying: seed))
        }
        switch home {
        case .folder(let folder):
            if let sealed = FileManager.default.contents(atPath: privateKeyPath(folder: folder)) { return (try await open(Array(sealed)), false) }
        case .settings(let db):
            if let sealed = try await db.setting(privateSetting) {
                // The public half too, in case a start died between the two writes below.
                let signer = try await open(sealed)
                _ = try await db.setSettingIfAbsent(publicSetting, signer.publicKey)
                return (signer, false)
            }
        }
        if reference.scheme == "local" {
            do { _ = try await store.createKey(name: reference.keyID) } catch let e as KeyStoreError where e.code == .alreadyExists {}
        }
        let signer = AuditSigner()
        var raw = signer.seed().withUnsafeBytes { Array($0) }
        defer { raw.withUnsafeMutableBytes { kw_cleanse($0.baseAddress, $0.count) } }
        let sealed = try await Message.encrypt(raw, materialsManager: manager, context: context, suite: .aes256GCMHKDFSHA512CommitKey)
        switch home {
        case .folder(let folder):
            // The public half first: the private file's presence is what says the pair is complete.
            try FileSystem.writeAtomically(Data(Hex.encode(signer.publicKey).utf8 + [0x0A]), to: publicKeyPath(folder: folder), mode: 0o644)
            try FileSystem.writeAtomically(Data(sealed), to: privateKeyPath(folder: folder), mode: 0o600)
            return (signer, true)
        case .settings(let db):
            let stored = try await db.setSettingIfAbsent(privateSetting, sealed)
            let winner = stored == sealed ? signer : try await open(stored)
            _ = try await db.setSettingIfAbsent(publicSetting, winner.publicKey)
            return (winner, stored == sealed)
        }
    }

    /// Reads a public key file written by ``loadOrCreate``.
    public static func readPublicKey(_ path: String) throws -> [UInt8] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw GatewayError.config("cannot read the audit public key \(path)")
        }
        guard let key = Hex.decode(text.trimmingCharacters(in: .whitespacesAndNewlines)), key.count == 32 else {
            throw GatewayError.config("\(path) is not a 32-byte hex public key")
        }
        return key
    }
}
