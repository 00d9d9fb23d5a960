import KeywardCrypto
import KeywardStorage
import NIOCore
import NIOPosix
import Synchronization

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
    private let source: Source
    /// A local blob's reads land here, one at a time (ciphertext: nothing to zeroize).
    private var scratch = UnsafeMutableRawBufferPointer(start: nil, count: 0)
    /// Set while a thread reads and decrypts a local blob: two at once would corrupt the message.
    private let busy = Atomic<Bool>(false)
    /// Set once ``forEachChunk(decryptingOn:ahead:_:)`` fails: the jobs still queued read nothing.
    /// (Not private: a test holds a read until it is set.)
    let stopped = Atomic<Bool>(false)

    private enum Source {
        /// The next chunk, nil at the end. Called by one task at a time, though not always the
        /// same one (``forEachChunk(decryptingOn:ahead:_:)``'s children).
        case chunks(() async throws -> (any CiphertextChunk)?)
        /// A local blob, read by the thread that decrypts, `size` bytes at a time.
        case local(any LocalBlobDownload, size: Int)
    }

    /// Decrypts chunks as `read` gives them, nil at the end.
    init(options: DecryptionOptions, read: @escaping () async throws -> (any CiphertextChunk)?) {
        decryptor = MessageDecryptor(options: options)
        source = .chunks(read)
    }

    /// Decrypts a blob, read `size` bytes at a time: a local one by the thread that decrypts
    /// (a blocking pool's, for ``forEachChunk(decryptingOn:ahead:_:)``), into one buffer kept for its reads.
    init(options: DecryptionOptions, blob: any BlobDownload, size: Int) {
        precondition(size > 0, "a blob is read in chunks of at least a byte")
        decryptor = MessageDecryptor(options: options)
        if let local = blob as? any LocalBlobDownload {
            source = .local(local, size: size)
        } else {
            source = .chunks { try await blob.next(limit: size) }
        }
    }

    deinit { scratch.deallocate() }

    /// Reads until the header is in; returns the request for its data key.
    func header() async throws -> DecryptionMaterialsRequest {
        while true {
            if let request = decryptor.materialsRequest { return request }
            guard try await feed() else {
                try decryptor.finish()
                throw KeywardCryptoError(.truncatedMessage, "the message ends before its header")
            }
        }
    }

    /// The message's ID, once the header is read.
    var messageID: [UInt8] { decryptor.header?.messageID ?? [] }

    func begin(with materials: DecryptionMaterials) throws {
        try decryptor.begin(with: materials)
    }

    /// The next authenticated plaintext, or nil at the end of a complete message. A local blob is
    /// read and decrypted on NIO's blocking pool (its reads block: on an event loop, a slow disk
    /// would stall every connection of that loop); arriving chunks on the calling thread.
    func next() async throws -> ByteBuffer? {
        if case .local = source { return try await NIOThreadPool.singleton.runIfActive { try self.readLocal() } }
        return try await nextChunk(decryptingOn: nil)
    }

    /// Hands each authenticated plaintext to `body`, in order, decrypted on `pool` while `body`
    /// takes the ones before (a download: its event loop writes to the socket meanwhile).
    ///
    /// A local blob is read and decrypted up to `ahead` chunks ahead of `body`, each chunk a job on
    /// the pool chained after the one before (so one runs at a time). With one chunk ahead, a write
    /// that took longer than a decryption left the pool idle, and one that took less left the
    /// socket idle: a 1 GiB download took 0.39–0.49 s so, 0.33–0.38 s with two ahead (and the
    /// read on the pool, into one buffer), alternated in one run. Chunks that arrive (an object
    /// store's) are decrypted one ahead, as they come. Returns at the end of a complete message;
    /// throws at a fault, or what `body` throws, once no job is running.
    func forEachChunk(decryptingOn pool: NIOThreadPool, ahead: Int, _ body: (ByteBuffer) async throws -> Void) async throws {
        guard case .local = source else {
            // One child at a time, so the decryptor is never shared; a failed `body` leaves the
            // group only once the chunk ahead is done with the blob.
            try await withThrowingTaskGroup(of: ByteBuffer?.self) { group in
                group.addTask { try await self.nextChunk(decryptingOn: pool) }
                while let plaintext = try await group.next() ?? nil {
                    group.addTask { try await self.nextChunk(decryptingOn: pool) }
                    try await body(plaintext)
                }
            }
            return
        }
        let loop = MultiThreadedEventLoopGroup.singleton.any()
        var steps: [EventLoopFuture<ByteBuffer?>] = []
        func step() {
            let run: @Sendable () -> EventLoopFuture<ByteBuffer?> = { pool.runIfActive(eventLoop: loop) { try self.readLocal() } }
            steps.append(steps.last.map { $0.flatMap { $0 == nil ? loop.makeSucceededFuture(nil) : run() } } ?? run())
        }
        var failure: (any Error)?
        do {
            for _ in 0..<max(1, ahead) { step() }
            while let plaintext = try await steps.removeFirst().get() {
                step()
                try await body(plaintext)
            }
        } catch {
            stopped.store(true, ordering: .relaxed)
            failure = error
        }
        for s in steps { _ = try? await s.get() }
        if let failure { throw failure }
    }

    /// The next plaintext of arriving chunks, each decrypted on `pool` (nil: the calling thread).
    private func nextChunk(decryptingOn pool: NIOThreadPool?) async throws -> ByteBuffer? {
        guard case .chunks(let read) = source else { return nil }
        // Frames that authenticated already (those the header's chunk held) go out before more is read.
        let ready = drained()
        if ready.readableBytes > 0 { return ready }
        while true {
            guard let chunk = try await read() else { return try end() }
            let out = if let pool { try await pool.runIfActive { try self.open(chunk) } } else { try open(chunk) }
            if out.readableBytes > 0 { return out }
        }
    }

    /// Reads and decrypts a local blob until a frame's plaintext is out (or gives the frames that
    /// authenticated already), or the end.
    private func readLocal() throws -> ByteBuffer? {
        let alreadyBusy = busy.exchange(true, ordering: .acquiring)
        precondition(!alreadyBusy, "a blob's decryption ran on two threads at once")
        defer { busy.store(false, ordering: .releasing) }
        if stopped.load(ordering: .relaxed) { throw CancellationError() }
        let ready = drained()
        if ready.readableBytes > 0 { return ready }
        while true {
            guard try feedLocal() else { return try end() }
            let out = drained()
            if out.readableBytes > 0 { return out }
        }
    }

    /// The next chunk of ciphertext into the decryptor; false at the end. A local blob's read runs
    /// on NIO's blocking pool, as in ``next()``.
    private func feed() async throws -> Bool {
        guard case .chunks(let read) = source else { return try await NIOThreadPool.singleton.runIfActive { try self.feedLocal() } }
        guard let chunk = try await read() else { return false }
        try chunk.withCiphertext { try decryptor.update($0) }
        return true
    }

    /// A local blob's next read (into `scratch`) into the decryptor; false at the end.
    private func feedLocal() throws -> Bool {
        guard case .local(let blob, let size) = source else { return false }
        if scratch.count == 0 { scratch = .allocate(byteCount: size, alignment: 16) }
        let n = try blob.read(into: scratch)
        guard n > 0 else { return false }
        try decryptor.update(UnsafeRawBufferPointer(rebasing: scratch[..<n]))
        return true
    }

    /// The message ends: the last plaintext, or nil; throws unless the message was complete.
    private func end() throws -> ByteBuffer? {
        try decryptor.finish()
        let out = drained()
        return out.readableBytes > 0 ? out : nil
    }

    /// The plaintext of the frames a chunk completes.
    private func open(_ chunk: any CiphertextChunk) throws -> ByteBuffer {
        try chunk.withCiphertext { try decryptor.update($0) }
        return drained()
    }

    private func drained() -> ByteBuffer {
        var out = ByteBuffer()
        decryptor.drain { bytes in
            out = ByteBufferAllocator().buffer(capacity: bytes.count)
            out.writeBytes(bytes)
        }
        return out
    }
}
