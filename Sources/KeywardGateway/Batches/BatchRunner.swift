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
        let watch = Watch(lease: .seconds(settings.leaseSeconds))
        do {
            try await audit.append(AuditLog.event(.batchRun, record: batch.id, detail: "status=\(batch.status.rawValue) replica=\(owner)",
                                                  scope: scope))
            try await withThrowingTaskGroup(of: Void.self) { group in
                let id = batch.id
                // The lease is held for the whole run: validating, sending, the lines in flight, the files.
                group.addTask { await keepLease(id, watch: watch) }
                defer { watch.finish() }
                try await AuditScope.$current.withValue(scope) { try await advance(&batch, watch: watch, scope: scope) }
            }
        } catch let stop as Stop {
            // Another replica has it now, or this one is stopping: then it gives the batch up
            // for the next replica (or its own restart) to go on at once.
            if stop == .shutdown, (try? await store.saveBatch(batch, owner: owner, now: Gateway.nowMs())) == true {
                try? await store.releaseBatch(id: batch.id, owner: owner)
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
    private func advance(_ batch: inout Batch, watch: Watch, scope: AuditScope) async throws {
        guard var tenant = try await store.tenant(named: batch.tenant) else { throw Failure(code: "not_found", message: "the tenant is gone") }
        if batch.status == .validating {
            if batch.cancellingAt == nil {
                batch.total = try await validate(batch, tenant: tenant, watch: watch, scope: scope)
                batch.status = .inProgress
                batch.inProgressAt = Gateway.nowMs()
            } else {
                batch.status = .finalizing
            }
            try await save(batch)
        }
        if batch.status == .inProgress {
            try await dispatch(&batch, tenant: &tenant, watch: watch, scope: scope)
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
            // A cancel is taken only while the batch is validating or in progress: what the
            // store holds now is final.
            batch.cancellingAt = try await store.batch(id: batch.id)?.cancellingAt
            try await finalize(&batch, tenant: tenant, watch: watch, scope: scope)
        }
    }

    private func save(_ batch: Batch) async throws {
        guard try await store.saveBatch(batch, owner: owner, now: Gateway.nowMs()) else { throw Stop.leaseLost }
    }

    // MARK: - Validating

    /// Reads the whole input file (so that a truncated or altered one fails before any line is
    /// sent) and checks every line; returns how many there are.
    private func validate(_ batch: Batch, tenant: Tenant, watch: Watch, scope: AuditScope) async throws -> Int64 {
        var seen = Set<String>()
        var errors: [(line: Int, error: BatchLineError)] = []
        var count = 0
        let lines = try await input(batch, tenant: tenant, scope: scope)
        defer { lines.close() }
        while let (physical, line) = try await lines.next() {
            if watch.lost { throw Stop.leaseLost }
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
    private func dispatch(_ batch: inout Batch, tenant: inout Tenant, watch: Watch, scope: AuditScope) async throws {
        let interrupted = batch.dispatched
        var principal = try await authenticator.principal(tokenID: batch.token)
        var refreshed = ContinuousClock.now
        let lines = try await input(batch, tenant: tenant, scope: scope)
        defer { lines.close() }
        var stop: (any Error)?
        // A cancel or the window's end that came before this replica's watch looked.
        if let current = try await store.batch(id: batch.id), current.cancellingAt != nil { stop = Stop.cancelled }
        if Gateway.nowMs() >= batch.expiresAt { stop = stop ?? Stop.expired }
        let sending = Flag()
        try await withThrowingTaskGroup(of: LineOutcome?.self) { group in
            // Wakes the loop below when the watch sees a stop, however long the lines in flight take.
            group.addTask {
                while !sending.isSet, watch.reason == nil, !Task.isCancelled { try? await Task.sleep(for: .milliseconds(100)) }
                return nil
            }
            var inFlight = 0
            var n: Int64 = -1
            func collect(_ outcome: LineOutcome??) {
                guard case .some(let finished) = outcome else { return }
                guard let o = finished else {
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
                group.addTask {
                    .some(await send(line, n: line_n, batch: id, endpoint: endpoint, tenant: t, principal: p, sealer: sealer, watch: watch, scope: scope))
                }
                inFlight += 1
            }
            sending.set()
            // A cancel, a lost lease, a revoked key or a suspended token does not wait for the
            // lines in flight; a shutdown or the window's end lets them finish (their answers are
            // kept).
            if let stop, (stop as? Stop).map({ $0 == .cancelled || $0 == .leaseLost }) ?? (stop is Failure) { group.cancelAll() }
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
                      sealer: RecordSealer, watch: Watch, scope: AuditScope) async -> LineOutcome {
        let permit = upstreams.first { $0.serves(line.model) }?.name ?? "keyward"
        var attempt = 0
        do {
            var answer: LineSender.Answer
            while true {
                answer = try await permits.withPermit(permit) { await sender.send(line.body, to: endpoint, as: principal) }
                attempt += 1
                // Keyward's own refusals (an upstream's errors never come as 403 or 410).
                if let code = answer.code, answer.status == 403 && (code == "key_revoked" || code == "token_suspended")
                    || answer.status == 410 && code == "key_destroyed" {
                    return .stopped(Failure(code: code, message: answer.message))
                }
                guard answer.retryable, attempt < settings.maxAttempts else { break }
                let backOff = min(60, settings.retryBaseSeconds * pow(2, Double(attempt - 1)))
                try await Task.sleep(for: .seconds(min(60, max(backOff, answer.retryAfter ?? 0))))
            }
            // A line cancelled in flight (a cancel, a lost lease) has no result: its answer may be the cancellation's.
            try Task.checkCancellation()
            let ok = (200..<300).contains(answer.status)
            let result = LineSender.resultLine(customID: line.customIDJSON, status: answer.status, requestID: answer.requestID, body: answer.body)
            let id = Batches.lineID(batch, n)
            let record = try sealer.seal(result, id: id, kind: ok ? Batches.outputKind : Batches.errorKind, createdAt: Gateway.nowMs(),
                                         metadata: RecordMetadata(status: answer.status))
            // The answer is in hand (and maybe paid for): a database or audit log that fails for a
            // moment does not lose it.
            for attempt in 1... {
                // A replica that lost the batch writes nothing of it (another may have ended it).
                guard watch.holds(for: .zero) else { return .stopped(Stop.leaseLost) }
                do {
                    try await audit.insert([record], events: [AuditLog.event(.encryptRecord, key: tenant.key, record: id, scope: scope)])
                    break
                } catch where attempt < 5 {
                    try await Task.sleep(for: .seconds(attempt))
                }
            }
            return .answered(ok: ok)
        } catch {
            return .stopped(error)
        }
    }

    /// Holds the batch's lease until ``Watch/finish()``: renews it every fifth of its length (only
    /// while it still holds it: a lapsed lease may be another replica's already) and reads the
    /// batch every quarter second for a cancel, the window's end or a takeover; notices shutdown.
    private func keepLease(_ id: String, watch: Watch) async {
        var renewal = ContinuousClock.now
        while !watch.finished, !Task.isCancelled {
            if Task.isShuttingDownGracefully { watch.stop(.shutdown) }
            if ContinuousClock.now >= renewal {
                let asked = ContinuousClock.now
                let now = Gateway.nowMs()
                switch try? await store.renewBatch(id: id, owner: owner, until: now + Int64(settings.leaseSeconds * 1000), now: now) {
                case true?:
                    watch.renewed(at: asked)
                    renewal = asked + .seconds(settings.leaseSeconds / 5)
                case false?: watch.lose()
                case nil: renewal = .now + .milliseconds(250)  // the database, for now: tried again, while the lease lasts
                }
            }
            if let current = try? await store.batch(id: id) {
                if current.owner != owner { watch.lose() }
                if current.cancellingAt != nil { watch.stop(.cancelled) }
                if Gateway.nowMs() >= current.expiresAt { watch.stop(.expired) }
            }
            try? await Task.sleep(for: .milliseconds(250))
        }
    }

    // MARK: - Finishing

    /// Writes the output and error files from the line results, in input order (lines never
    /// answered get their reason in the error file), then ends the batch.
    private func finalize(_ batch: inout Batch, tenant: Tenant, watch: Watch, scope: AuditScope) async throws {
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
        await deleteResults(of: batch)
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
        guard (try? await store.saveBatch(batch, owner: owner, now: Gateway.nowMs())) == true else { return }
        await deleteResults(of: batch)
        try? await audit.append(AuditLog.event(.batchEnd, record: batch.id, result: .error(failure.code), detail: "status=failed", scope: scope))
        logger.warning("batch failed", metadata: ["batch": "\(batch.id)", "error": "\(failure.code)"])
    }

    /// Results are read this many lines at a time (answers can be large: an embedding of 3,072
    /// numbers is about 60 KiB of JSON).
    static let pageSize: Int64 = 50

    /// Deletes the line results of an ended batch (only lines sent can have one).
    private func deleteResults(of batch: Batch) async {
        for start in stride(from: Int64(0), to: batch.dispatched, by: 500) {
            let ids = (start..<min(start + 500, batch.dispatched)).map { Batches.lineID(batch.id, $0) }
            _ = try? await store.deleteBatchResults(tenant: batch.tenant, ids: ids)
        }
    }
}

/// What the lease keeper of a running batch knows: why sending should stop, whether the lease is
/// lost, and until when it surely holds.
final class Watch: Sendable {
    private struct State {
        var reason: BatchRunner.Stop?
        var lost = false
        var finished = false
        var renewed: ContinuousClock.Instant
    }
    private let state: Mutex<State>
    let lease: Duration

    /// `lease`: its length; it was taken just before.
    init(lease: Duration) {
        self.lease = lease
        state = Mutex(State(renewed: .now))
    }

    /// Why sending should stop, if it should: a lost lease first.
    var reason: BatchRunner.Stop? { state.withLock { $0.lost ? .leaseLost : $0.reason } }
    var lost: Bool { state.withLock { $0.lost } }
    var finished: Bool { state.withLock { $0.finished } }
    /// Whether the lease holds for `margin` more, as far as this replica knows.
    func holds(for margin: Duration) -> Bool { state.withLock { !$0.lost && ContinuousClock.now + margin < $0.renewed + lease } }

    func stop(_ reason: BatchRunner.Stop) { state.withLock { if $0.reason == nil { $0.reason = reason } } }
    func lose() { state.withLock { $0.lost = true } }
    func renewed(at instant: ContinuousClock.Instant) { state.withLock { $0.renewed = max($0.renewed, instant) } }
    func finish() { state.withLock { $0.finished = true } }
}

/// A flag one task sets and others read.
final class Flag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .acquiring) }
    func set() { value.store(true, ordering: .releasing) }
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
