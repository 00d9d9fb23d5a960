#if canImport(Glibc)
import Glibc
#endif

/// One thread's AES-GCM context and AAD buffer for the frames of one message. EVP contexts are not
/// thread-safe, so each worker of a parallel batch has its own.
final class FrameCipher {
    private let cipher: AESGCMContext
    private var aad: BodyAAD

    convenience init(key: SecretBytes, sealing: Bool, messageID: [UInt8]) throws {
        try self.init(cipher: AESGCMContext(key: key, sealing: sealing), messageID: messageID)
    }

    /// Frames through a context already made with the content key (the one that checked the
    /// header: a context per message less, which a short record notices).
    init(cipher: AESGCMContext, messageID: [UInt8]) {
        self.cipher = cipher
        aad = BodyAAD(messageID: messageID)
    }

    /// The header's authentication tag: GCM over no plaintext, IV zero, the header body as AAD.
    func headerTag(_ headerBody: [UInt8], into tag: UnsafeMutableRawPointer) throws {
        let zeroIV: (UInt64, UInt32) = (0, 0)
        try withUnsafeBytes(of: zeroIV) { iv in
            try headerBody.withUnsafeBytes { aad in
                try cipher.seal(iv: UnsafeRawBufferPointer(rebasing: iv[0..<12]), aad: aad,
                                input: UnsafeRawBufferPointer(start: nil, count: 0), output: tag, tag: tag)
            }
        }
    }

    /// Writes a whole frame (sequence, IV, ciphertext, tag; final frames with their marker and
    /// length) at `p`; returns its length.
    func seal(_ plaintext: UnsafeRawBufferPointer, sequence: UInt32, final: Bool, to p: UnsafeMutableRawPointer) throws -> Int {
        let n = plaintext.count
        var q = p
        if final {
            writeUInt32(UInt32.max, to: q)
            q += 4
        }
        writeUInt32(sequence, to: q)
        writeFrameIV(sequence, to: q + 4)
        let iv = UnsafeRawBufferPointer(start: q + 4, count: 12)
        q += 16
        if final {
            writeUInt32(UInt32(n), to: q)
            q += 4
        }
        let cipher = self.cipher
        try aad.with(final ? .finalFrame : .frame, sequence: sequence, length: UInt64(n)) { a in
            try cipher.seal(iv: iv, aad: a, input: plaintext, output: q, tag: q + n)
        }
        return (q - p) + n + 16
    }

    /// Opens the regular frames `run` of a batch laid out from `base` (`16 + frameLength + 16`
    /// bytes each, the first numbered `first`), frame `j` into `out + j * frameLength`. Returns the
    /// first frame that is out of order or does not authenticate; nil when all open.
    func openFrames(_ run: Range<Int>, at base: UnsafeRawPointer, frameLength: Int, first: UInt32,
                    to out: UnsafeMutableRawPointer) -> Int? {
        let per = 16 + frameLength + 16
        for j in run {
            let f = base + j * per
            let sequence = UInt32(bigEndian: f.loadUnaligned(as: UInt32.self))
            guard sequence == first + UInt32(j),
                  (try? open(.frame, sequence: sequence, iv: UnsafeRawBufferPointer(start: f + 4, count: 12),
                             content: UnsafeRawBufferPointer(start: f + 16, count: frameLength),
                             tag: UnsafeRawBufferPointer(start: f + 16 + frameLength, count: 16),
                             to: out + j * frameLength)) == true else { return j }
        }
        return nil
    }

    /// Decrypts one frame's or body's content into `output`; false if it does not authenticate.
    func open(_ kind: BodyAAD.Kind, sequence: UInt32, iv: UnsafeRawBufferPointer, content: UnsafeRawBufferPointer,
              tag: UnsafeRawBufferPointer, to output: UnsafeMutableRawPointer) throws -> Bool {
        let cipher = self.cipher
        return try aad.with(kind, sequence: sequence, length: UInt64(content.count)) { a in
            try cipher.open(iv: iv, aad: a, input: content, output: output, tag: tag)
        }
    }
}
