import Foundation
import HTTPTypes
import Hummingbird
import KeywardAudit
import KeywardCrypto
import KeywardStorage
import Logging
import NIOCore
import NIOPosix

/// Files (OpenAI's Files API) under the tenant's master key. A file's content is one ESDK message
/// in the blob store (64 KiB frames, committed suite), encrypted frame by frame as the upload
/// streams in and decrypted frame by frame as the download streams out; its object (the OpenAI
/// file object, with the filename, which can be sensitive) is an encrypted record of kind `file`
/// whose clear metadata holds only the purpose.
///
/// A file's data key is its own, wrapped under the file's whole encryption context (tenant, file,
/// purpose) — one key-store call per upload — so that the ESDK with the key store's own keyring
/// (the `aws-encryption-cli` with a KMS key) opens a blob without Keyward. The record is written
/// after its blob is committed: a blob without a record is never served, and is swept.
struct Files: Sendable {
    static let kind = "file"
    static let purposes: Set<String> = ["batch", "fine-tune", "assistants", "user_data", "vision", "evals"]
    static let frameLength = 64 << 10
    /// Downloads read the blob this much at a time (sixteen frames): batches of frames large
    /// enough for the decryptor's helper threads to pay (four frames cost more in hand-offs).
    static let readSize = 16 * (frameLength + 32)
    /// A blob older than this without its record is an orphan (an upload's record follows its
    /// blob's commit within milliseconds).
    static let orphanAgeMs: Int64 = 10 * 60_000
    /// An upload not finished after this long was abandoned (a slow one may take many minutes;
    /// S3's own lifecycle rules for incomplete uploads count in days).
    static let abandonedAgeMs: Int64 = 24 * 3_600_000

    let store: any RecordStore
    let blobs: any BlobStore
    let vault: Vault
    let audit: AuditLog
    /// Largest file accepted, checked as the upload streams in.
    let sizeLimit: Int

    static func blobKey(tenant: String, id: String) -> String { "files/\(tenant)/\(id)" }

    static func tooLarge(_ limit: Int) -> GatewayError {
        GatewayError(.contentTooLarge, type: "invalid_request_error", code: "request_too_large",
                     "the file is larger than the gateway's limit of \(limit) bytes")
    }

    /// The longest body an upload within the limit can have: the file, 64 KiB of fields, and at
    /// most 64 parts' delimiters (padding included) and headers after a 16 KiB preamble. A longer
    /// `Content-Length` is refused before the body is read (no `100 Continue` for it either).
    /// Only an epilogue after the closing delimiter, which no client sends, could exceed it.
    var maxBodyBytes: Int {
        sizeLimit + (64 << 10) + MultipartReader.maxParts * (MultipartReader.maxHeaderBytes + 512) + MultipartReader.maxHeaderBytes
    }

    static func context(tenant: String, id: String, purpose: String) -> EncryptionContext {
        ["keyward:tenant": tenant, "keyward:file": id, "keyward:purpose": purpose]
    }

    /// What the context of a blob whose file part came before its purpose field names until the
    /// purpose is read (not a purpose a client can give).
    static let pendingPurpose = "pending"

    /// A purpose field's value, or 400 `invalid_field`.
    static func purpose(_ value: String) throws -> String {
        guard purposes.contains(value) else {
            throw GatewayError.invalidRequest("purpose must be one of \(purposes.sorted().joined(separator: ", "))", code: "invalid_field")
        }
        return value
    }

    /// Takes a multipart upload in (`purpose` and `file` in either order; optional
    /// `expires_after[anchor]` = `created_at` and `expires_after[seconds]`), encrypting the file as
    /// it arrives; returns the file object. Nothing is kept unless the whole upload succeeds.
    ///
    /// A purpose sent before the file is in the blob's encryption context from its first byte; one
    /// sent after it (OpenAI's Node SDK sends the file first) costs a second key-store call and a
    /// copy of the blob once it is committed (``nameSealedPurpose(_:tenant:scope:)``).
    func ingest(_ body: RequestBody, boundary: String, tenant: Tenant, scope: AuditScope) async throws -> [UInt8] {
        var reader = MultipartReader(boundary: boundary)
        var fields: [String: String] = [:]
        var fieldBytes = 0
        var part: MultipartReader.PartHead?
        var value: [UInt8] = []
        var upload: FileUpload?
        let id = Tokens.identifier("file-")
        var chunks = body.makeAsyncIterator()
        do {
            // Up to the closing delimiter: what a client sends after it is not read.
            while !reader.isComplete, let chunk = try await chunks.next() {
                reader.append(chunk)
                while let event = try reader.next() {
                    switch event {
                    case .head(let head):
                        part = head
                        value = []
                        guard head.name == "file" else { continue }
                        guard upload == nil else { throw GatewayError.invalidRequest("an upload holds one file part", code: "invalid_multipart") }
                        // A purpose sent after the file (as OpenAI's Node SDK sends it) is
                        // checked once it is read; one sent before is checked now.
                        let purpose = try fields["purpose"].map(Self.purpose)
                        let filename = head.filename.map { ($0 as NSString).lastPathComponent } ?? "upload"
                        upload = try await FileUpload(
                            id: id, purpose: purpose, filename: filename, tenant: tenant, scope: scope, files: self)
                    case .content(let bytes):
                        if part?.name == "file", let upload {
                            try await upload.write(bytes)
                        } else {
                            fieldBytes += bytes.readableBytes
                            guard fieldBytes <= 64 << 10 else {
                                throw GatewayError.invalidRequest("the upload's fields exceed 64 KiB", code: "invalid_multipart")
                            }
                            value += bytes.readableBytesView
                        }
                    case .end:
                        if let name = part?.name, name != "file" {
                            guard let text = String(validating: value, as: UTF8.self) else {
                                throw GatewayError.invalidRequest("field \(name.prefix(64)) is not UTF-8", code: "invalid_field")
                            }
                            fields[name] = text
                        }
                        part = nil
                    }
                }
            }
            try reader.finish()
            guard let upload else { throw GatewayError.invalidRequest("the upload has no file part", code: "missing_field") }
            if upload.pendingDataKey != nil {
                guard let purpose = fields["purpose"] else {
                    throw GatewayError.invalidRequest("the upload has no purpose field", code: "missing_field")
                }
                upload.purpose = try Self.purpose(purpose)
            }
            return try await finish(upload, expiresAfter: try Self.expiresAfter(fields), tenant: tenant, scope: scope)
        } catch {
            await upload?.abort()
            await Request.drain(&chunks)
            throw error
        }
    }

    /// Commits an upload's blob, then writes its record; returns the file object. On failure the
    /// blob is deleted (the caller aborts an upload that failed before).
    func finish(_ upload: FileUpload, expiresAfter: Int64?, tenant: Tenant, scope: AuditScope) async throws -> [UInt8] {
        let size = try await upload.commit()
        do {
            if upload.pendingDataKey != nil {
                try await withTaskExecutorPreference(JobExecutor.shared) { try await nameSealedPurpose(upload, tenant: tenant, scope: scope) }
            }
            // The record too goes under the tenant's key as it is now: the re-key's last sweep of
            // records may have run while the file streamed in, and would leave it on the old key.
            let current = try await followRekey(upload, tenant: tenant)
            return try await store(upload, size: size, expiresAfter: expiresAfter, tenant: current, scope: scope)
        } catch {
            try? await blobs.delete(Self.blobKey(tenant: tenant.name, id: upload.id))
            throw error
        }
    }

    /// A re-key that switched the tenant's key while the file streamed in has passed its record
    /// by (there was none yet): the blob is moved to the new key here, before the record is written.
    /// The blob is copied on the jobs' thread, as a re-key job copies it: not on an event loop.
    /// Returns the tenant as it is now.
    private func followRekey(_ upload: FileUpload, tenant: Tenant) async throws -> Tenant {
        guard let current = try await store.tenant(named: tenant.name) else { return tenant }
        guard current.key != upload.key else { return current }
        let scope = AuditScope(actor: "system", tenant: tenant.name, requestID: AuditScope.requestID, purpose: nil)
        _ = try await withTaskExecutorPreference(JobExecutor.shared) {
            try await rewrapBlob(tenant: tenant.name, id: upload.id, purpose: upload.purpose, from: try vault.keyring(upload.key),
                                 to: try vault.keyring(current.key), fromKey: upload.key, toKey: current.key, scope: scope)
        }
        return current
    }

    /// Writes the file's record, with its event, once its blob is committed.
    private func store(_ upload: FileUpload, size: Int, expiresAfter: Int64?, tenant: Tenant, scope: AuditScope) async throws -> [UInt8] {
        let now = Gateway.nowMs()
        let sealer = try await AuditScope.$current.withValue(scope) { try await vault.sealer(for: tenant, plaintextLength: 0) }
        // The tenant's retention holds even when the upload asks for longer.
        let retention = tenant.retentionDays > 0 ? now + Int64(tenant.retentionDays) * 86_400_000 : nil
        let expires = [retention, expiresAfter.map { now + $0 * 1000 }].compactMap { $0 }.min()
        let object: [String: Any] = [
            "id": upload.id, "object": "file", "bytes": size, "created_at": now / 1000, "filename": upload.filename,
            "purpose": upload.purpose, "status": "processed", "status_details": NSNull(), "expires_at": expires.map { $0 / 1000 } ?? NSNull(),
        ]
        let json = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
        var record = try sealer.seal(Array(json), id: upload.id, kind: Self.kind, createdAt: now, metadata: RecordMetadata(purpose: upload.purpose))
        record.expiresAt = expires
        try await audit.insert([record], events: [AuditLog.event(.encryptRecord, key: tenant.key, record: "\(upload.id)/\(Self.kind)", scope: scope)])
        return Array(json)
    }

    /// `expires_after` as seconds after creation: OpenAI's bounds, one hour to thirty days.
    static func expiresAfter(_ fields: [String: String]) throws -> Int64? {
        let anchor = fields["expires_after[anchor]"], seconds = fields["expires_after[seconds]"]
        guard anchor != nil || seconds != nil else { return nil }
        guard anchor == "created_at" else {
            throw GatewayError.invalidRequest("expires_after[anchor] must be created_at", code: "invalid_field")
        }
        guard let s = seconds.flatMap({ Int64($0) }), (3600...2_592_000).contains(s) else {
            throw GatewayError.invalidRequest("expires_after[seconds] must be an integer from 3600 to 2592000", code: "invalid_field")
        }
        return s
    }

    /// The tenant's file record, or 404 (also once it has expired, before the purge deletes it).
    func record(_ tenant: Tenant, _ id: String) async throws -> Record {
        guard let record = try await store.record(tenant: tenant.name, id: id, kind: Self.kind), !record.isExpired(at: Gateway.nowMs()) else {
            throw GatewayError.notFound("no file \(id)")
        }
        return record
    }

    /// The file's content as a streamed response. The blob's header is read, and its data key
    /// unwrapped (a revoked key: 403), before anything is sent; then the plaintext goes out about
    /// 1 MiB at a time, only frames that authenticated, decrypted up to two such chunks ahead of
    /// the socket. A blob that fails mid-way ends the response without its final chunk, so the
    /// client sees an incomplete body, never a complete-looking wrong one.
    func content(_ record: Record, of tenant: Tenant, scope: AuditScope) async throws -> Response {
        let (reading, download) = try await open(record, of: tenant, scope: scope)
        return Response(status: .ok, headers: [.contentType: "application/octet-stream"], body: ResponseBody { writer in
            defer { download.close() }
            try await reading.forEachChunk(decryptingOn: .singleton, ahead: 2) { try await writer.write($0) }
            try await writer.finish(nil)
        })
    }

    /// The file's content, decrypted frame by frame as it is read: the blob's header is read and
    /// its data key unwrapped (audited; a revoked key throws) before this returns. The caller
    /// closes the download.
    func open(_ record: Record, of tenant: Tenant, scope: AuditScope) async throws -> (StreamingDecryption, any BlobDownload) {
        guard let purpose = record.metadata.purpose else { throw GatewayError.internalError }
        try await audit.append(AuditLog.event(.decryptRecord, key: tenant.key, record: "\(record.id)/\(Self.kind).content", scope: scope))
        let download: any BlobDownload
        do { download = try await blobs.download(Self.blobKey(tenant: tenant.name, id: record.id)) } catch let e as StorageError where e.code == .notFound {
            throw GatewayError.notFound("no file \(record.id)")
        }
        let reading = StreamingDecryption(options: DecryptionOptions(
            requiredContext: Self.context(tenant: tenant.name, id: record.id, purpose: purpose), maxEncryptedDataKeys: 4),
            blob: download, size: Self.readSize)
        do {
            let request = try await reading.header()
            let materials = try await AuditScope.$current.withValue(scope) { try await vault.fileMaterials(for: request, of: tenant) }
            try reading.begin(with: materials)
        } catch {
            download.close()
            throw error
        }
        return (reading, download)
    }

    /// Deletes a file: its record (with its event), then its blob (one left behind is swept).
    func delete(_ record: Record, of tenant: Tenant, scope: AuditScope) async throws {
        try audit.requireAvailable()
        guard try await store.deleteRecord(tenant: tenant.name, id: record.id, kind: Self.kind) else {
            throw GatewayError.notFound("no file \(record.id)")
        }
        try await audit.append(AuditLog.event(.deleteRecord, key: tenant.key, record: "\(record.id)/\(Self.kind)", scope: scope))
        try? await blobs.delete(Self.blobKey(tenant: tenant.name, id: record.id))
    }

    /// Deletes blobs whose file record is gone (deleted, expired, shredded, or never written after
    /// a crash) and uploads a crash abandoned. Returns how many blobs went.
    func sweep(now: Int64) async throws -> Int {
        var removed = 0
        for key in try await blobs.sweepable(under: "files/", before: now - Self.orphanAgeMs, abandoned: now - Self.abandonedAgeMs) {
            let parts = key.split(separator: "/")
            guard parts.count == 3, parts[0] == "files" else { continue }
            if try await store.record(tenant: String(parts[1]), id: String(parts[2]), kind: Self.kind) == nil {
                try await blobs.delete(key)
                removed += 1
            }
        }
        return removed
    }
}

extension Vault {
    /// The data key of a file's blob, under the tenant's key or, during a re-key, the one it is
    /// moving from. Through the cache: downloads of one file share its data key.
    func fileMaterials(for request: DecryptionMaterialsRequest, of tenant: Tenant) async throws -> DecryptionMaterials {
        let miss = MissFlag()
        defer { metrics.dataKeyCache("file", hit: !miss.value) }
        return try await MissFlag.$current.withValue(miss) {
            do {
                return try await manager(forKey: tenant.key).decryptionMaterials(for: request)
            } catch let e as KeywardCryptoError where e.code == .noDecryptableKey {
                guard let previous = tenant.previousKey, previous != tenant.key else { throw e }
                return try await manager(forKey: previous).decryptionMaterials(for: request)
            }
        }
    }
}
