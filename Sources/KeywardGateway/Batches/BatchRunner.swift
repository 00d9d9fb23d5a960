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
            if stop == .shutdown { await giveUp(batch) }
        } catch is CancellationError {
            // This replica is stopping (its task cancelled, say while a line was read).
            await giveUp(batch)
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

    /// Saves the batch as it stands and releases its lease, for the next replica (or this one's
    /// restart) to go on with it at once.
    private func giveUp(_ batch: Batch) async {
        if (try? await store.saveBatch(batch, owner: owner, now: Gateway.nowMs())) == true {
            try? await store.releaseBatch(id: batch.id, owner: owner)
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

    func save(_ batch: Batch) async throws {
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
    func input(_ batch: Batch, tenant: Tenant, scope: AuditScope) async throws -> FileLines {
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
                let sealer = try await vault.sealer(for: tenant, seen: principal.tenantView, plaintextLength: 0)
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
                // Over its tenant's or token's rate limit (Keyward's own refusal: nothing was
                // sent): wait as told, without spending a try, so that a batch goes at the pace
                // its limits allow, until it expires or the replica stops.
                if answer.rateLimitedHere {
                    if let reason = watch.reason { return .stopped(reason) }
                    try await Task.sleep(for: .seconds(min(60, max(1, answer.retryAfter ?? 1))))
                    if let reason = watch.reason { return .stopped(reason) }
                    continue
                }
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
            // The answer is in hand (and maybe paid for): a database, audit log or key store that
            // fails for a moment does not lose it.
            for attempt in 1... {
                // A replica that lost the batch writes nothing of it (another may have ended it).
                guard watch.holds(for: .zero) else { return .stopped(Stop.leaseLost) }
                do {
                    let (current, key) = try await vault.onCurrentKey([record], sealedBy: sealer, scope: scope)
                    try await audit.insert(current, events: [AuditLog.event(.encryptRecord, key: key, record: id, scope: scope)])
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
}
