// The jobs repository (holding a job for a batch is the engine's: see `withJobClaimed`).

extension Job {
    /// The columns a job is read from and written to, in the order of ``init(row:)`` and ``values``.
    public static let columns = """
        id, tenant, from_key, to_key, status, cursor_id, cursor_kind, processed, rewrapped, data_keys, total, created_at, \
        updated_at, active_ms, error, unmatched
        """

    public init(row r: some SQLRow) throws {
        guard let status = Status(rawValue: try r.text(4)) else { throw StorageError(.corrupt, "job \(try r.text(0)) has an unknown status") }
        self.init(id: try r.text(0), tenant: try r.text(1), fromKey: try r.text(2), toKey: try r.text(3), total: try r.int(10),
                  createdAt: try r.int(11))
        self.status = status
        cursorID = try r.optionalText(5)
        cursorKind = try r.optionalText(6)
        processed = try r.int(7)
        rewrapped = try r.int(8)
        dataKeys = try r.int(9)
        updatedAt = try r.int(12)
        activeMs = try r.int(13)
        error = try r.optionalText(14)
        unmatched = try r.int(15)
    }

    public static let insertSQL = "INSERT INTO jobs(\(columns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    /// Makes ``insertSQL`` save the progress of a job that exists.
    public static let saveSuffix = """
         ON CONFLICT (id) DO UPDATE SET status = excluded.status, cursor_id = excluded.cursor_id,
        cursor_kind = excluded.cursor_kind, processed = excluded.processed, rewrapped = excluded.rewrapped,
        data_keys = excluded.data_keys, total = excluded.total, updated_at = excluded.updated_at,
        active_ms = excluded.active_ms, error = excluded.error, unmatched = excluded.unmatched
        """

    /// The values of ``columns``, in order.
    public var values: [SQLValue] {
        [.text(id), .text(tenant), .text(fromKey), .text(toKey), .text(status.rawValue), .text(cursorID), .text(cursorKind),
         .integer(processed), .integer(rewrapped), .integer(dataKeys), .integer(total), .integer(createdAt), .integer(updatedAt),
         .integer(activeMs), .text(error), .integer(unmatched)]
    }

    /// Inserts the job, or saves its progress if it exists.
    public var save: SQLStatement { SQLStatement(Self.insertSQL + Self.saveSuffix, values) }
}

extension SQLStore {
    public func createJob(_ job: Job) async throws {
        try await execute(SQLStatement(Job.insertSQL, job.values))
    }

    public func job(id: String) async throws -> Job? {
        try await first(SQLStatement("SELECT \(Job.columns) FROM jobs WHERE id = ?", [.text(id)]), Job.init(row:))
    }

    public func jobs(status: Job.Status) async throws -> [Job] {
        try await query(SQLStatement("SELECT \(Job.columns) FROM jobs WHERE status = ? ORDER BY created_at, id", [.text(status.rawValue)]),
                        Job.init(row:))
    }

    public func updateJob(_ job: Job) async throws {
        try await execute(job.save)
    }
}
