import Dispatch
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One thread's AES-GCM context and AAD buffer for the frames of one message. EVP contexts are not
/// thread-safe, so each worker of a parallel batch has its own.
final class FrameCipher {
    private let cipher: AESGCMContext
    private var aad: BodyAAD

    init(key: SecretBytes, sealing: Bool, messageID: [UInt8]) throws {
        cipher = try AESGCMContext(key: key, sealing: sealing)
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

/// Spreads batches of whole frames over the machine's cores. Frames are independent under GCM and
/// their places in the output are known in advance, so workers write side by side without locks.
/// Small batches stay on the calling thread: a thread hop costs more than a few frames.
enum FrameParallelism {
    /// Worker count: the online cores, at most 4.
    static let workers: Int = max(1, min(Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))), 4))
    /// Plaintext bytes below which a batch is not split.
    static let minimumBatchBytes = 128 << 10
    /// Plaintext bytes per batch read from a positional source.
    static let batchBytes = 1 << 20

    /// Runs `body(i)` for i in 0..<parts, in parallel when parts > 1, and returns when all are done.
    /// Callers give each `i` its own cipher and its own disjoint output range, which is what makes
    /// sharing the closure across threads sound.
    static func run(_ parts: Int, _ body: (Int) -> Void) {
        guard parts > 1 else {
            body(0)
            return
        }
        withoutActuallyEscaping(body) { body in
            let shared = UncheckedSendable(value: body)
            DispatchQueue.concurrentPerform(iterations: parts) { shared.value($0) }
        }
    }

}

/// A batch's frames, handed out about 64 KiB at a time to whichever worker asks next: a core that
/// is held up (on a shared machine one often is) does less, instead of the whole batch waiting for
/// its fixed share.
final class FrameRuns: Sendable {
    private let next = Atomic<Int>(0)
    private let count: Int
    private let length: Int

    init(count: Int, frameLength: Int) {
        self.count = count
        length = max(1, (64 << 10) / frameLength)
    }

    /// The next run of frame indexes, or nil when all are taken.
    func take() -> Range<Int>? {
        let start = next.wrappingAdd(length, ordering: .relaxed).oldValue
        return start < count ? start..<min(start + length, count) : nil
    }
}

private struct UncheckedSendable<T>: @unchecked Sendable { let value: T }
