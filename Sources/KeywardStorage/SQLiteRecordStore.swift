import Foundation
import Synchronization

/// The embedded default store: one SQLite database in WAL mode, written through one connection.
///
/// Calls run under a lock on the caller's thread: each is a few microseconds of in-process work
/// (WAL with `synchronous=NORMAL` syncs at checkpoints, not at each commit), cheaper than a hop
/// to a thread pool. A crash of the process loses nothing committed; a power loss may lose the
/// last transactions since the last checkpoint.
public final class SQLiteRecordStore: RecordStore {
    private let connection: Mutex<SQLiteConnection>
    /// Checkpoints run on their own connection, off the request path: a checkpoint syncs the
    /// database file, which would stall every writer if it ran inside a commit.
    private let checkpointer: Mutex<SQLiteConnection?>
    public let path: String

    /// Opens or creates the database at `path` (`:memory:` for a private, temporary one).
    public init(path: String) throws {
        self.path = path
        let c = try SQLiteConnection(path: path)
        // secure_delete zeroes freed pages; temp_store keeps sorts and temporary tables off disk;
        // a 64 MiB page cache keeps the indexes' hot pages in memory as the database grows.
        try c.exec("""
            PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;
            PRAGMA secure_delete=ON; PRAGMA temp_store=MEMORY; PRAGMA wal_autocheckpoint=0;
            PRAGMA cache_size=-65536; PRAGMA journal_size_limit=67108864;
            """)
        connection = Mutex(c)
        checkpointer = Mutex(path == ":memory:" ? nil : try SQLiteConnection(path: path))
    }

    /// 64 MiB of 4 KiB pages. The reset below holds writers for a copy and an fsync (measured
    /// 15-70 ms here); of the bounds tried (16, 64, 256 MiB) this one stalled least.
    static let maxLogFrames: Int64 = 16_384

    /// Copies the write-ahead log into the database without blocking writers; the gateway calls
    /// it every second. Returns the number of log frames copied.
    @discardableResult
    public func maintain() async throws -> Int {
        // On a thread of its own: a checkpoint writes and syncs the database file for milliseconds,
        // which must not stall whichever executor thread (perhaps an event loop) called us.
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(with: Result {
                    try self.checkpointer.withLock { c in
                        guard let c else { return 0 }
                        // (busy, frames in the log, frames copied)
                        let passive = try c.query("PRAGMA wal_checkpoint(PASSIVE)") { ($0.int(1), $0.int(2)) }.first ?? (0, 0)
                        // Under steady writes a passive checkpoint never catches up with the log's end,
                        // so the writer never restarts the log and it grows without bound. Past 64 MiB,
                        // hold our writer back (in-process lock, no SQLite busy-waiting) while a second
                        // passive pass copies the little written since the first: the checkpoint is then
                        // complete, the next write restarts the log, and journal_size_limit trims the file.
                        if passive.0 > Self.maxLogFrames {
                            _ = try self.run { _ in try c.query("PRAGMA wal_checkpoint(PASSIVE)") { $0.int(0) } }
                        }
                        return Int(passive.1)
                    }
                })
            }
        }
    }

    private func run<T>(_ body: (SQLiteConnection) throws -> T) throws -> T {
        try connection.withLock { try body($0) }
    }

    public func migrate() async throws {
        try run { c in
            try c.transaction {
                let version = try c.query("PRAGMA user_version") { $0.int(0) }.first ?? 0
                guard version < 1 else { return }
                try c.exec("""
                    CREATE TABLE tenants(
                        name TEXT PRIMARY KEY, key TEXT NOT NULL, store TEXT NOT NULL,
                        retention_days INTEGER NOT NULL, created_at INTEGER NOT NULL);
                    CREATE INDEX tenants_key ON tenants(key);
                    CREATE TABLE tokens(
                        id TEXT PRIMARY KEY, hash BLOB NOT NULL UNIQUE,
                        tenant TEXT REFERENCES tenants(name), role TEXT NOT NULL, created_at INTEGER NOT NULL);
                    CREATE TABLE records(
                        tenant TEXT NOT NULL REFERENCES tenants(name), id TEXT NOT NULL, kind TEXT NOT NULL,
                        created_at INTEGER NOT NULL, expires_at INTEGER, model TEXT, metadata TEXT NOT NULL,
                        header BLOB NOT NULL, body BLOB NOT NULL,
                        UNIQUE(tenant, id, kind));
                    CREATE INDEX records_list ON records(tenant, kind, created_at, id);
                    CREATE INDEX records_expiry ON records(expires_at) WHERE expires_at IS NOT NULL;
                    PRAGMA user_version=1;
                    """)
            }
        }
    }

    public func ping() async throws {
        _ = try run { try $0.query("SELECT 1") { $0.int(0) } }
    }

    // MARK: Tenants

    private static let tenantColumns = "name, key, store, retention_days, created_at"
    private static func tenant(_ row: SQLiteRow) throws -> Tenant {
        guard let store = Tenant.StorePolicy(rawValue: row.text(2)) else {
            throw StorageError(.corrupt, "tenant \(row.text(0)) has an unknown store policy")
        }
        return Tenant(name: row.text(0), key: row.text(1), store: store, retentionDays: Int(row.int(3)), createdAt: row.int(4))
    }

    public func createTenant(_ tenant: Tenant) async throws {
        try run {
            try $0.execute("INSERT INTO tenants(\(Self.tenantColumns)) VALUES (?, ?, ?, ?, ?)", [
                .text(tenant.name), .text(tenant.key), .text(tenant.store.rawValue),
                .integer(Int64(tenant.retentionDays)), .integer(tenant.createdAt),
            ])
        }
    }

    public func tenant(named name: String) async throws -> Tenant? {
        try run { try $0.query("SELECT \(Self.tenantColumns) FROM tenants WHERE name = ?", [.text(name)], Self.tenant).first }
    }

    public func tenants() async throws -> [Tenant] {
        try run { try $0.query("SELECT \(Self.tenantColumns) FROM tenants ORDER BY name", [], Self.tenant) }
    }

    public func tenants(usingKey key: String) async throws -> [Tenant] {
        try run { try $0.query("SELECT \(Self.tenantColumns) FROM tenants WHERE key = ? ORDER BY name", [.text(key)], Self.tenant) }
    }

    // MARK: Tokens

    private static let tokenColumns = "id, tenant, role, hash, created_at"
    private static func token(_ row: SQLiteRow) throws -> TokenRecord {
        guard let role = TokenRecord.Role(rawValue: row.text(2)) else {
            throw StorageError(.corrupt, "token \(row.text(0)) has an unknown role")
        }
        return TokenRecord(id: row.text(0), tenant: row.optionalText(1), role: role, hash: row.blob(3), createdAt: row.int(4))
    }

    public func insertToken(_ token: TokenRecord) async throws {
        try run {
            try $0.execute("INSERT INTO tokens(\(Self.tokenColumns)) VALUES (?, ?, ?, ?, ?)", [
                .text(token.id), SQLValue(token.tenant), .text(token.role.rawValue), .blob(token.hash), .integer(token.createdAt),
            ])
        }
    }

    public func token(hash: [UInt8]) async throws -> TokenRecord? {
        try run { try $0.query("SELECT \(Self.tokenColumns) FROM tokens WHERE hash = ?", [.blob(hash)], Self.token).first }
    }

    public func tokens(role: TokenRecord.Role) async throws -> [TokenRecord] {
        try run { try $0.query("SELECT \(Self.tokenColumns) FROM tokens WHERE role = ? ORDER BY created_at, id", [.text(role.rawValue)], Self.token) }
    }

    public func deleteToken(id: String) async throws -> Bool {
        try run { try $0.execute("DELETE FROM tokens WHERE id = ?", [.text(id)]) > 0 }
    }

    // MARK: Records

    private static let recordColumns = "tenant, id, kind, created_at, expires_at, metadata, header, body"

    private static func record(_ row: SQLiteRow) throws -> Record {
        guard let metadata = try? JSONDecoder().decode(RecordMetadata.self, from: Data(row.text(5).utf8)) else {
            throw StorageError(.corrupt, "record \(row.text(1)) has unreadable metadata")
        }
        return Record(tenant: row.text(0), id: row.text(1), kind: row.text(2), createdAt: row.int(3),
                      expiresAt: row.optionalInt(4), metadata: metadata, header: row.blob(6), body: row.blob(7))
    }

    /// The metadata as a JSON object, written by hand: JSONEncoder costs more than the insert.
    static func json(_ m: RecordMetadata) -> String {
        var parts: [String] = []
        func add(_ key: String, _ value: (some CustomStringConvertible)?) { if let value { parts.append("\"\(key)\":\(value)") } }
        if let model = m.model { parts.append("\"model\":" + quoted(model)) }
        add("status", m.status)
        add("promptTokens", m.promptTokens)
        add("completionTokens", m.completionTokens)
        add("upstreamMs", m.upstreamMs.map { $0.isFinite ? $0 : 0 })
        add("size", m.size)
        add("streamed", m.streamed)
        return "{" + parts.joined(separator: ",") + "}"
    }

    private static func quoted(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where u.value < 0x20: out += String(format: "\\u%04x", u.value)
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }

    private static func arguments(_ r: Record) throws -> [SQLValue] {
        let metadata = json(r.metadata)
        return [.text(r.tenant), .text(r.id), .text(r.kind), .integer(r.createdAt), SQLValue(r.expiresAt),
                .text(metadata), .blob(r.header), .blob(r.body), SQLValue(r.metadata.model)]
    }

    private static let insertSQL = "INSERT INTO records(\(recordColumns), model) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"

    /// Inserts waiting while another caller writes are committed together by that caller, in one
    /// transaction (group commit): one WAL append for many requests under load.
    public func insert(_ records: [Record]) async throws {
        let rows = try records.map(Self.arguments)
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let lead = pending.withLock { p -> Bool in
                p.batches.append(PendingBatch(rows: rows, continuation: continuation))
                guard !p.writing else { return false }
                p.writing = true
                return true
            }
            if lead { drainPendingInserts() }
        }
    }

    private struct PendingBatch: Sendable {
        let rows: [[SQLValue]]
        let continuation: CheckedContinuation<Void, any Error>
    }

    private struct PendingInserts: Sendable {
        var batches: [PendingBatch] = []
        var writing = false
    }

    private let pending = Mutex(PendingInserts())

    private func drainPendingInserts() {
        while true {
            let batches = pending.withLock { p -> [PendingBatch] in
                if p.batches.isEmpty { p.writing = false }
                defer { p.batches = [] }
                return p.batches
            }
            if batches.isEmpty { return }
            do {
                try write(batches)
                for b in batches { b.continuation.resume() }
            } catch where batches.count == 1 {
                batches[0].continuation.resume(throwing: error)
            } catch {
                // All or none per caller: retry each alone, so only the one at fault fails.
                for b in batches {
                    do { try write([b]); b.continuation.resume() } catch { b.continuation.resume(throwing: error) }
                }
            }
        }
    }

    private func write(_ batches: [PendingBatch]) throws {
        try run { c in
            try c.transaction {
                for b in batches {
                    for row in b.rows { try c.execute(Self.insertSQL, row) }
                }
            }
        }
    }

    public func upsert(_ record: Record) async throws {
        let row = try Self.arguments(record)
        try run {
            try $0.execute("INSERT OR REPLACE INTO records(\(Self.recordColumns), model) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
        }
    }

    public func record(tenant: String, id: String, kind: String) async throws -> Record? {
        try run {
            try $0.query("SELECT \(Self.recordColumns) FROM records WHERE tenant = ? AND id = ? AND kind = ?",
                         [.text(tenant), .text(id), .text(kind)], Self.record).first
        }
    }

    public func records(_ q: RecordQuery) async throws -> [Record] {
        let limit = Int64(max(0, min(q.limit, 1000)))
        let (cmp, order) = q.order == .ascending ? (">", "ASC") : ("<", "DESC")
        return try run { c in
            var sql = "SELECT \(Self.recordColumns) FROM records WHERE tenant = ? AND kind = ?"
            var args: [SQLValue] = [.text(q.tenant), .text(q.kind)]
            if let model = q.model {
                sql += " AND model = ?"
                args.append(.text(model))
            }
            if let after = q.after {
                guard let created = try c.query("SELECT created_at FROM records WHERE tenant = ? AND id = ? AND kind = ?",
                                                [.text(q.tenant), .text(after), .text(q.kind)], { $0.int(0) }).first else {
                    throw StorageError(.notFound, "no record \(after) to list after")
                }
                sql += " AND (created_at, id) \(cmp) (?, ?)"
                args += [.integer(created), .text(after)]
            }
            sql += " ORDER BY created_at \(order), id \(order) LIMIT ?"
            args.append(.integer(limit))
            return try c.query(sql, args, Self.record)
        }
    }

    public func deleteRecords(tenant: String, id: String) async throws -> Int {
        try run { try $0.execute("DELETE FROM records WHERE tenant = ? AND id = ?", [.text(tenant), .text(id)]) }
    }

    public func purgeExpired(before time: Int64) async throws -> Int {
        try run { try $0.execute("DELETE FROM records WHERE expires_at IS NOT NULL AND expires_at < ?", [.integer(time)]) }
    }
}
