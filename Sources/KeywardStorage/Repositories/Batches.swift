// The batches repository: each batch's progress in the clear (OpenAI's status, counts and times,
// which carry nothing of the lines), and who runs it. Its `metadata` and every line's result are
// encrypted records.

/// A batch job (OpenAI's Batches API) as it stands. The replica that runs it holds a lease
/// (`owner`, `leaseUntil`) that it renews while it works; another replica takes the batch over
/// once the lease has lapsed. A cancel only sets ``cancellingAt``, which the runner never writes,
/// so that the runner's saves cannot undo it.
public struct Batch: Sendable, Hashable {
    public enum Status: String, Sendable, Hashable, CaseIterable {
        case validating, inProgress = "in_progress", finalizing, completed, failed, expired, cancelled

        /// The batch will not change again.
        public var isTerminal: Bool { self == .completed || self == .failed || self == .expired || self == .cancelled }
    }

    /// The record kind of a batch's encrypted part (its client's `metadata`), under the batch's
    /// id. An ended batch lives as long as it: once the record has expired the batch is not shown,
    /// and the purge deletes it. A running batch is shown until it ends (a cancel must reach it).
    public static let metadataKind = "batch"
    /// The record kinds of a line's result: answered with a 2xx status, or not.
    public static let outputKind = "batch.output"
    public static let errorKind = "batch.error"

    public let id: String
    public let tenant: String
    /// The token that created the batch: its lines are sent with its grants.
    public let token: String
    public let endpoint: String
    public let inputFile: String
    public var status: Status
    public let createdAt: Int64
    public let expiresAt: Int64
    public var inProgressAt: Int64?
    public var finalizingAt: Int64?
    public var completedAt: Int64?
    public var failedAt: Int64?
    public var expiredAt: Int64?
    public var cancellingAt: Int64?
    public var cancelledAt: Int64?
    public var total: Int64 = 0
    public var completed: Int64 = 0
    public var failed: Int64 = 0
    /// Lines sent (or being sent) so far, in file order: a line below this without a result was
    /// interrupted, and is never sent again.
    public var dispatched: Int64 = 0
    public var outputFile: String?
    public var errorFile: String?
    /// OpenAI's `errors` object (JSON) of a batch that failed: line numbers and reasons, never line content.
    public var errors: String?
    public var owner: String?
    public var leaseUntil: Int64?
    /// OpenAI's `output_expires_after`: the output and error files expire this many seconds
    /// after they are made; nil, they live as long as the tenant's retention allows.
    public var outputExpiresAfter: Int64?

    public init(id: String, tenant: String, token: String, endpoint: String, inputFile: String, createdAt: Int64, expiresAt: Int64) {
        self.id = id
        self.tenant = tenant
        self.token = token
        self.endpoint = endpoint
        self.inputFile = inputFile
        status = .validating
        self.createdAt = createdAt
        self.expiresAt = expiresAt
    }
}

public protocol BatchRepository: Sendable {
    func createBatch(_ batch: Batch) async throws
    func batch(id: String) async throws -> Batch?
    /// A tenant's batches, newest first, after the batch `after` (a cursor) if given; with
    /// `liveAt`, only those running or whose metadata record has not expired by then (see ``Batch/metadataKind``).
    func batches(tenant: String, after: String?, limit: Int, liveAt: Int64?) async throws -> [Batch]
    /// Batches not yet ended, oldest first: those a runner should take up if their lease has lapsed.
    func unfinishedBatches() async throws -> [Batch]
    /// Takes the batch for `owner` until `until` if it is unfinished and free (no owner, a lapsed
    /// lease, or `owner`'s own); returns it as taken, or nil.
    func claimBatch(id: String, owner: String, until: Int64, now: Int64) async throws -> Batch?
    /// Extends `owner`'s lease on the batch to `until` if it still holds it (it owns it and the
    /// lease has not lapsed by `now`: a lapsed lease may be another replica's already, and is
    /// only taken back through ``claimBatch(id:owner:until:now:)``); false when it does not.
    func renewBatch(id: String, owner: String, until: Int64, now: Int64) async throws -> Bool
    /// Gives `owner`'s lease on the batch up (at shutdown), for any replica to take at once.
    func releaseBatch(id: String, owner: String) async throws
    /// Saves what the runner owns of the batch (status, times but the cancel's, counts, files,
    /// errors; not the lease) if `owner` still holds it at `now`; false when it does not.
    func saveBatch(_ batch: Batch, owner: String, now: Int64) async throws -> Bool
    /// Marks an unfinished batch for cancelling; false if it has ended or is already cancelling.
    func cancelBatch(tenant: String, id: String, at time: Int64) async throws -> Bool
    /// The line results among `ids` (a batch's `<batch>.<line>` records) that exist, in no order.
    /// Named one by one, not as a range of ids: a range depends on the database's collation.
    func batchResults(tenant: String, ids: [String]) async throws -> [Record]
    /// Deletes the line results among `ids` (once the batch's files hold them); returns how many.
    func deleteBatchResults(tenant: String, ids: [String]) async throws -> Int
}

extension Batch {
    static let columns = """
        id, tenant, token, endpoint, input_file, status, created_at, expires_at, in_progress_at, finalizing_at, completed_at, \
        failed_at, expired_at, cancelling_at, cancelled_at, total, completed, failed, dispatched, output_file, error_file, errors, \
        owner, lease_until, output_expires_after
        """

    init(row r: some SQLRow) throws {
        let id = try r.text(0)
        guard let status = Status(rawValue: try r.text(5)) else { throw StorageError(.corrupt, "batch \(id) has an unknown status") }
        self.init(id: id, tenant: try r.text(1), token: try r.text(2), endpoint: try r.text(3), inputFile: try r.text(4),
                  createdAt: try r.int(6), expiresAt: try r.int(7))
        self.status = status
        inProgressAt = try r.optionalInt(8)
        finalizingAt = try r.optionalInt(9)
        completedAt = try r.optionalInt(10)
        failedAt = try r.optionalInt(11)
        expiredAt = try r.optionalInt(12)
        cancellingAt = try r.optionalInt(13)
        cancelledAt = try r.optionalInt(14)
        total = try r.int(15)
        completed = try r.int(16)
        failed = try r.int(17)
        dispatched = try r.int(18)
        outputFile = try r.optionalText(19)
        errorFile = try r.optionalText(20)
        errors = try r.optionalText(21)
        owner = try r.optionalText(22)
        leaseUntil = try r.optionalInt(23)
        outputExpiresAfter = try r.optionalInt(24)
    }

    var values: [SQLValue] {
        [.text(id), .text(tenant), .text(token), .text(endpoint), .text(inputFile), .text(status.rawValue), .integer(createdAt),
         .integer(expiresAt), .integer(inProgressAt), .integer(finalizingAt), .integer(completedAt), .integer(failedAt),
         .integer(expiredAt), .integer(cancellingAt), .integer(cancelledAt), .integer(total), .integer(completed), .integer(failed),
         .integer(dispatched), .text(outputFile), .text(errorFile), .text(errors), .text(owner), .integer(leaseUntil),
         .integer(outputExpiresAfter)]
    }

    static let unfinished = "status IN ('validating', 'in_progress', 'finalizing')"
}

extension SQLStore {
    public func createBatch(_ batch: Batch) async throws {
        let marks = Array(repeating: "?", count: batch.values.count).joined(separator: ", ")
        try await execute(SQLStatement("INSERT INTO batches(\(Batch.columns)) VALUES (\(marks))", batch.values))
    }

    public func batch(id: String) async throws -> Batch? {
        try await first(SQLStatement("SELECT \(Batch.columns) FROM batches WHERE id = ?", [.text(id)]), Batch.init(row:))
    }

    public func batches(tenant: String, after: String?, limit: Int, liveAt: Int64?) async throws -> [Batch] {
        var s = SQLStatement("SELECT \(Batch.columns) FROM batches WHERE tenant = ?", [.text(tenant)])
        if let liveAt {
            s += SQLStatement("""
                 AND (\(Batch.unfinished)
                      OR EXISTS (SELECT 1 FROM records r WHERE r.tenant = batches.tenant AND r.id = batches.id AND r.kind = ?
                                 AND (r.expires_at IS NULL OR r.expires_at > ?)))
                """, [.text(Batch.metadataKind), .integer(liveAt)])
        }
        if let after {
            guard let cursor = try await batch(id: after), cursor.tenant == tenant else {
                throw StorageError(.notFound, "no batch \(after) to list after")
            }
            s += SQLStatement(" AND (created_at, id) < (?, ?)", [.integer(cursor.createdAt), .text(after)])
        }
        s += SQLStatement(" ORDER BY created_at DESC, id DESC LIMIT ?", [.integer(Int64(max(0, min(limit, 1000))))])
        return try await query(s, Batch.init(row:))
    }

    public func unfinishedBatches() async throws -> [Batch] {
        try await query(SQLStatement("SELECT \(Batch.columns) FROM batches WHERE \(Batch.unfinished) ORDER BY created_at, id"),
                        Batch.init(row:))
    }

    public func claimBatch(id: String, owner: String, until: Int64, now: Int64) async throws -> Batch? {
        let taken = try await execute(SQLStatement("""
            UPDATE batches SET owner = ?, lease_until = ?
            WHERE id = ? AND \(Batch.unfinished) AND (owner IS NULL OR owner = ? OR lease_until < ?)
            """, [.text(owner), .integer(until), .text(id), .text(owner), .integer(now)]))
        guard taken == 1, let batch = try await batch(id: id), batch.owner == owner else { return nil }
        return batch
    }

    public func renewBatch(id: String, owner: String, until: Int64, now: Int64) async throws -> Bool {
        try await execute(SQLStatement("UPDATE batches SET lease_until = ? WHERE id = ? AND owner = ? AND lease_until >= ?",
                                       [.integer(until), .text(id), .text(owner), .integer(now)])) == 1
    }

    public func releaseBatch(id: String, owner: String) async throws {
        _ = try await execute(SQLStatement("UPDATE batches SET owner = NULL, lease_until = NULL WHERE id = ? AND owner = ?",
                                           [.text(id), .text(owner)]))
    }

    public func saveBatch(_ b: Batch, owner: String, now: Int64) async throws -> Bool {
        try await execute(SQLStatement("""
            UPDATE batches SET status = ?, in_progress_at = ?, finalizing_at = ?, completed_at = ?, failed_at = ?, expired_at = ?,
            cancelled_at = ?, total = ?, completed = ?, failed = ?, dispatched = ?, output_file = ?, error_file = ?, errors = ?
            WHERE id = ? AND owner = ? AND lease_until >= ?
            """, [.text(b.status.rawValue), .integer(b.inProgressAt), .integer(b.finalizingAt), .integer(b.completedAt),
                  .integer(b.failedAt), .integer(b.expiredAt), .integer(b.cancelledAt), .integer(b.total), .integer(b.completed),
                  .integer(b.failed), .integer(b.dispatched), .text(b.outputFile), .text(b.errorFile), .text(b.errors), .text(b.id),
                  .text(owner), .integer(now)])) == 1
    }

    /// ` FROM records WHERE tenant = ? AND kind IN (the results' kinds) AND id IN (ids)`.
    private func results(_ tenant: String, _ ids: [String]) -> SQLStatement {
        SQLStatement(" FROM records WHERE tenant = ? AND kind IN (?, ?) AND id IN ("
                     + Array(repeating: "?", count: ids.count).joined(separator: ", ") + ")", [.text(tenant), .text(Batch.outputKind), .text(Batch.errorKind)] + ids.map { .text($0) })
    }

    public func batchResults(tenant: String, ids: [String]) async throws -> [Record] {
        guard !ids.isEmpty else { return [] }
        return try await query(SQLStatement("SELECT \(Record.columns)") + results(tenant, ids), Record.init(row:))
    }

    public func deleteBatchResults(tenant: String, ids: [String]) async throws -> Int {
        guard !ids.isEmpty else { return 0 }
        return try await execute(SQLStatement("DELETE") + results(tenant, ids))
    }

    public func cancelBatch(tenant: String, id: String, at time: Int64) async throws -> Bool {
        try await execute(SQLStatement("""
            UPDATE batches SET cancelling_at = ?
            WHERE tenant = ? AND id = ? AND cancelling_at IS NULL AND status IN ('validating', 'in_progress')
            """, [.integer(time), .text(tenant), .text(id)])) == 1
    }
}
