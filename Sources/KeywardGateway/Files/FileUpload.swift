import KeywardAudit
import KeywardCrypto
import KeywardStorage
import NIOCore
import NIOPosix
import Synchronization

/// One file being uploaded: its encryptor and its blob.
///
/// Chunks are copied into batches of 1 MiB, which a thread of NIO's blocking pool encrypts and
/// appends to the blob, in order, while the request's event loop fills the next (a two-stage
/// pipeline, see ``UploadBatches``): the loop's thread had done the receiving, the parsing, the
/// encryption and the blob's file writes one after another, and was an upload's bottleneck (and
/// a hop per chunk, tens of KiB as they arrive, would cost more than it frees). Copied, not kept
/// as they are: a chunk is a slice of a read buffer of up to 1 MiB, and a slow client's small
/// reads would otherwise pin a MiB each. The batches are the upload's own, reused from start to
/// end and wiped when it ends: a new buffer per MiB cost a page fault per 4 KiB of the file (about
/// half of an upload's faults). Only the sealer touches the encryptor and appends to the blob
/// while it runs; the last batch (and the message's end) is sealed once it has stopped.
final class FileUpload: @unchecked Sendable {
    let id: String
    /// The file's purpose. An upload whose file part came before its purpose field starts with
    /// ``Files/pendingPurpose``, under which its blob is sealed, and is given the purpose read
    /// after the file; ``Files/finish(_:expiresAfter:tenant:scope:)`` then re-heads the blob.
    var purpose: String
    /// The data key, kept (only) while the blob's context names ``Files/pendingPurpose``.
    private(set) var pendingDataKey: SecretBytes?
    let filename: String
    /// The master key its data key is wrapped under.
    let key: String
    let limit: Int
    let blob: any BlobUpload
    private var encryptor: MessageEncryptor
    private var size = 0
    private let batches = (0..<FileUpload.batchCount).map { _ in
        GrowableBuffer(capacity: FileUpload.batchBytes, holdsSecrets: true)
    }
    /// The batch the request's loop fills.
    private var gathering = 0
    private let pipeline = Mutex(UploadBatches<CheckedContinuation<Int?, any Error>>(count: FileUpload.batchCount))

    /// Bytes handed to the pool at a time.
    static let batchBytes = 1 << 20
    /// Batches: one filling, the others full or being sealed.
    static let batchCount = 3
    /// Batches one pool job seals before it gives its thread back to other blocking work (the
    /// pool has a thread per core, and downloads decrypt there too).
    static let batchesPerJob = 8

    /// Takes the file's own data key (one key-store call, audited) and starts its blob. A nil
    /// `purpose`: not read yet (see ``purpose``).
    init(id: String, purpose: String?, filename: String, tenant: Tenant, scope: AuditScope, files: Files) async throws {
        self.id = id
        self.purpose = purpose ?? Files.pendingPurpose
        self.filename = filename
        key = tenant.key
        limit = files.sizeLimit
        let context = Files.context(tenant: tenant.name, id: id, purpose: self.purpose)
        let materials = try await AuditScope.$current.withValue(scope) {
            try await files.vault.uncachedManager(forKey: tenant.key).encryptionMaterials(for: EncryptionMaterialsRequest(
                encryptionContext: context, suite: Vault.suite, plaintextLength: nil))
        }
        pendingDataKey = purpose == nil ? materials.plaintextDataKey : nil
        encryptor = try MessageEncryptor(materials: materials, frameLength: Files.frameLength)
        blob = try await files.blobs.upload(Files.blobKey(tenant: tenant.name, id: id))
    }

    func write(_ bytes: ByteBuffer) async throws {
        size += bytes.readableBytes
        guard size <= limit else { throw Files.tooLarge(limit) }
        var rest = bytes
        while rest.readableBytes > 0 {
            let batch = batches[gathering]
            let n = min(rest.readableBytes, Self.batchBytes - batch.count)
            rest.withUnsafeReadableBytes { batch.append(UnsafeRawBufferPointer(rebasing: $0[..<n])) }
            rest.moveReaderIndex(forwardBy: n)
            guard batch.count == Self.batchBytes else { continue }
            try await handOver()
        }
    }

    /// Hands the full batch to the sealer, sends what the blob holds in whole pieces (S3's parts),
    /// and takes an empty batch, waiting for one if none is.
    private func handOver() async throws {
        switch pipeline.withLock({ $0.filled(gathering) }) {
        case .seal(let index): seal(from: index)
        case .queued: break
        case .failed(let error): throw error
        }
        try await blob.flush()
        gathering = try await withCheckedThrowingContinuation { continuation in
            if let now = pipeline.withLock({ $0.takeEmpty(continuation) }) { continuation.resume(with: now) }
        }!
    }

    /// Ends the message and commits the blob; returns the file's size.
    func commit() async throws -> Int {
        try await untilSealed()
        let last = gathering
        try await NIOThreadPool.singleton.runIfActive { [self] in
            try seal(last)
            try encryptor.finish()
            try encryptor.drain { try blob.append($0) }
        }
        try await blob.flush()
        try await blob.commit()
        return size
    }

    /// Drops the data key kept for a pending purpose (wiped once released).
    func purposeNamed() { pendingDataKey = nil }

    func abort() async {
        pendingDataKey = nil
        // The sealer may be writing to the blob: it stops first, after the batch it is on.
        pipeline.withLock { $0.abandon(because: CancellationError()) }
        _ = try? await untilSealed()
        await blob.abort()
    }

    /// Waits for the sealer to stop; throws what it failed with.
    private func untilSealed() async throws {
        _ = try await withCheckedThrowingContinuation { continuation in
            if let now = pipeline.withLock({ $0.awaitIdle(continuation) }) { continuation.resume(with: now) }
        }
    }

    /// The sealer: seals `first` and the batches filled meanwhile, on a pool thread, up to
    /// ``batchesPerJob`` before it queues itself behind the pool's other work.
    private func seal(from first: Int) {
        NIOThreadPool.singleton.submit { [self] state in
            var next: Int? = first, sealed = 0
            while let index = next {
                var failure: (any Error)?
                do {
                    guard state == .active else { throw NIOThreadPoolError.ThreadPoolInactive() }
                    try seal(index)
                } catch {
                    failure = error
                }
                let step = pipeline.withLock { $0.sealed(index, failure: failure) }
                if let resume = step.resume { resume.waiter.resume(with: resume.result) }
                next = step.next
                sealed += 1
                if let index = next, sealed == Self.batchesPerJob { return seal(from: index) }
            }
        }
    }

    /// Encrypts a batch, appends its ciphertext to the blob (blocking) and empties the batch.
    private func seal(_ index: Int) throws {
        let batch = batches[index]
        defer { batch.clear() }
        try encryptor.update(batch.bytes)
        try encryptor.drain { try blob.append($0) }
    }
}
