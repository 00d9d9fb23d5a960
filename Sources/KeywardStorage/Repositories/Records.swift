import Foundation

// The records repository: encrypted records and their clear metadata.

extension Record {
    /// The columns a record is read from; ``values`` adds `model` (the metadata's label) when it is written.
    public static let columns = "tenant, id, kind, created_at, expires_at, metadata, header, body"
    public static let insertColumns = columns + ", model"
    public static let insertSQL = "INSERT INTO records(\(insertColumns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"

    public init(row r: some SQLRow) throws {
        let id = try r.text(1)
        guard let metadata = try? JSONDecoder().decode(RecordMetadata.self, from: Data(try r.text(5).utf8)) else {
            throw StorageError(.corrupt, "record \(id) has unreadable metadata")
        }
        self.init(tenant: try r.text(0), id: id, kind: try r.text(2), createdAt: try r.int(3), expiresAt: try r.optionalInt(4),
                  metadata: metadata, header: try r.bytes(6), body: try r.bytes(7))
    }

    /// The values of ``insertColumns``, in order.
    public var values: [SQLValue] {
        [.text(tenant), .text(id), .text(kind), .integer(createdAt), .integer(expiresAt), .text(metadata.json), .bytes(header),
         .bytes(body), .text(metadata.label)]
    }
}

extension SQLStore {
    public func upsert(_ r: Record) async throws {
        try await execute(SQLStatement(Record.insertSQL + """
             ON CONFLICT (tenant, id, kind) DO UPDATE SET created_at = excluded.created_at, expires_at = excluded.expires_at,
            metadata = excluded.metadata, header = excluded.header, body = excluded.body, model = excluded.model
            """, r.values))
    }

    public func record(tenant: String, id: String, kind: String) async throws -> Record? {
        try await first(SQLStatement("SELECT \(Record.columns) FROM records WHERE tenant = ? AND id = ? AND kind = ?",
                                     [.text(tenant), .text(id), .text(kind)]), Record.init(row:))
    }

    public func records(tenant: String, ids: [String]) async throws -> [Record] {
        var out: [Record] = []
        // Through the primary key, a few hundred ids a statement (engines bound their parameters).
        for start in stride(from: 0, to: ids.count, by: 500) {
            let part = ids[start..<min(start + 500, ids.count)]
            let marks = Array(repeating: "?", count: part.count).joined(separator: ", ")
            out += try await query(SQLStatement("SELECT id, kind, created_at, expires_at, header, body FROM records WHERE tenant = ? AND id IN (\(marks))",
                                                [.text(tenant)] + part.map { .text($0) })) {
                Record(tenant: tenant, id: try $0.text(0), kind: try $0.text(1), createdAt: try $0.int(2), expiresAt: try $0.optionalInt(3),
                       metadata: RecordMetadata(), header: try $0.bytes(4), body: try $0.bytes(5))
            }
        }
        return out
    }

    public func records(_ q: RecordQuery) async throws -> [Record] {
        let limit = Int64(max(0, min(q.limit, RecordQuery.maxLimit)))
        let (cmp, order) = q.order == .ascending ? (">", "ASC") : ("<", "DESC")
        var s = SQLStatement("SELECT \(Record.columns) FROM records WHERE tenant = ? AND kind = ?", [.text(q.tenant), .text(q.kind)])
        if let label = q.label { s += SQLStatement(" AND model = ?", [.text(label)]) }
        if let time = q.liveAt { s += SQLStatement(" AND (expires_at IS NULL OR expires_at > ?)", [.integer(time)]) }
        if let after = q.after {
            guard let created = try await first(SQLStatement("SELECT created_at FROM records WHERE tenant = ? AND id = ? AND kind = ?",
                                                             [.text(q.tenant), .text(after), .text(q.kind)]), { try $0.int(0) }) else {
                throw StorageError(.notFound, "no record \(after) to list after")
            }
            s += SQLStatement(" AND (created_at, id) \(cmp) (?, ?)", [.integer(created), .text(after)])
        }
        s += SQLStatement(" ORDER BY created_at \(order), id \(order) LIMIT ?", [.integer(limit)])
        return try await query(s, Record.init(row:))
    }

    public func recordHeaders(tenant: String, after: (id: String, kind: String)?, limit: Int) async throws -> [RecordHeader] {
        try await page("id, kind, header, expires_at", tenant: tenant, after: after, limit: limit) {
            RecordHeader(id: try $0.text(0), kind: try $0.text(1), header: try $0.bytes(2), expiresAt: try $0.optionalInt(3))
        }
    }

    public func records(tenant: String, after: (id: String, kind: String)?, limit: Int) async throws -> [Record] {
        try await page(Record.columns, tenant: tenant, after: after, limit: limit, Record.init(row:))
    }

    /// A tenant's rows after (id, kind), in that order, through the unique index.
    private func page<T>(_ columns: String, tenant: String, after: (id: String, kind: String)?, limit: Int,
                         _ decode: (Row) throws -> T) async throws -> [T] {
        var s = SQLStatement("SELECT \(columns) FROM records WHERE tenant = ?", [.text(tenant)])
        if let after { s += SQLStatement(" AND (id, kind) > (?, ?)", [.text(after.id), .text(after.kind)]) }
        s += SQLStatement(" ORDER BY id, kind LIMIT ?", [.integer(Int64(limit))])
        return try await query(s, decode)
    }

    public func countRecords(tenant: String) async throws -> Int64 {
        // A count walks every row of the tenant: the long allowance, as for purges.
        try await queryLong(SQLStatement("SELECT count(*) FROM records WHERE tenant = ?", [.text(tenant)])) { try $0.int(0) }.first ?? 0
    }

    public func deleteRecord(tenant: String, id: String, kind: String) async throws -> Bool {
        try await execute(SQLStatement("DELETE FROM records WHERE tenant = ? AND id = ? AND kind = ?",
                                       [.text(tenant), .text(id), .text(kind)])) > 0
    }

    public func deleteRecords(tenant: String, id: String) async throws -> Int {
        try await executeLong(SQLStatement("DELETE FROM records WHERE tenant = ? AND id = ?", [.text(tenant), .text(id)]))
    }

    public func deleteAllRecords(tenant: String) async throws -> Int {
        try await executeLong(SQLStatement("DELETE FROM records WHERE tenant = ?", [.text(tenant)]))
    }

    public func purgeExpired(before time: Int64) async throws -> Int {
        let records = try await executeLong(SQLStatement("DELETE FROM records WHERE expires_at IS NOT NULL AND expires_at < ?", [.integer(time)]))
        // A running batch keeps its row until it ends (its runner still writes it); the next pass takes it.
        _ = try await executeLong(SQLStatement("""
            DELETE FROM batches WHERE NOT (\(Batch.unfinished))
              AND NOT EXISTS (SELECT 1 FROM records r WHERE r.tenant = batches.tenant AND r.id = batches.id AND r.kind = ?)
            """, [.text(Batch.metadataKind)]))
        return records
    }
}
