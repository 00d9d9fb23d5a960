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

    /// The DER signature for the footer, always 103 bytes as the ESDK writes it: a signature whose
    /// DER is shorter gets s replaced by n − s (equally valid), or is made again.
    func finalize() throws -> [UInt8] {
        let digest = Prehashed<SHA384>(bytes: hash.finalize())
        do {
            for _ in 0..<128 {
                let signature = try key.signature(for: digest)
                if signature.derRepresentation.count == Self.signatureLength { return Array(signature.derRepresentation) }
                let raw = Array(signature.rawRepresentation)
                let negated = try P384.Signing.ECDSASignature(rawRepresentation: raw[..<48] + Self.subtract(Self.order, raw[48...]))
                if negated.derRepresentation.count == Self.signatureLength { return Array(negated.derRepresentation) }
            }
        } catch {
            throw KeywardCryptoError(.internalError, "signing the message failed")
        }
        throw KeywardCryptoError(.internalError, "no fixed-length signature after 128 tries")
    }

    static let signatureLength = 103
    /// The order n of the P-384 group.
    static let order: [UInt8] = Array(
        "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973".utf8
    ).chunked2().map { UInt8($0, radix: 16)! }

    /// a − b for equal-length big-endian numbers with a ≥ b.
    static func subtract(_ a: [UInt8], _ b: ArraySlice<UInt8>) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: a.count)
        var borrow = 0
        for (i, j) in zip(a.indices.reversed(), b.indices.reversed()) {
            let d = Int(a[i]) - Int(b[j]) - borrow
            out[i] = UInt8((d + 256) & 0xFF)
            borrow = d < 0 ? 1 : 0
        }
        return out
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

extension Array where Element == UInt8 {
    /// Pairs of characters, for parsing hex.
    fileprivate func chunked2() -> [String] {
        stride(from: 0, to: count, by: 2).map { String(decoding: self[$0..<Swift.min($0 + 2, count)], as: UTF8.self) }
    }
}
