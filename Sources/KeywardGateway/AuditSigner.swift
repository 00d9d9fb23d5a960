import Crypto
import Foundation
import KeywardCrypto
import KeywardKeyStores
import KeywardStorage

/// The gateway's Ed25519 audit key: signs checkpoints of the audit chain's head. Its private half
/// is kept as an encrypted message under a key-store key (`local:keyward-audit` by default), its
/// public half in the clear next to it, for `keyward audit verify`.
public struct AuditSigner: Sendable, CustomStringConvertible, CustomReflectable {
    public var description: String { "AuditSigner(<redacted>)" }
    public var customMirror: Mirror { Mirror(self, children: [:]) }
    let key: Curve25519.Signing.PrivateKey
    public var publicKey: [UInt8] { Array(key.publicKey.rawRepresentation) }

    static let context: EncryptionContext = ["keyward:purpose": "audit-signing"]

    /// The public key's file in a data folder: 64 hex digits.
    public static func publicKeyPath(folder: String) -> String { folder + "/audit-signing.pub" }
    static func privateKeyPath(folder: String) -> String { folder + "/audit-signing.key" }

    /// Loads the signing key from the data folder, or makes one (creating the wrapping key in the
    /// local store if needed) on first start.
    static func loadOrCreate(folder: String, keyStores: KeyStores, keyReference: String) async throws -> (AuditSigner, created: Bool) {
        let reference = try KeyReference.parse(keyReference)
        let store = try keyStores.store(for: reference)
        let manager = DefaultMaterialsManager(keyring: KeyStoreKeyring(store: store, keyID: reference.keyID))
        let path = privateKeyPath(folder: folder)
        if let sealed = FileManager.default.contents(atPath: path) {
            let (seed, _) = try await Message.decrypt(Array(sealed), materialsManager: manager,
                                                      options: DecryptionOptions(requiredContext: context, maxEncryptedDataKeys: 1))
            defer { _ = seed }
            return (AuditSigner(key: try Curve25519.Signing.PrivateKey(rawRepresentation: seed)), false)
        }
        if reference.scheme == "local" {
            do { _ = try await store.createKey(name: reference.keyID) } catch let e as KeyStoreError where e.code == .alreadyExists {}
        }
        let key = Curve25519.Signing.PrivateKey()
        let sealed = try await Message.encrypt(Array(key.rawRepresentation), materialsManager: manager, context: context,
                                               suite: .aes256GCMHKDFSHA512CommitKey)
        try Self.write(Data(sealed), to: path, mode: 0o600)
        let signer = AuditSigner(key: key)
        try Self.write(Data(hex(signer.publicKey).utf8 + [0x0A]), to: publicKeyPath(folder: folder), mode: 0o644)
        return (signer, true)
    }

    func checkpoint(seq: Int64, hash: [UInt8], time: Int64) throws -> AuditCheckpoint {
        let signature = try key.signature(for: AuditCheckpoint.signedBytes(seq: seq, hash: hash, time: time))
        return AuditCheckpoint(seq: seq, hash: hash, time: time, publicKey: publicKey, signature: Array(signature))
    }

    /// Reads a public key file written by ``loadOrCreate``.
    public static func readPublicKey(_ path: String) throws -> [UInt8] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw GatewayError.config("cannot read the audit public key \(path)")
        }
        let digits = Array(text.trimmingCharacters(in: .whitespacesAndNewlines).utf8)
        guard digits.count == 64 else { throw GatewayError.config("\(path) is not a 32-byte hex public key") }
        var out: [UInt8] = []
        for i in stride(from: 0, to: 64, by: 2) {
            guard let b = UInt8(String(decoding: digits[i..<i + 2], as: UTF8.self), radix: 16) else {
                throw GatewayError.config("\(path) is not a 32-byte hex public key")
            }
            out.append(b)
        }
        return out
    }

    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        return String(decoding: bytes.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 15)]] }, as: UTF8.self)
    }

    private static func write(_ data: Data, to path: String, mode: Int) throws {
        let temporary = path + ".tmp"
        guard FileManager.default.createFile(atPath: temporary, contents: data, attributes: [.posixPermissions: mode]) else {
            throw GatewayError.config("cannot write \(temporary)")
        }
        guard rename(temporary, path) == 0 else { throw GatewayError.config("cannot move \(temporary) into place") }
    }
}
