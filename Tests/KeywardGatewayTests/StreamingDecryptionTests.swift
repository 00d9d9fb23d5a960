import Foundation
import KeywardCrypto
@testable import KeywardGateway
import KeywardStorage
import KeywardTesting
import NIOCore
import NIOPosix
import Synchronization
import Testing

/// A file's blob decrypted as a download does (``StreamingDecryption/forEachChunk(decryptingOn:ahead:_:)``):
/// from the folder store (read and decrypted on the pool, chunks ahead) and from a store whose
/// reads suspend (an object store's: decrypted one chunk ahead as they arrive).
@Suite("Streaming decryption of blobs", .serialized)
struct StreamingDecryptionTests {
    let dir = try! TemporaryDirectory()
    let keyring = try! RawAESKeyring(namespace: "test", name: "files", key: SecretBytes(randomCount: 32))
    static let context: EncryptionContext = ["tenant": "t", "file": "f"]
    /// Sixteen frames of 4 KiB per read (the server's 64 KiB frames scaled down): several reads,
    /// each opened in parallel by the decryptor's helpers.
    static let frameLength = 4096
    static let readSize = 16 * (frameLength + 32)

    /// Encrypts `plaintext` into blob `key` of `blobs`.
    func store(_ plaintext: [UInt8], as key: String, in blobs: FolderBlobStore) async throws {
        let materials = try await DefaultMaterialsManager(keyring: keyring).encryptionMaterials(
            for: EncryptionMaterialsRequest(encryptionContext: Self.context, suite: Vault.suite))
        var e = try MessageEncryptor(materials: materials, frameLength: Self.frameLength)
        var message: [UInt8] = []
        try plaintext.withUnsafeBytes { try e.update($0) }
        try e.finish()
        e.drain { message.append(contentsOf: $0) }
        let upload = try await blobs.upload(key)
        try await upload.write(message)
        try await upload.commit()
    }

    /// Everything `forEachChunk` gives for blob `key`, and what it threw.
    func download(_ key: String, from blobs: FolderBlobStore, local: Bool, failingAfter limit: Int = .max,
                  watched: Watched? = nil) async -> (bytes: [UInt8], chunks: Int, error: (any Error)?) {
        var bytes: [UInt8] = []
        var chunks = 0
        do {
            let stored = try await blobs.download(key)
            let blob = local ? watched.map { $0.watching(stored) } ?? stored : Suspending(stored)
            defer { blob.close() }
            let reading = StreamingDecryption(options: DecryptionOptions(requiredContext: Self.context, maxEncryptedDataKeys: 4),
                                              blob: blob, size: Self.readSize)
            watched?.stopped = { reading.stopped.load(ordering: .relaxed) }
            let request = try await reading.header()
            try reading.begin(with: try await DefaultMaterialsManager(keyring: keyring).decryptionMaterials(for: request))
            try await reading.forEachChunk(decryptingOn: .singleton, ahead: 2) { chunk in
                guard chunks < limit else { throw CancellationError() }
                chunks += 1
                bytes += chunk.readableBytesView
            }
            return (bytes, chunks, nil)
        } catch {
            return (bytes, chunks, error)
        }
    }

    @Test(arguments: [true, false])
    func givesThePlaintextInOrder(local: Bool) async throws {
        let blobs = try FolderBlobStore(root: dir.file("blobs"))
        for size in [0, 1, Self.frameLength, Self.readSize * 5 + 12_345] {
            let plaintext = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 11) }
            try await store(plaintext, as: "files/t/f\(size)", in: blobs)
            let (bytes, _, error) = await download("files/t/f\(size)", from: blobs, local: local)
            #expect(error == nil, "\(size) bytes: \(String(describing: error))")
            let same = bytes == plaintext
            #expect(same, "\(size) bytes: \(bytes.count) given")
        }
    }

    /// The chunks decrypted ahead are read one after another, never two at once, even when a
    /// read is slow enough for the jobs ahead to meet.
    @Test func aLocalBlobIsReadByOneJobAtATime() async throws {
        let blobs = try FolderBlobStore(root: dir.file("blobs"))
        let plaintext = (0..<(Self.readSize * 6)).map { UInt8(truncatingIfNeeded: $0 >> 3) }
        try await store(plaintext, as: "files/t/f", in: blobs)
        let watched = Watched()
        let (bytes, _, error) = await download("files/t/f", from: blobs, local: true, watched: watched)
        #expect(error == nil)
        let same = bytes == plaintext
        #expect(same)
        #expect(watched.reads >= 6 && watched.mostAtOnce == 1)
    }

    /// A batch's lines are read with `next()`, from a task on an event loop: the blob's blocking
    /// reads (and the decryption) go to the blocking pool, the header's as well, so that a slow
    /// disk does not stall the loop's connections.
    @Test func aLocalBlobIsNeverReadOnAnEventLoop() async throws {
        let blobs = try FolderBlobStore(root: dir.file("blobs"))
        let plaintext = (0..<(Self.readSize * 3 + 99)).map { UInt8(truncatingIfNeeded: $0 &* 13) }
        try await store(plaintext, as: "files/t/f", in: blobs)
        let watched = Watched()
        let blob = watched.watching(try await blobs.download("files/t/f"))
        defer { blob.close() }
        let reading = StreamingDecryption(options: DecryptionOptions(requiredContext: Self.context, maxEncryptedDataKeys: 4),
                                          blob: blob, size: Self.readSize)
        let materials = DefaultMaterialsManager(keyring: keyring)
        let (bytes, onLoop) = try await withTaskExecutorPreference(EventLoopTaskExecutor(MultiThreadedEventLoopGroup.singleton.next())) {
            let onLoop = MultiThreadedEventLoopGroup.currentEventLoop != nil
            try reading.begin(with: try await materials.decryptionMaterials(for: try await reading.header()))
            var bytes: [UInt8] = []
            while let chunk = try await reading.next() { bytes += chunk.readableBytesView }
            return (bytes, onLoop)
        }
        #expect(onLoop, "the task did not run on the event loop: the test would prove nothing")
        let same = bytes == plaintext
        #expect(same)
        #expect(watched.reads >= 4 && watched.readsOnEventLoops == 0, "\(watched.readsOnEventLoops) of \(watched.reads) reads on an event loop")
    }

    /// An altered frame in the middle: what came before it is given, nothing from it on, and the
    /// fault is thrown (the server then ends the response without its final chunk).
    @Test(arguments: [true, false])
    func stopsAtAnAlteredFrameHavingGivenOnlyWhatAuthenticated(local: Bool) async throws {
        let blobs = try FolderBlobStore(root: dir.file("blobs"))
        let plaintext = (0..<(Self.readSize * 6)).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        try await store(plaintext, as: "files/t/f", in: blobs)
        let path = dir.file("blobs/files/t/f")
        var blob = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let at = blob.count * 3 / 5
        blob[at] ^= 0x40
        try Data(blob).write(to: URL(fileURLWithPath: path))
        let (bytes, chunks, error) = await download("files/t/f", from: blobs, local: local)
        #expect((error as? KeywardCryptoError)?.code == .authenticationFailed, "\(String(describing: error))")
        #expect(chunks >= 2)
        #expect(bytes.count < plaintext.count * 3 / 5 && bytes.count % Self.frameLength == 0)
        let prefix = bytes == Array(plaintext.prefix(bytes.count))
        #expect(prefix)
    }

    /// A write that fails (the client went away) is what the caller gets, once the jobs ahead
    /// are done: the blob can then be closed under none.
    @Test(arguments: [true, false])
    func aFailingBodyStopsTheReading(local: Bool) async throws {
        let blobs = try FolderBlobStore(root: dir.file("blobs"))
        let plaintext = [UInt8](repeating: 7, count: Self.readSize * 8)
        try await store(plaintext, as: "files/t/f", in: blobs)
        let (bytes, chunks, error) = await download("files/t/f", from: blobs, local: local, failingAfter: 2)
        #expect(error is CancellationError, "\(String(describing: error))")
        let prefix = bytes == Array(plaintext.prefix(bytes.count))
        #expect(chunks == 2 && prefix)
        // Once it failed, only the job already reading reads (not the one queued behind it: 4 reads
        // without the stop), and nothing is read after the close. The third read (the job ahead of
        // the second chunk's failing write) is held until the reading has stopped, so that the
        // fourth job cannot start before the stop however the threads are scheduled (under load,
        // the failing write once came after it: CI, 2026-12-07).
        if local {
            let watched = Watched()
            watched.holdRead = 3
            let (_, chunks, error) = await download("files/t/f", from: blobs, local: true, failingAfter: 1, watched: watched)
            #expect(error is CancellationError && chunks == 1)
            try await Task.sleep(for: .milliseconds(60))  // a job left running would read by then
            #expect(watched.reads <= 3 && watched.readsAfterClose == 0, "\(watched.reads) reads")
        }
    }
}

/// A blob whose reads suspend, as an object store's do: it hides the folder store's local reads.
private final class Suspending: BlobDownload, @unchecked Sendable {
    let inner: any BlobDownload
    init(_ inner: any BlobDownload) { self.inner = inner }
    var size: Int { inner.size }
    func next(limit: Int) async throws -> [UInt8]? {
        await Task.yield()
        return try await inner.next(limit: limit)
    }
    func close() { inner.close() }
}

/// Runs a task's nonisolated code on an event loop's thread, as `keyward serve` does (NIO's loops
/// are its global executor).
private final class EventLoopTaskExecutor: TaskExecutor {
    let loop: any EventLoop
    init(_ loop: any EventLoop) { self.loop = loop }
    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}

/// Counts a local blob's reads, how many ran at once and how many came after its close; each read
/// takes 20 ms (long beside the microseconds a failing download takes to stop the jobs queued).
final class Watched: @unchecked Sendable {
    private let state = Mutex((reads: 0, now: 0, most: 0, closed: false, afterClose: 0, onLoops: 0))
    /// The read (1, 2, …) that waits, up to 5 s, until `stopped` says the reading has stopped.
    var holdRead = 0
    var stopped: @Sendable () -> Bool = { true }
    var reads: Int { state.withLock { $0.reads } }
    /// Reads made on an event loop's thread.
    var readsOnEventLoops: Int { state.withLock { $0.onLoops } }
    var mostAtOnce: Int { state.withLock { $0.most } }
    var readsAfterClose: Int { state.withLock { $0.afterClose } }

    func watching(_ blob: any BlobDownload) -> any BlobDownload { Local(blob as! any LocalBlobDownload, self) }

    private final class Local: LocalBlobDownload, @unchecked Sendable {
        let inner: any LocalBlobDownload
        let watch: Watched
        init(_ inner: any LocalBlobDownload, _ watch: Watched) { (self.inner, self.watch) = (inner, watch) }
        var size: Int { inner.size }
        func next(limit: Int) async throws -> [UInt8]? { try await inner.next(limit: limit) }
        func close() {
            watch.state.withLock { $0.closed = true }
            inner.close()
        }
        func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
            let n = watch.state.withLock { s in
                s.reads += 1
                if MultiThreadedEventLoopGroup.currentEventLoop != nil { s.onLoops += 1 }
                s.now += 1
                s.most = max(s.most, s.now)
                return s.reads
            }
            defer { watch.state.withLock { $0.now -= 1 } }
            if n == watch.holdRead {
                let end = ContinuousClock.now + .seconds(5)
                while !watch.stopped(), ContinuousClock.now < end { usleep(1_000) }
            }
            usleep(20_000)
            watch.state.withLock { s in if s.closed { s.afterClose += 1 } }
            return try inner.read(into: buffer)
        }
    }
}
