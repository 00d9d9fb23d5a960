import Foundation
import KeywardAudit
import KeywardStorage
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// How batches run (`"batches"` in the config file).
public struct BatchesConfiguration: Sendable, Equatable {
    /// Lines of one batch in flight at once.
    public var concurrency = 8
    /// Lines in flight to one upstream at once, over every batch this replica runs.
    public var upstreamConcurrency = 32
    /// Batches one replica runs at once.
    public var running = 4
    /// Tries of a line answered 429 or 5xx (or not at all) before its error is its result.
    public var maxAttempts = 5
    /// The first back-off after such an answer; it doubles with each try (at most 60 s), and an
    /// upstream's `retry-after` is honoured up to that.
    public var retryBaseSeconds = 0.5
    /// How long a replica's hold on a batch lasts unless renewed (it renews it every
    /// fifth of that): after a crash, another replica takes the batch up this long after.
    public var leaseSeconds = 15.0

    public init() {}
}

/// Runs one batch on this replica while it holds the batch's lease: validates the input file,
/// sends its lines (each at most once: a line is marked sent before it goes, and a line marked
/// but without a result after a crash is reported `request_interrupted`, never sent again),
/// then writes the output and error files in input order.
struct BatchRunner: Sendable {
    let batches: Batches
    let authenticator: Authenticator
    let sender: LineSender
    let permits: Permits
    let settings: BatchesConfiguration
    let upstreams: [UpstreamConfiguration]
    /// This replica's name in the batches' leases.
    let owner: String
    let lineLimit: Int
    let logger: Logger
    var store: any RecordStore { batches.store }
    var files: Files { batches.files }
    var vault: Vault { batches.vault }
    var audit: AuditLog { batches.audit }

    /// Why dispatching stopped before the last line.
    enum Stop: Error { case cancelled, expired, leaseLost, shutdown }

    /// A batch that cannot go on: it ends `failed` with this error.
    struct Failure: Error {
        let code: String
        let message: String
        var lines: [(line: Int, error: BatchLineError)] = []
    }

    func run(_ claimed: Batch) async {
        var batch = claimed
        let scope = AuditScope(actor: batch.token, tenant: batch.tenant, requestID: batch.id, purpose: .inference)
        do {
            try await audit.append(AuditLog.event(.batchRun, record: batch.id, detail: "status=\(batch.status.rawValue) replica=\(owner)",
                                                  scope: scope))
            try await AuditScope.$current.withValue(scope) { try await advance(&batch, scope: scope) }
        } catch let stop as Stop {
            // Another replica has it now, or this one is stopping: then it gives the batch up
            // for the next replica (or its own restart) to go on at once.
            if stop == .shutdown, (try? await store.saveBatch(batch, owner: owner)) == true {
                _ = try? await store.claimBatch(id: batch.id, owner: owner, until: 0, now: Gateway.nowMs())
            }
        } catch let failure as Failure {
            await fail(&batch, failure, scope: scope)
        } catch {
            let e = GatewayError.from(error)
            if ["storage_unavailable", "audit_unavailable", "key_unavailable"].contains(e.code) {
                // Not the batch's fault: it is taken up again once its lease lapses.
                logger.warning("batch paused", metadata: ["batch": "\(batch.id)", "error": "\(e.code)"])
                return
            }
            await fail(&batch, Failure(code: e.code, message: e.message), scope: scope)
        }
    }

    /// Moves the batch through its states from wherever it stands.
    private func advance(_ batch: inout Batch, scope: AuditScope) async throws {
        guard var tenant = try await store.tenant(named: batch.tenant) else { throw Failure(code: "not_found", message: "the tenant is gone") }
        if batch.status == .validating {
            if batch.cancellingAt == nil {
                batch.total = try await validate(batch, tenant: tenant, scope: scope)
                batch.status = .inProgress
                batch.inProgressAt = Gateway.nowMs()
            } else {
                batch.status = .finalizing
            }
            try await save(batch)
        }
        if batch.status == .inProgress {
            try await dispatch(&batch, tenant: &tenant, scope: scope)
            batch.status = .finalizing
        }
        if batch.status == .finalizing {
            if batch.outputFile == nil {
                // The files' ids are chosen once, so that a finalization a crash cut short is redone
                // with the same ones.
                batch.finalizingAt = Gateway.nowMs()
                batch.outputFile = Tokens.identifier("file-")
                batch.errorFile = Tokens.identifier("file-")
                try await save(batch)
            }
            try await finalize(&batch, tenant: tenant, scope: scope)
        }
    }

    private func save(_ batch: Batch) async throws {
        guard try await store.saveBatch(batch, owner: owner) else { throw Stop.leaseLost }
    }

    // MARK: - Validating

    /// Reads the whole input file (so that a truncated or altered one fails before any line is
    /// sent) and checks every line; returns how many there are.
    private func validate(_ batch: Batch, tenant: Tenant, scope: AuditScope) async throws -> Int64 {
        var seen = Set<String>()
        var errors: [(line: Int, error: BatchLineError)] = []
        var count = 0
        let lines = try await input(batch, tenant: tenant, scope: scope)
        defer { lines.close() }
        while let (physical, line) = try await lines.next() {
            count += 1
            guard count <= Batches.maxLines else {
                throw Failure(code: "too_many_requests", message: "a batch holds at most \(Batches.maxLines) requests")
            }
            do {
                let parsed = try BatchLine.parse(line, endpoint: batch.endpoint)
                if !seen.insert(parsed.customID).inserted {
                    throw BatchLineError("duplicate_custom_id", "custom_id is not unique in the file")
                }
            } catch let e as BatchLineError {
                if errors.count < 100 { errors.append((physical, e)) }
            }
        }
        guard errors.isEmpty else { throw Failure(code: "invalid_file", message: "lines of the input file are invalid", lines: errors) }
        guard count > 0 else { throw Failure(code: "empty_file", message: "the input file holds no request") }
        return Int64(count)
    }

    /// The input file's non-blank lines, decrypted as they are read.
    private func input(_ batch: Batch, tenant: Tenant, scope: AuditScope) async throws -> FileLines {
        let record: Record
        do { record = try await files.record(tenant, batch.inputFile) } catch let e as GatewayError where e.status == .notFound {
            throw Failure(code: "input_file_missing", message: "the input file \(batch.inputFile) was deleted")
        }
        let (reading, download) = try await files.open(record, of: tenant, scope: scope)
        return FileLines(reading: reading, download: download, limit: lineLimit)
    }

    // MARK: - Sending

    private enum LineOutcome: Sendable {
        case answered(ok: Bool)
        case stopped(any Error)
    }

    /// Sends the lines not yet sent, at most `concurrency` at once, until the last (or a stop).
    private func dispatch(_ batch: inout Batch, tenant: inout Tenant, scope: AuditScope) async throws {
        let interrupted = batch.dispatched
        var principal = try await authenticator.principal(tokenID: batch.token)
        var refreshed = ContinuousClock.now
        let lines = try await input(batch, tenant: tenant, scope: scope)
        defer { lines.close() }
        let watch = Watch()
        var stop: (any Error)?
        // However dispatching ends (a throw cancels the group), the watcher is told to finish.
        defer { watch.finish() }
        try await withThrowingTaskGroup(of: LineOutcome?.self) { group in
            let id = batch.id
            group.addTask { try await watchLease(id, watch: watch) }
            var inFlight = 0
            var n: Int64 = -1
            func collect(_ outcome: LineOutcome??) {
                guard case .some(let finished) = outcome else { return }
                guard let o = finished else {
                    // The watcher returned: it noticed something, or was told to finish.
                    if stop == nil, let reason = watch.reason { stop = reason }
                    return
                }
                inFlight -= 1
                switch o {
                case .answered(let ok): if ok { batch.completed += 1 } else { batch.failed += 1 }
                case .stopped(let error): if stop == nil { stop = error }
                }
            }
            while stop == nil, let (_, text) = try await lines.next() {
                n += 1
                guard n >= interrupted else { continue }
                while stop == nil, inFlight >= settings.concurrency { collect(try await group.next()) }
                if stop == nil, let reason = watch.reason { stop = reason }
                guard stop == nil else { break }
                if ContinuousClock.now - refreshed > .seconds(1) {
                    principal = try await authenticator.principal(tokenID: batch.token)
                    tenant = principal.tenant ?? tenant
                    refreshed = .now
                }
                // No key, no request: a revoked key stops the batch before its next line.
                let sealer = try await vault.sealer(for: tenant, plaintextLength: 0)
                let line = try BatchLine.parse(text, endpoint: batch.endpoint)
                batch.dispatched = n + 1
                try await save(batch)
                let (id, endpoint, t, p, line_n) = (batch.id, batch.endpoint, tenant, principal, n)
                group.addTask { .some(await send(line, n: line_n, batch: id, endpoint: endpoint, tenant: t, principal: p, sealer: sealer, scope: scope)) }
                inFlight += 1
            }
            // A cancel does not wait for the lines in flight; a shutdown or the window's end lets
            // them finish (their answers are kept).
            if stop.map({ $0 as? Stop == .cancelled || $0 as? Stop == .leaseLost }) == true { group.cancelAll() }
            watch.finish()
            while let outcome = try await group.next() { collect(outcome) }
        }
        try await save(batch)
        switch stop {
        case nil: return
        case let s as Stop where s == .cancelled || s == .expired:
            batch.cancellingAt = try await store.batch(id: batch.id)?.cancellingAt
        case let error?: throw error
        }
    }

    /// Sends one line (again after 429, 5xx or no answer, with back-off) and stores its result.
    private func send(_ line: BatchLine, n: Int64, batch: String, endpoint: String, tenant: Tenant, principal: Principal,
                      sealer: RecordSealer, scope: AuditScope) async -> LineOutcome {
        let permit = upstreams.first { $0.serves(line.model) }?.name ?? "keyward"
        var attempt = 0
        do {
            var answer: LineSender.Answer
            while true {
                answer = try await permits.withPermit(permit) { await sender.send(line.body, to: endpoint, as: principal) }
                attempt += 1
                if let code = answer.code, ["key_revoked", "key_destroyed", "token_suspended"].contains(code) {
                    return .stopped(Failure(code: code, message: answer.message))
                }
                guard answer.retryable, attempt < settings.maxAttempts else { break }
                let backOff = min(60, settings.retryBaseSeconds * pow(2, Double(attempt - 1)))
                try await Task.sleep(for: .seconds(min(60, max(backOff, answer.retryAfter ?? 0))))
            }
            let ok = (200..<300).contains(answer.status)
            let result = LineSender.resultLine(customID: line.customIDJSON, status: answer.status, requestID: answer.requestID, body: answer.body)
            let id = Batches.lineID(batch, n)
            let record = try sealer.seal(result, id: id, kind: ok ? Batches.outputKind : Batches.errorKind, createdAt: Gateway.nowMs(),
                                         metadata: RecordMetadata(status: answer.status))
            try await audit.insert([record], events: [AuditLog.event(.encryptRecord, key: tenant.key, record: id, scope: scope)])
            return .answered(ok: ok)
        } catch {
            return .stopped(error)
        }
    }

    /// Reads the batch every quarter second (a cancel, the window's end, the lease taken over,
    /// shutdown) and renews the lease every fifth of its length. Returns when ``Watch/finish()``
    /// is called or a stop is noticed (left in `watch`).
    private func watchLease(_ id: String, watch: Watch) async throws -> LineOutcome? {
        var renewed = ContinuousClock.now
        while !watch.finished, !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(250))
            let now = Gateway.nowMs()
            if Task.isShuttingDownGracefully { watch.stop(Stop.shutdown); break }
            if ContinuousClock.now - renewed > .seconds(settings.leaseSeconds / 5) {
                guard (try? await store.claimBatch(id: id, owner: owner, until: now + Int64(settings.leaseSeconds * 1000), now: now)) != nil else {
                    watch.stop(Stop.leaseLost)
                    break
                }
                renewed = .now
            }
            guard let current = try? await store.batch(id: id) else { continue }
            if current.owner != owner { watch.stop(Stop.leaseLost); break }
            if current.cancellingAt != nil { watch.stop(Stop.cancelled); break }
            if now >= current.expiresAt { watch.stop(Stop.expired); break }
        }
        return nil
    }

    // MARK: - Finishing

    /// Writes the output and error files from the line results, in input order (lines never
    /// answered get their reason in the error file), then ends the batch.
    private func finalize(_ batch: inout Batch, tenant: Tenant, scope: AuditScope) async throws {
        let ending: Batch.Status = batch.cancellingAt != nil ? .cancelled
            : batch.dispatched < batch.total ? .expired : .completed
        let unanswered: (code: String, message: String) = switch ending {
        case .cancelled: ("batch_cancelled", "the batch was cancelled before this request was answered")
        case .expired: ("batch_expired", "the batch's completion window ended before this request was sent")
        default: ("request_interrupted", "the gateway stopped while this request was in flight; it was not sent again")
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
            var page: [Record] = []
            var plaintexts: [[UInt8]] = []
            var index = 0
            var exhausted = false
            var n: Int64 = -1
            while let (_, text) = try await lines.next() {
                n += 1
                let id = Batches.lineID(batch.id, n)
                if index == page.count, !exhausted {
                    page = try await store.batchResults(tenant: tenant.name, batch: batch.id, after: n == 0 ? nil : Batches.lineID(batch.id, n - 1),
                                                        limit: 200)
                    exhausted = page.count < 200
                    plaintexts = try await vault.read(page, of: tenant, scope: scope)
                    index = 0
                }
                var result: [UInt8]
                let ok: Bool
                if index < page.count, page[index].id == id {
                    result = plaintexts[index]
                    ok = page[index].kind == Batches.outputKind
                    index += 1
                } else {
                    let customID = (try? BatchLine.parse(text, endpoint: batch.endpoint))?.customIDJSON ?? Array("null".utf8)
                    result = LineSender.errorLine(customID: customID, code: unanswered.code, message: unanswered.message)
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
            if let output { _ = try await files.finish(output, expiresAfter: nil, tenant: tenant, scope: scope) }
            if let errors { _ = try await files.finish(errors, expiresAfter: nil, tenant: tenant, scope: scope) }
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
        _ = try? await store.deleteBatchResults(tenant: tenant.name, batch: batch.id)
        try? await audit.append(AuditLog.event(.batchEnd, key: tenant.key, record: batch.id,
                                               detail: "status=\(ending.rawValue) completed=\(counts.ok) failed=\(counts.failed)", scope: scope))
        logger.notice("batch ended", metadata: ["batch": "\(batch.id)", "status": "\(ending.rawValue)", "completed": "\(counts.ok)",
                                                "failed": "\(counts.failed)"])
    }

    /// Ends the batch `failed` with `failure` as its errors; its line results are deleted
    /// (they cannot be written to files under a key that is gone, and are nobody's to read).
    private func fail(_ batch: inout Batch, _ failure: Failure, scope: AuditScope) async {
        var data: [[String: Any]] = failure.lines.map { ["code": $0.error.code, "message": $0.error.message, "line": $0.line, "param": NSNull()] }
        if data.isEmpty { data = [["code": failure.code, "message": failure.message, "line": NSNull(), "param": NSNull()]] }
        let errors = (try? JSONSerialization.data(withJSONObject: ["object": "list", "data": data])).flatMap { String(data: $0, encoding: .utf8) }
        batch.errors = errors
        batch.status = .failed
        batch.failedAt = Gateway.nowMs()
        batch.outputFile = nil
        batch.errorFile = nil
        guard (try? await store.saveBatch(batch, owner: owner)) == true else { return }
        _ = try? await store.deleteBatchResults(tenant: batch.tenant, batch: batch.id)
        try? await audit.append(AuditLog.event(.batchEnd, record: batch.id, result: .error(failure.code), detail: "status=failed", scope: scope))
        logger.warning("batch failed", metadata: ["batch": "\(batch.id)", "error": "\(failure.code)"])
    }
}

/// What the watcher of a running batch noticed, for its dispatcher.
final class Watch: Sendable {
    private let state = Mutex<(reason: BatchRunner.Stop?, finished: Bool)>((nil, false))
    var reason: BatchRunner.Stop? { state.withLock { $0.reason } }
    var finished: Bool { state.withLock { $0.finished || $0.reason != nil } }
    func stop(_ reason: BatchRunner.Stop) { state.withLock { if $0.reason == nil { $0.reason = reason } } }
    func finish() { state.withLock { $0.finished = true } }
}

/// A decrypted file's non-blank lines, with their line numbers (from 1).
final class FileLines: @unchecked Sendable {  // used by one task at a time
    private let reading: StreamingDecryption
    private let download: any BlobDownload
    private var splitter: JSONLines
    private var physical = 0
    private var ended = false

    init(reading: StreamingDecryption, download: any BlobDownload, limit: Int) {
        self.reading = reading
        self.download = download
        splitter = JSONLines(limit: limit)
    }

    func next() async throws -> (Int, [UInt8])? {
        while true {
            let line: [UInt8]
            do {
                if let l = try splitter.next() {
                    line = l
                } else if ended {
                    guard let last = splitter.finish() else { return nil }
                    line = last
                } else {
                    if let chunk = try await reading.next() { splitter.append(chunk.readableBytesView) } else { ended = true }
                    continue
                }
            } catch let e as BatchLineError {
                throw BatchRunner.Failure(code: e.code, message: e.message)
            }
            physical += 1
            if line.allSatisfy({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }) { continue }
            return (physical, line)
        }
    }

    func close() { download.close() }
}
