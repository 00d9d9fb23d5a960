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
    /// A tenant's batches, newest first, after the batch `after` (a cursor) if given.
    func batches(tenant: String, after: String?, limit: Int) async throws -> [Batch]
    /// Batches not yet ended, oldest first: those a runner should take up if their lease has lapsed.
    func unfinishedBatches() async throws -> [Batch]
    /// Takes the batch for `owner` until `until` if it is unfinished and free (no owner, a lapsed
    /// lease, or `owner`'s own); returns it as taken, or nil.
    func claimBatch(id: String, owner: String, until: Int64, now: Int64) async throws -> Batch?
    /// Saves what the runner owns of the batch (status, times but the cancel's, counts, files,
    /// errors; not the lease, which only ``claimBatch(id:owner:until:now:)`` moves) if `owner`
    /// still holds it; false when it does not.
    func saveBatch(_ batch: Batch, owner: String) async throws -> Bool
    /// Marks an unfinished batch for cancelling; false if it has ended or is already cancelling.
    func cancelBatch(tenant: String, id: String, at time: Int64) async throws -> Bool
    /// The records of a batch's line results (ids `<batch>.<line>`), in id order, after `after`.
    func batchResults(tenant: String, batch: String, after: String?, limit: Int) async throws -> [Record]
    /// The ids of a batch's line results.
    func batchResultIDs(tenant: String, batch: String) async throws -> [String]
    /// Deletes a batch's line results (once its files hold them); returns how many.
    func deleteBatchResults(tenant: String, batch: String) async throws -> Int
}

extension Batch {
    static let columns = """
        id, tenant, token, endpoint, input_file, status, created_at, expires_at, in_progress_at, finalizing_at, completed_at, \
        failed_at, expired_at, cancelling_at, cancelled_at, total, completed, failed, dispatched, output_file, error_file, errors, \
        owner, lease_until
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
    }

    var values: [SQLValue] {
        [.text(id), .text(tenant), .text(token), .text(endpoint), .text(inputFile), .text(status.rawValue), .integer(createdAt),
         .integer(expiresAt), .integer(inProgressAt), .integer(finalizingAt), .integer(completedAt), .integer(failedAt),
         .integer(expiredAt), .integer(cancellingAt), .integer(cancelledAt), .integer(total), .integer(completed), .integer(failed),
         .integer(dispatched), .text(outputFile), .text(errorFile), .text(errors), .text(owner), .integer(leaseUntil)]
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

    public func batches(tenant: String, after: String?, limit: Int) async throws -> [Batch] {
        var s = SQLStatement("SELECT \(Batch.columns) FROM batches WHERE tenant = ?", [.text(tenant)])
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

    public func saveBatch(_ b: Batch, owner: String) async throws -> Bool {
        try await execute(SQLStatement("""
            UPDATE batches SET status = ?, in_progress_at = ?, finalizing_at = ?, completed_at = ?, failed_at = ?, expired_at = ?,
            cancelled_at = ?, total = ?, completed = ?, failed = ?, dispatched = ?, output_file = ?, error_file = ?, errors = ?
            WHERE id = ? AND owner = ?
            """, [.text(b.status.rawValue), .integer(b.inProgressAt), .integer(b.finalizingAt), .integer(b.completedAt),
                  .integer(b.failedAt), .integer(b.expiredAt), .integer(b.cancelledAt), .integer(b.total), .integer(b.completed),
                  .integer(b.failed), .integer(b.dispatched), .text(b.outputFile), .text(b.errorFile), .text(b.errors), .text(b.id), .text(owner)])) == 1
    }

    /// Line results are the records whose id is the batch's followed by a dot: `>= "<batch>."`
    /// and `< "<batch>/"` (the next character) is that range on the primary key.
    private func resultRange(_ tenant: String, _ batch: String) -> SQLStatement {
        SQLStatement(" FROM records WHERE tenant = ? AND id > ? AND id < ?", [.text(tenant), .text(batch + "."), .text(batch + "/")])
    }

    public func batchResults(tenant: String, batch: String, after: String?, limit: Int) async throws -> [Record] {
        var s = SQLStatement("SELECT \(Record.columns)") + resultRange(tenant, batch)
        if let after { s += SQLStatement(" AND id > ?", [.text(after)]) }
        return try await query(s + SQLStatement(" ORDER BY id LIMIT ?", [.integer(Int64(limit))]), Record.init(row:))
    }

    public func batchResultIDs(tenant: String, batch: String) async throws -> [String] {
        try await queryLong(SQLStatement("SELECT id") + resultRange(tenant, batch)) { try $0.text(0) }
    }

    public func deleteBatchResults(tenant: String, batch: String) async throws -> Int {
        try await executeLong(SQLStatement("DELETE") + resultRange(tenant, batch))
    }

    public func cancelBatch(tenant: String, id: String, at time: Int64) async throws -> Bool {
        try await execute(SQLStatement("""
            UPDATE batches SET cancelling_at = ?
            WHERE tenant = ? AND id = ? AND cancelling_at IS NULL AND status IN ('validating', 'in_progress')
            """, [.integer(time), .text(tenant), .text(id)])) == 1
    }
}
