import KeywardAudit
import KeywardStorage
import Logging
import PostgresNIO
import Synchronization

/// Inserts and audit appends: group commit (``GroupCommit``), and the chain kept in order across
/// replicas by the `audit_head` row.
extension PostgresRecordStore {
    /// Concurrent inserts are committed together by whichever caller holds the writer's role: one
    /// transaction, one lock on the chain head and one commit for many requests.
    @discardableResult
    public func insert(_ records: [Record], audit: [AuditEvent]) async throws -> [AuditEvent] {
        if records.isEmpty && audit.isEmpty { return [] }
        let work = Work(records: records, audit: audit)
        if case .write = pending.withLock({ $0.arrive() }) { return try await commitAsWriter(work) }
        let turn = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Turn, any Error>) in
            if pending.withLock({ $0.enqueue(PendingBatch(work: work, continuation: continuation)) }) == .write {
                continuation.resume(returning: .write)
            }
        }
        switch turn {
        case .committed(let events): return events
        case .write: return try await commitAsWriter(work)
        }
    }

    /// Commits `work` with what queued behind it (bounded, so one transaction stays short),
    /// resumes the others, then hands the writer's role on.
    private func commitAsWriter(_ work: Work) async throws -> [AuditEvent] {
        let queued = pending.withLock { $0.takeQueued(limit: 255) }
        let works = [work] + queued.map(\.work)
        var results: [Result<[AuditEvent], any Error>]
        do {
            results = try await write(works).map { .success($0) }
        } catch where works.count == 1 {
            results = [.failure(error)]
        } catch {
            // All or none per caller: retry each alone, so only the one at fault fails.
            results = []
            for w in works {
                do { results.append(.success(try await write([w])[0])) } catch { results.append(.failure(error)) }
            }
        }
        for (b, result) in zip(queued, results.dropFirst()) { b.continuation.resume(with: result.map { .committed($0) }) }
        if case .writer(let next) = pending.withLock({ $0.finish() }) { next.continuation.resume(returning: .write) }
        return try results[0].get()
    }

    struct Work: Sendable {
        let records: [Record]
        let audit: [AuditEvent]
    }

    /// What a queued insert is told: its events as committed, or that it holds the writer's role.
    enum Turn: Sendable {
        case committed([AuditEvent])
        case write
    }

    struct PendingBatch: Sendable {
        let work: Work
        let continuation: CheckedContinuation<Turn, any Error>
    }

    private func write(_ batches: [Work]) async throws -> [[AuditEvent]] {
        let records = batches.flatMap(\.records)
        let eventCount = batches.reduce(0) { $0 + $1.audit.count }
        // Usually one round trip: the records, the events and the head's move in one statement,
        // which does nothing if the head is no longer where we last left it.
        if eventCount > 0, records.count <= 1000, eventCount <= 1000 {
            for _ in 0..<3 {
                let head: AuditHead
                if let known = knownHead.withLock({ $0 }) { head = known } else { head = try await auditHead() }
                let (out, next) = Self.chain(batches, after: head)
                if try await writeIfHeadIs(head.seq, records: records, events: out.flatMap { $0 }, next: next) {
                    knownHead.withLock { $0 = next }
                    return out
                }
                knownHead.withLock { $0 = nil }  // another replica appended: read the head again
            }
        }
        // Under contention or for large batches: a transaction holding the head's row lock.
        let logger = logger
        let (out, next) = try await transaction { c in
            for chunk in stride(from: 0, to: records.count, by: 1000) {
                try await Self.rows(Self.postgresQuery(Self.insert(records[chunk..<min(chunk + 1000, records.count)])), on: c, logger: logger)
            }
            guard eventCount > 0 else { return (batches.map { _ in [AuditEvent]() }, AuditHead.genesis) }
            // The row lock orders appends from every replica into one chain.
            let head = try await Self.rows("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE", on: c, logger: logger)
            guard let row = head.first.map(PostgresRow.init) else { throw StorageError(.corrupt, "the audit chain head is missing") }
            let (out, next) = Self.chain(batches, after: AuditHead(seq: try row.int(0), hash: try row.bytes(1)))
            let events = out.flatMap { $0 }
            for chunk in stride(from: 0, to: events.count, by: 1000) {
                try await Self.rows(Self.postgresQuery(Self.insert(events[chunk..<min(chunk + 1000, events.count)])), on: c, logger: logger)
            }
            try await Self.rows(Self.postgresQuery(SQLStatement("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1",
                                                        [.integer(next.seq), .bytes(next.hash)])), on: c, logger: logger)
            return (out, next)
        }
        if eventCount > 0 { knownHead.withLock { $0 = next } }
        return out
    }

    /// Each batch's events linked after `head`, and the head after them.
    private static func chain(_ batches: [Work], after head: AuditHead) -> ([[AuditEvent]], AuditHead) {
        var head = head
        return (batches.map { head.link($0.audit) }, head)
    }

    /// Moves the head from `expected` to `next` and inserts the records and events, all in one
    /// statement (atomic on its own); false, with nothing written, if the head was not at `expected`.
    private func writeIfHeadIs(_ expected: Int64, records: [Record], events: [AuditEvent], next: AuditHead) async throws -> Bool {
        var s = SQLStatement("WITH h AS (UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1 AND seq = ? RETURNING 1)",
                             [.integer(next.seq), .bytes(next.hash), .integer(expected)])
        if !records.isEmpty {
            s += SQLStatement(", r AS (INSERT INTO records(\(Record.insertColumns)) SELECT * FROM (VALUES ")
            s += Self.valuesList(records.map(\.values))
            s += ") AS v WHERE EXISTS (SELECT 1 FROM h))"
        }
        s += SQLStatement(", e AS (INSERT INTO audit_events(\(AuditEvent.columns)) SELECT * FROM (VALUES ")
        s += Self.valuesList(events.map(\.values))
        s += ") AS v WHERE EXISTS (SELECT 1 FROM h)) SELECT count(*) FROM h"
        return try await rows(Self.postgresQuery(s)).first.map { try PostgresRow(row: $0).int(0) } == 1
    }

    private static func insert(_ records: ArraySlice<Record>) -> SQLStatement {
        SQLStatement("INSERT INTO records(\(Record.insertColumns)) VALUES ") + valuesList(records.map(\.values))
    }

    private static func insert(_ events: ArraySlice<AuditEvent>) -> SQLStatement {
        SQLStatement("INSERT INTO audit_events(\(AuditEvent.columns)) VALUES ") + valuesList(events.map(\.values))
    }

    /// `(?::bigint, ?::text, …), (…)` for a `VALUES` list. Typed: a NULL parameter has no type of
    /// its own, and inside `VALUES` it would not take the column's.
    private static func valuesList(_ values: [[SQLValue]]) -> SQLStatement {
        var s = SQLStatement("")
        for (i, row) in values.enumerated() {
            s.text += i > 0 ? ", (" : "("
            for (j, value) in row.enumerated() {
                if j > 0 { s.text += ", " }
                switch value {
                case .integer: s.text += "?::bigint"
                case .text: s.text += "?::text"
                case .bytes: s.text += "?::bytea"
                case .boolean: s.text += "?::boolean"
                }
            }
            s.text += ")"
            s.values += row
        }
        return s
    }

    /// The head every replica appends after (a row they lock), not the last event: another
    /// replica's append may be committing.
    public func auditHead() async throws -> AuditHead {
        guard let row = try await rows("SELECT seq, hash FROM audit_head WHERE id = 1").first.map(PostgresRow.init) else {
            throw StorageError(.corrupt, "the audit chain head is missing")
        }
        return AuditHead(seq: try row.int(0), hash: try row.bytes(1))
    }
}
