import KeywardCrypto
import NIOCore

/// One ESDK message decrypted as its bytes arrive (an upload, a blob being read): its header first,
/// for the caller to unwrap the data key, then each frame's plaintext once that frame
/// authenticates. A fault (an altered or truncated message) is thrown where it is met, so a caller
/// must discard what it was given before (an upload is then aborted; a download ends without its
/// final chunk). Used by one task at a time.
final class StreamingDecryption: @unchecked Sendable {
    private var decryptor: MessageDecryptor
    /// The next ciphertext, nil at the end.
    private let read: () async throws -> ByteBuffer?

    init(options: DecryptionOptions, read: @escaping () async throws -> ByteBuffer?) {
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
            try chunk.withUnsafeReadableBytes { try decryptor.update($0) }
        }
    }

    /// The message's ID, once the header is read.
    var messageID: [UInt8] { decryptor.header?.messageID ?? [] }

    func begin(with materials: DecryptionMaterials) throws {
        try decryptor.begin(with: materials)
    }

    /// The next authenticated plaintext, or nil at the end of a complete message.
    func next() async throws -> ByteBuffer? {
        var out = ByteBuffer()
        while true {
            decryptor.drain { out.writeBytes($0) }
            if out.readableBytes > 0 { return out }
            guard let chunk = try await read() else {
                try decryptor.finish()
                decryptor.drain { out.writeBytes($0) }
                return out.readableBytes > 0 ? out : nil
            }
            try chunk.withUnsafeReadableBytes { try decryptor.update($0) }
        }
    }
}
