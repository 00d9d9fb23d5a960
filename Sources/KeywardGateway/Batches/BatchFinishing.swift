import Foundation
import KeywardAudit
import KeywardStorage
import Logging
import NIOCore
import Synchronization

// Ending a batch: its files written from the line results, or its failure recorded.
extension BatchRunner {
    /// Writes the output and error files from the line results, in input order (lines never
    /// answered get their reason in the error file), then ends the batch.
    func finalize(_ batch: inout Batch, tenant: Tenant, watch: Watch, scope: AuditScope) async throws {
        let ending: Batch.Status = batch.cancellingAt != nil ? .cancelled
            : batch.dispatched < batch.total ? .expired : .completed
        /// Why line `n` has no result.
        func unanswered(_ n: Int64) -> (code: String, message: String) {
            switch (ending, n < batch.dispatched) {
            case (.cancelled, false): ("batch_cancelled", "the batch was cancelled before this request was sent")
            case (.cancelled, true): ("batch_cancelled", "the batch was cancelled while this request was in flight; it may have reached the model")
            case (_, false): ("batch_expired", "the batch's completion window ended before this request was sent")
            case (_, true): ("request_interrupted", "the gateway stopped while this request was in flight; it was not sent again")
            }
        }
        // A finalization a crash interrupted may have stored one of the files already.
        for id in [batch.outputFile, batch.errorFile].compactMap({ $0 }) {
            _ = try await store.deleteRecord(tenant: tenant.name, id: id, kind: Files.kind)
        }
        var output: FileUpload?
        var errors: FileUpload?
        var counts = (ok: Int64(0), failed: Int64(0))
        // A batch cancelled while it was validating has no lines to account for.
        if batch.total > 0 { do {
            let lines = try await input(batch, tenant: tenant, scope: scope)
            defer { lines.close() }
            // The results of the next `pageSize` lines, by id.
            var page: [String: (ok: Bool, plaintext: [UInt8])] = [:]
            var n: Int64 = -1
            while let (_, text) = try await lines.next() {
                n += 1
                if n % Self.pageSize == 0 {
                    let records = try await store.batchResults(tenant: tenant.name, ids: (n..<max(n, min(n + Self.pageSize, batch.dispatched))).map {
                        Batches.lineID(batch.id, $0)
                    })
                    let plaintexts = try await vault.read(records, of: tenant, scope: scope)
                    page = Dictionary(zip(records, plaintexts).map { ($0.id, ($0.kind == Batches.outputKind, $1)) }) { a, _ in a }
                }
                var result: [UInt8]
                let ok: Bool
                if let answered = page.removeValue(forKey: Batches.lineID(batch.id, n)) {
                    (ok, result) = answered
                } else {
                    let customID = (try? BatchLine.parse(text, endpoint: batch.endpoint))?.customIDJSON ?? Array("null".utf8)
                    let reason = unanswered(n)
                    result = LineSender.errorLine(customID: customID, code: reason.code, message: reason.message)
                    ok = false
                }
                result.append(UInt8(ascii: "\n"))
                if ok {
                    if output == nil {
                        output = try await FileUpload(id: batch.outputFile!, purpose: Batches.outputPurpose, filename: "\(batch.id)_output.jsonl",
                                                      tenant: tenant, scope: scope, files: files)
                    }
                    try await output!.write(ByteBuffer(bytes: result))
                    counts.ok += 1
                } else {
                    if errors == nil {
                        errors = try await FileUpload(id: batch.errorFile!, purpose: Batches.outputPurpose, filename: "\(batch.id)_error.jsonl",
                                                      tenant: tenant, scope: scope, files: files)
                    }
                    try await errors!.write(ByteBuffer(bytes: result))
                    counts.failed += 1
                }
            }
            // Another replica may take the batch over once the lease lapses, and redo this with the
            // same file ids: the files are written only while the lease surely holds.
            guard watch.holds(for: .seconds(settings.leaseSeconds / 5)) else { throw Stop.leaseLost }
            if let output { _ = try await files.finish(output, expiresAfter: batch.outputExpiresAfter, tenant: tenant, scope: scope) }
            if let errors { _ = try await files.finish(errors, expiresAfter: batch.outputExpiresAfter, tenant: tenant, scope: scope) }
        } catch {
            await output?.abort()
            await errors?.abort()
            throw error
        } }
        if output == nil { batch.outputFile = nil }
        if errors == nil { batch.errorFile = nil }
        batch.completed = counts.ok
        batch.failed = counts.failed
        batch.status = ending
        let now = Gateway.nowMs()
        switch ending {
        case .cancelled: batch.cancelledAt = now
        case .expired: batch.expiredAt = now
        default: batch.completedAt = now
        }
        try await save(batch)
        await deleteResults(of: batch)
        try? await audit.append(AuditLog.event(.batchEnd, key: tenant.key, record: batch.id,
                                               detail: "status=\(ending.rawValue) completed=\(counts.ok) failed=\(counts.failed)", scope: scope))
        logger.notice("batch ended", metadata: ["batch": "\(batch.id)", "status": "\(ending.rawValue)", "completed": "\(counts.ok)",
                                                "failed": "\(counts.failed)"])
    }

    /// Ends the batch `failed` with `failure` as its errors; its line results are deleted
    /// (they cannot be written to files under a key that is gone, and are nobody's to read).
    func fail(_ batch: inout Batch, _ failure: Failure, scope: AuditScope) async {
        var data: [[String: Any]] = failure.lines.map { ["code": $0.error.code, "message": $0.error.message, "line": $0.line, "param": NSNull()] }
        if data.isEmpty { data = [["code": failure.code, "message": failure.message, "line": NSNull(), "param": NSNull()]] }
        let errors = (try? JSONSerialization.data(withJSONObject: ["object": "list", "data": data])).flatMap { String(data: $0, encoding: .utf8) }
        batch.errors = errors
        batch.status = .failed
        batch.failedAt = Gateway.nowMs()
        batch.outputFile = nil
        batch.errorFile = nil
        guard (try? await store.saveBatch(batch, owner: owner, now: Gateway.nowMs())) == true else { return }
        await deleteResults(of: batch)
        try? await audit.append(AuditLog.event(.batchEnd, record: batch.id, result: .error(failure.code), detail: "status=failed", scope: scope))
        logger.warning("batch failed", metadata: ["batch": "\(batch.id)", "error": "\(failure.code)"])
    }

    /// Results are read this many lines at a time (answers can be large: an embedding of 3,072
    /// numbers is about 60 KiB of JSON).
    static let pageSize: Int64 = 50

    /// Deletes the line results of an ended batch (only lines sent can have one).
    func deleteResults(of batch: Batch) async {
        for start in stride(from: Int64(0), to: batch.dispatched, by: 500) {
            let ids = (start..<min(start + 500, batch.dispatched)).map { Batches.lineID(batch.id, $0) }
            _ = try? await store.deleteBatchResults(tenant: batch.tenant, ids: ids)
        }
    }
}
