import KeywardCrypto
import NIOCore
import NIOPosix

/// Ciphertext as it arrives: a request body's buffers, or a blob's reads (taken as they are, not
/// copied into a buffer of another kind).
protocol CiphertextChunk: Sendable {
    func withCiphertext<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R
}

extension ByteBuffer: CiphertextChunk {
    func withCiphertext<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R { try withUnsafeReadableBytes(body) }
}

extension Array: CiphertextChunk where Element == UInt8 {
    func withCiphertext<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R { try withUnsafeBytes(body) }
}

/// One ESDK message decrypted as its bytes arrive (an upload, a blob being read): its header first,
/// for the caller to unwrap the data key, then each frame's plaintext once that frame
/// authenticates. A fault (an altered or truncated message) is thrown where it is met, so a caller
/// must discard what it was given before (an upload is then aborted; a download ends without its
/// final chunk). Used by one task at a time.
final class StreamingDecryption: @unchecked Sendable {
    private var decryptor: MessageDecryptor
    /// The next ciphertext, nil at the end.
    private let read: () async throws -> (any CiphertextChunk)?

    init(options: DecryptionOptions, read: @escaping () async throws -> (any CiphertextChunk)?) {
        decryptor = MessageDecryptor(options: options)
        self.read = read
    }

    /// Reads until the header is in; returns the request for its data key.
    func header() async throws -> DecryptionMaterialsRequest {
        while true {
            if let request = decryptor.materialsRequest { return request }
            guard let chunk = try await read() else {
                try decryptor.finish()
                throw KeywardCryptoError(.truncatedMessage, "the message ends before its header")
            }
            try chunk.withCiphertext { try decryptor.update($0) }
        }
    }

    /// The message's ID, once the header is read.
    var messageID: [UInt8] { decryptor.header?.messageID ?? [] }

    func begin(with materials: DecryptionMaterials) throws {
        try decryptor.begin(with: materials)
    }

    /// The next authenticated plaintext, or nil at the end of a complete message.
    ///
    /// - Parameter pool: where to decrypt, if not on the calling thread: a download decrypts its
    ///   next chunk on NIO's blocking pool while its event loop writes the one before to the socket.
    func next(decryptingOn pool: NIOThreadPool? = nil) async throws -> ByteBuffer? {
        // Frames that authenticated already (those the header's chunk held) go out before more is read.
        let ready = drained()
        if ready.readableBytes > 0 { return ready }
        while true {
            guard let chunk = try await read() else {
                try decryptor.finish()
                let out = drained()
                return out.readableBytes > 0 ? out : nil
            }
            let out: ByteBuffer
            if let pool { out = try await pool.runIfActive { try self.open(chunk) } } else { out = try open(chunk) }
            if out.readableBytes > 0 { return out }
        }
    }

    /// The plaintext of the frames a chunk completes.
    private func open(_ chunk: any CiphertextChunk) throws -> ByteBuffer {
        try chunk.withCiphertext { try decryptor.update($0) }
        return drained()
    }

    private func drained() -> ByteBuffer {
        var out = ByteBuffer()
        decryptor.drain { out.writeBytes($0) }
        return out
    }
}
