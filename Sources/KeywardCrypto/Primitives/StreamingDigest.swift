import CKeywardOpenSSL
import Crypto

/// SHA-256 or SHA-384 over a whole message, through the system libcrypto: its SHA-512 core runs
/// about 40 % faster here than swift-crypto's, and hashing bounds the signed suite's throughput.
final class StreamingDigest {
    private let ctx: OpaquePointer
    let byteCount: Int

    init(bits: Int) {
        guard let ctx = kw_digest_new(Int32(bits)) else { fatalError("libcrypto has no SHA-\(bits)") }
        self.ctx = ctx
        byteCount = bits / 8
    }

    deinit { kw_digest_free(ctx) }

    func update(_ bytes: UnsafeRawBufferPointer) {
        guard !bytes.isEmpty else { return }
        guard kw_digest_update(ctx, bytes.baseAddress, bytes.count) == 1 else { fatalError("digest update failed") }
    }

    /// The digest; the context may not be used afterwards.
    func finalize() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: byteCount)
        guard kw_digest_final(ctx, &out) == 1 else { fatalError("digest final failed") }
        return out
    }
}

/// A digest of hash function `H` computed elsewhere, handed to swift-crypto's ECDSA, which signs
/// and verifies any `Digest` by its bytes.
struct Prehashed<H: HashFunction>: Digest {
    static var byteCount: Int { H.Digest.byteCount }
    let bytes: [UInt8]
    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R { try bytes.withUnsafeBytes(body) }
    func makeIterator() -> IndexingIterator<[UInt8]> { bytes.makeIterator() }
    var description: String { "\(H.self) digest" }
}
