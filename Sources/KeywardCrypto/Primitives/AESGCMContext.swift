import CKeywardOpenSSL

/// AES-GCM with the key schedule set up once and reused for every frame of a message.
///
/// Backed by the system libcrypto's EVP interface: it encrypts and decrypts in place in the
/// caller's buffers, so the frame loop allocates nothing (swift-crypto's `AES.GCM` returns fresh
/// `Data` per call, which profiles at several copies per frame).
final class AESGCMContext {
    static let ivLength = 12
    static let tagLength = 16

    private let ctx: OpaquePointer
    private let sealing: Bool

    init(key: SecretBytes, sealing: Bool) throws {
        guard let ctx = key.withUnsafeBytes({ k in
            kw_gcm_new(k.baseAddress!.assumingMemoryBound(to: UInt8.self), k.count, sealing ? 1 : 0)
        }) else {
            throw KeywardCryptoError(.invalidKey, "AES-GCM keys are 16, 24 or 32 bytes")
        }
        self.ctx = ctx
        self.sealing = sealing
    }

    deinit { kw_gcm_free(ctx) }

    /// Encrypts `input` into `output` (which may be the same memory) and writes the tag.
    func seal(iv: UnsafeRawBufferPointer, aad: UnsafeRawBufferPointer, input: UnsafeRawBufferPointer,
              output: UnsafeMutableRawPointer, tag: UnsafeMutableRawPointer) throws {
        precondition(iv.count == Self.ivLength && sealing)
        let ok = kw_gcm_seal(ctx, iv.u8, aad.u8, aad.count, input.u8, input.count,
                             output.assumingMemoryBound(to: UInt8.self), tag.assumingMemoryBound(to: UInt8.self))
        guard ok == 1 else { throw KeywardCryptoError(.internalError, "AES-GCM encryption failed") }
    }

    /// Decrypts and authenticates; returns false if the tag does not verify (discard `output` then).
    func open(iv: UnsafeRawBufferPointer, aad: UnsafeRawBufferPointer, input: UnsafeRawBufferPointer,
              output: UnsafeMutableRawPointer, tag: UnsafeRawBufferPointer) throws -> Bool {
        precondition(iv.count == Self.ivLength && tag.count == Self.tagLength && !sealing)
        switch kw_gcm_open(ctx, iv.u8, aad.u8, aad.count, input.u8, input.count,
                           output.assumingMemoryBound(to: UInt8.self), tag.u8) {
        case 1: return true
        case 0: return false
        default: throw KeywardCryptoError(.internalError, "AES-GCM decryption failed")
        }
    }
}

extension AESGCMContext {
    /// One-shot seal of a small value: returns ciphertext followed by the tag.
    static func seal(key: SecretBytes, iv: [UInt8], aad: [UInt8], plaintext: UnsafeRawBufferPointer) throws -> [UInt8] {
        let ctx = try AESGCMContext(key: key, sealing: true)
        var out = [UInt8](repeating: 0, count: plaintext.count + tagLength)
        try out.withUnsafeMutableBytes { o in
            try iv.withUnsafeBytes { ivp in
                try aad.withUnsafeBytes { a in
                    try ctx.seal(iv: ivp, aad: a, input: plaintext, output: o.baseAddress!,
                                 tag: o.baseAddress! + plaintext.count)
                }
            }
        }
        return out
    }

    /// One-shot open of ciphertext-then-tag into a new secret; nil if it does not authenticate.
    static func openSecret(key: SecretBytes, iv: [UInt8], aad: [UInt8], sealed: [UInt8]) throws -> SecretBytes? {
        guard sealed.count >= tagLength else { return nil }
        let ctx = try AESGCMContext(key: key, sealing: false)
        let n = sealed.count - tagLength
        var authentic = false
        let secret = try SecretBytes(count: n) { out in
            try sealed.withUnsafeBytes { s in
                try iv.withUnsafeBytes { ivp in
                    try aad.withUnsafeBytes { a in
                        authentic = try ctx.open(
                            iv: ivp, aad: a, input: UnsafeRawBufferPointer(rebasing: s[0..<n]),
                            output: out.baseAddress ?? UnsafeMutableRawPointer(mutating: s.baseAddress!),
                            tag: UnsafeRawBufferPointer(rebasing: s[n...]))
                    }
                }
            }
        }
        return authentic ? secret : nil
    }
}

extension UnsafeRawBufferPointer {
    /// The base address as bytes; a valid dummy pointer for empty buffers, which C may not receive as NULL.
    var u8: UnsafePointer<UInt8> {
        baseAddress.map { $0.assumingMemoryBound(to: UInt8.self) } ?? emptyBytePointer
    }
}

nonisolated(unsafe) private let emptyBytePointer: UnsafePointer<UInt8> = {
    let p = UnsafeMutablePointer<UInt8>.allocate(capacity: 1)
    p.initialize(to: 0)
    return UnsafePointer(p)
}()
