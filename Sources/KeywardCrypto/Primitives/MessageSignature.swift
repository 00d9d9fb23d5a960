import Crypto
import Foundation

/// The private half of a signed message's ECDSA key pair; made per message (or per cached data
/// key) and never stored.
public struct SigningKey: Sendable, CustomStringConvertible {
    let key: P384.Signing.PrivateKey

    /// A fresh P-384 key.
    public init() { key = P384.Signing.PrivateKey() }

    /// The base64 compressed public point stored under `aws-crypto-public-key`.
    public var publicKeyContextValue: [UInt8] {
        Array(key.publicKey.compressedRepresentation.base64EncodedString().utf8)
    }

    public var description: String { "<redacted>" }
}

/// The public key that verifies a message's footer, read from its encryption context.
public enum VerificationKey: Sendable {
    case p256(P256.Signing.PublicKey)
    case p384(P384.Signing.PublicKey)

    init(suite: AlgorithmSuite, contextValue: [UInt8]) throws {
        guard let raw = Data(base64Encoded: String(decoding: contextValue, as: UTF8.self)) else {
            throw KeywardCryptoError(.malformedMessage, "the message's public key is not base64")
        }
        do {
            switch suite.signature {
            case .ecdsaP256SHA256: self = .p256(try P256.Signing.PublicKey(compressedRepresentation: raw))
            case .ecdsaP384SHA384: self = .p384(try P384.Signing.PublicKey(compressedRepresentation: raw))
            case .none: preconditionFailure("unsigned suite")
            }
        } catch {
            throw KeywardCryptoError(.malformedMessage, "the message's public key is not a point on the suite's curve")
        }
    }
}

/// Hashes every byte of a message as it is written, then signs the digest.
struct MessageSigner {
    private let key: P384.Signing.PrivateKey
    private let hash = StreamingDigest(bits: 384)

    init(_ key: SigningKey) { self.key = key.key }

    func update(_ bytes: UnsafeRawBufferPointer) { hash.update(bytes) }

    /// The DER signature for the footer.
    func finalize() throws -> [UInt8] {
        do {
            return Array(try key.signature(for: Prehashed<SHA384>(bytes: hash.finalize())).derRepresentation)
        } catch {
            throw KeywardCryptoError(.internalError, "signing the message failed")
        }
    }
}

/// Hashes every byte of a message as it is read, then checks the footer.
struct MessageVerifier {
    private let key: VerificationKey
    private let hash: StreamingDigest

    init(_ key: VerificationKey) {
        self.key = key
        switch key {
        case .p256: hash = StreamingDigest(bits: 256)
        case .p384: hash = StreamingDigest(bits: 384)
        }
    }

    func update(_ bytes: UnsafeRawBufferPointer) { hash.update(bytes) }

    /// Checks the footer's DER signature; call once.
    func verify(_ der: UnsafeRawBufferPointer) -> Bool {
        switch key {
        case .p256(let k):
            guard let sig = try? P256.Signing.ECDSASignature(derRepresentation: der) else { return false }
            return k.isValidSignature(sig, for: Prehashed<SHA256>(bytes: hash.finalize()))
        case .p384(let k):
            guard let sig = try? P384.Signing.ECDSASignature(derRepresentation: der) else { return false }
            return k.isValidSignature(sig, for: Prehashed<SHA384>(bytes: hash.finalize()))
        }
    }
}
