import KeywardAudit

// The audit chain's reads and checkpoints (appending is the engine's group commit).

extension AuditEvent {
    /// The columns an event is read from and written to, in the order of ``init(row:)`` and ``values``.
    public static let columns = "seq, time, actor, tenant, key, operation, purpose, request_id, record, result, detail, prev_hash, hash"
    public static let insertSQL = "INSERT INTO audit_events(\(columns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"

    public init(row r: some SQLRow) throws {
        self.init(time: try r.int(1), actor: try r.text(2), tenant: try r.optionalText(3), key: try r.optionalText(4),
                  operation: AuditOperation(rawValue: try r.text(5)), purpose: try r.optionalText(6), requestID: try r.optionalText(7),
                  record: try r.optionalText(8), result: AuditResult(rawValue: try r.text(9)), detail: try r.optionalText(10))
        seq = try r.int(0)
        previousHash = try r.bytes(11)
        hash = try r.bytes(12)
    }

    /// The values of ``columns``, in order.
    public var values: [SQLValue] {
        [.integer(seq), .integer(time), .text(actor), .text(tenant), .text(key), .text(operation.rawValue), .text(purpose),
         .text(requestID), .text(record), .text(result.rawValue), .text(detail), .bytes(previousHash), .bytes(hash)]
    }
}

extension SQLStore {
    @discardableResult
    public func appendAudit(_ events: [AuditEvent]) async throws -> [AuditEvent] {
        try await insert([], audit: events)
    }

    public func auditEvents(_ q: AuditQuery) async throws -> [AuditEvent] {
        var s = SQLStatement("SELECT \(AuditEvent.columns) FROM audit_events WHERE seq > ?", [.integer(q.afterSeq)])
        if let since = q.since { s += SQLStatement(" AND time >= ?", [.integer(since)]) }
        if let tenant = q.tenant { s += SQLStatement(" AND tenant = ?", [.text(tenant)]) }
        if let key = q.key { s += SQLStatement(" AND key = ?", [.text(key)]) }
        if let operation = q.operation { s += SQLStatement(" AND operation = ?", [.text(operation.rawValue)]) }
        s += SQLStatement(" ORDER BY seq LIMIT ?", [.integer(Int64(max(0, q.limit)))])
        return try await query(s, AuditEvent.init(row:))
    }

    public func insertCheckpoint(_ c: AuditCheckpoint) async throws {
        try await execute(SQLStatement("""
            INSERT INTO audit_checkpoints(seq, hash, time, public_key, signature) VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (seq) DO UPDATE SET hash = excluded.hash, time = excluded.time, public_key = excluded.public_key,
            signature = excluded.signature
            """, [.integer(c.seq), .bytes(c.hash), .integer(c.time), .bytes(c.publicKey), .bytes(c.signature)]))
    }

    public func checkpoints() async throws -> [AuditCheckpoint] {
        try await query(SQLStatement("SELECT seq, hash, time, public_key, signature FROM audit_checkpoints ORDER BY seq")) {
            AuditCheckpoint(seq: try $0.int(0), hash: try $0.bytes(1), time: try $0.int(2), publicKey: try $0.bytes(3),
                            signature: try $0.bytes(4))
        }
    }
}
