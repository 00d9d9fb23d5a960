import Crypto
import KeywardCrypto

/// The gateway's Ed25519 audit key: signs checkpoints of the audit chain's head. How its private
/// half is kept (sealed under a key-store key) is the caller's business; this type only holds it,
/// prints as `<redacted>` and hands the seed out for sealing.
public struct AuditSigner: Sendable, CustomStringConvertible, CustomReflectable {
    public var description: String { "AuditSigner(<redacted>)" }
    public var customMirror: Mirror { Mirror(self, children: [:]) }
    private let key: Curve25519.Signing.PrivateKey

    /// A new random key.
    public init() { key = Curve25519.Signing.PrivateKey() }

    /// The key of a 32-byte seed, as ``seed()`` returns it.
    public init(seed: SecretBytes) throws {
        key = try seed.withUnsafeBytes { try Curve25519.Signing.PrivateKey(rawRepresentation: $0) }
    }

    /// The public half, raw (32 bytes).
    public var publicKey: [UInt8] { Array(key.publicKey.rawRepresentation) }

    /// The private half's 32-byte seed, to seal it.
    public func seed() -> SecretBytes { SecretBytes(copying: key.rawRepresentation) }

    /// A checkpoint of the chain at `seq`, whose event hashes to `hash`, signed now.
    public func checkpoint(seq: Int64, hash: [UInt8], time: Int64) throws -> AuditCheckpoint {
        let signature = try key.signature(for: AuditCheckpoint.signedBytes(seq: seq, hash: hash, time: time))
        return AuditCheckpoint(seq: seq, hash: hash, time: time, publicKey: publicKey, signature: Array(signature))
    }
}
