import Foundation
import KeywardAudit
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
    /// Keeps the log's pages cached (see ``ResidentFileRange``); internal for a test.
    let residentLog: ResidentFileRange?
    public let path: String

    /// Runs a closure where the calling task came from; see ``init(path:callerHome:)``.
    public typealias Home = @Sendable (@escaping @Sendable () -> Void) -> Void

    /// Where an insert that waits for another caller's commit is resumed: nil, on the thread
    /// that committed it.
    private let callerHome: @Sendable () -> Home?

    /// Opens or creates the database at `path` (`:memory:` for a private, temporary one).
    ///
    /// - Parameter callerHome: called when an insert waits for another caller's commit; returns
    ///   how to run code on the caller's own thread. The gateway returns its event loop, so that a
    ///   request does not continue on the loop that happened to commit it (and hop back for
    ///   every write to its connection).
    public init(path: String, callerHome: @escaping @Sendable () -> Home? = { nil }) throws {
        self.path = path
        self.callerHome = callerHome
        let c = try SQLiteConnection(path: path)
        // secure_delete zeroes freed pages; temp_store keeps sorts and temporary tables off disk;
        // a 64 MiB page cache keeps the indexes' hot pages in memory as the database grows; the
        // log file is trimmed only past twice the size at which checkpoints restart it (trimming
        // it to that size at each restart cost a truncate and a regrowth every second under load).
        try c.exec("""
            PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;
            PRAGMA secure_delete=ON; PRAGMA temp_store=MEMORY; PRAGMA wal_autocheckpoint=0;
            PRAGMA cache_size=-65536; PRAGMA journal_size_limit=134217728; SELECT 1 FROM sqlite_master LIMIT 1;
            """)
        connection = Mutex(c)
        checkpointer = Mutex(path == ":memory:" ? nil : try SQLiteConnection(path: path))
        if path != ":memory:" && c.preallocateLog(bytes: Self.logFileBytes) {
            residentLog = ResidentFileRange(path: path + "-wal", length: Int(Self.logFileBytes))
        } else {
            residentLog = nil
        }
    }

    /// The log file's size, allocated when the store opens (and the size past which restarts trim
    /// it), so that appends never grow it. An fsync of a growing file holds its inode lock while it
    /// writes the new size and blocks, and every append waits meanwhile: measured on this
    /// project's machine (ext4), appends stalled up to 48 ms against 4 ms into allocated space.
    /// PostgreSQL preallocates its log segments for the same reason. SQLite reads the zeros past
    /// the last frame as the log's end.
    static let logFileBytes: Int64 = 134_217_728



    /// 64 MiB of 4 KiB pages: past this, a checkpoint holds writers back briefly to restart the log.
    static let maxLogFrames: Int64 = 16_384
    /// Passive passes repeat until one copies at most this much (4 MiB): the pass that then holds
    /// writers back copies and syncs about as little.
    static let finalPassFrames: Int64 = 1_024

    /// Copies the write-ahead log into the database without blocking writers; the gateway calls
    /// it four times a second. Returns the number of log frames copied.
    @discardableResult
    public func maintain() async throws -> Int {
        // On a thread of its own: a checkpoint writes and syncs the database file for milliseconds,
        // which must not stall whichever executor thread (perhaps an event loop) called us.
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(with: Result { try self.checkpoint() })
            }
        }
    }

    private func checkpoint() throws -> Int {
        try checkpointer.withLock { c in
            guard let c else { return 0 }
            // (frames in the log, frames copied so far)
            func pass() throws -> (log: Int64, copied: Int64) {
                try c.query("PRAGMA wal_checkpoint(PASSIVE)") { ($0.int(1), $0.int(2)) }.first ?? (0, 0)
            }
            var state = try pass()
            let copied = state.copied
            guard state.log > Self.maxLogFrames else { return Int(copied) }
            // Under steady writes a passive checkpoint never catches up with the log's end, so the
            // writer never restarts the log and it grows without bound. Copying is faster than our
            // writers fill the log: repeat until little is left, then hold writers back (their
            // inserts queue; no thread blocks on them) while a last pass copies the rest. The
            // checkpoint is then complete, the next write restarts the log, and journal_size_limit
            // trims the file.
            for _ in 0..<8 {
                let before = state.copied
                state = try pass()
                if state.copied - before <= Self.finalPassFrames { break }
            }
            // The last pass syncs the database file before the log restarts, which would flush
            // every page the passive passes copied (tens of milliseconds with writers held): flush
            // them now, and the log written so far, so that it syncs only what it copies itself.
            c.syncFiles()
            holdWriters()
            defer { _ = commitAsWriter(nil) }
            _ = try run { _ in try pass() }
            return Int(copied)
        }
    }

    /// Takes the writer's role from the group commit, so inserts queue until `commitAsWriter`. While this waits, a writer frees the role instead of
    /// passing it on, and new inserts queue: under steady load the role would otherwise go from
    /// writer to writer for good.
    private func holdWriters() {
        pending.withLock { $0.checkpointWaiting = true }
        while !pending.withLock({ p in
            guard !p.writing else { return false }
            p.writing = true
            p.checkpointWaiting = false
            return true
        }) {
            usleep(50)  // a commit takes microseconds
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
            try c.transaction {
                let version = try c.query("PRAGMA user_version") { $0.int(0) }.first ?? 0
                guard version < 2 else { return }
                // Version 2: key life cycle, policies, audit chain, jobs.
                try c.exec("""
                    ALTER TABLE tenants ADD COLUMN previous_key TEXT;
                    ALTER TABLE tokens ADD COLUMN suspended INTEGER NOT NULL DEFAULT 0;
                    CREATE TABLE policies(key TEXT PRIMARY KEY, document TEXT NOT NULL, updated_at INTEGER NOT NULL);
                    CREATE TABLE audit_events(
                        seq INTEGER PRIMARY KEY, time INTEGER NOT NULL, actor TEXT NOT NULL, tenant TEXT, key TEXT,
                        operation TEXT NOT NULL, purpose TEXT, request_id TEXT, record TEXT, result TEXT NOT NULL,
                        detail TEXT, prev_hash BLOB NOT NULL, hash BLOB NOT NULL);
                    CREATE TABLE audit_checkpoints(
                        seq INTEGER PRIMARY KEY, hash BLOB NOT NULL, time INTEGER NOT NULL,
                        public_key BLOB NOT NULL, signature BLOB NOT NULL);
                    CREATE TABLE jobs(
                        id TEXT PRIMARY KEY, tenant TEXT NOT NULL, from_key TEXT NOT NULL, to_key TEXT NOT NULL,
                        status TEXT NOT NULL, cursor_id TEXT, cursor_kind TEXT, processed INTEGER NOT NULL,
                        rewrapped INTEGER NOT NULL, data_keys INTEGER NOT NULL, total INTEGER NOT NULL,
                        created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, active_ms INTEGER NOT NULL, error TEXT);
                    PRAGMA user_version=2;
                    """)
            }
            try c.transaction {
                let version = try c.query("PRAGMA user_version") { $0.int(0) }.first ?? 0
                guard version < 3 else { return }
                try c.exec("ALTER TABLE jobs ADD COLUMN unmatched INTEGER NOT NULL DEFAULT 0; PRAGMA user_version=3;")
            }
            try c.transaction {
                let version = try c.query("PRAGMA user_version") { $0.int(0) }.first ?? 0
                guard version < 4 else { return }
                // Version 4: the listing index without the kind, so that the two records of an
                // exchange (same tenant and time, two kinds) share its leaf page: one page fewer
                // rewritten per commit (listing filters the kind while it walks the index).
                try c.exec("DROP INDEX records_list; CREATE INDEX records_by_time ON records(tenant, created_at, id); PRAGMA user_version=4;")
            }
        }
    }

    public func ping() async throws {
        _ = try run { try $0.query("SELECT 1") { $0.int(0) } }
    }

    // MARK: Tenants

    private static let tenantColumns = "name, key, store, retention_days, created_at, previous_key"
    private static func tenant(_ row: SQLiteRow) throws -> Tenant {
        guard let store = Tenant.StorePolicy(rawValue: row.text(2)) else {
            throw StorageError(.corrupt, "tenant \(row.text(0)) has an unknown store policy")
        }
        return Tenant(name: row.text(0), key: row.text(1), store: store, retentionDays: Int(row.int(3)), createdAt: row.int(4),
                      previousKey: row.optionalText(5))
    }

    public func createTenant(_ tenant: Tenant) async throws {
        _ = try run {
            try $0.execute("INSERT INTO tenants(\(Self.tenantColumns)) VALUES (?, ?, ?, ?, ?, ?)", [
                .text(tenant.name), .text(tenant.key), .text(tenant.store.rawValue),
                .integer(Int64(tenant.retentionDays)), .integer(tenant.createdAt), SQLValue(tenant.previousKey),
            ])
        }
    }

    public func updateTenant(_ tenant: Tenant) async throws {
        let changed = try run {
            try $0.execute("UPDATE tenants SET key = ?, store = ?, retention_days = ?, previous_key = ? WHERE name = ?", [
                .text(tenant.key), .text(tenant.store.rawValue), .integer(Int64(tenant.retentionDays)),
                SQLValue(tenant.previousKey), .text(tenant.name),
            ])
        }
        guard changed == 1 else { throw StorageError(.notFound, "no tenant \(tenant.name)") }
    }

    public func tenant(named name: String) async throws -> Tenant? {
        try run { try $0.query("SELECT \(Self.tenantColumns) FROM tenants WHERE name = ?", [.text(name)], Self.tenant).first }
    }

    public func tenants() async throws -> [Tenant] {
        try run { try $0.query("SELECT \(Self.tenantColumns) FROM tenants ORDER BY name", [], Self.tenant) }
    }

    public func tenants(usingKey key: String) async throws -> [Tenant] {
        try run {
            try $0.query("SELECT \(Self.tenantColumns) FROM tenants WHERE key = ? OR previous_key = ? ORDER BY name",
                         [.text(key), .text(key)], Self.tenant)
        }
    }

    // MARK: Tokens

    private static let tokenColumns = "id, tenant, role, hash, created_at, suspended"
    private static func token(_ row: SQLiteRow) throws -> TokenRecord {
        guard let role = TokenRecord.Role(rawValue: row.text(2)) else {
            throw StorageError(.corrupt, "token \(row.text(0)) has an unknown role")
        }
        return TokenRecord(id: row.text(0), tenant: row.optionalText(1), role: role, hash: row.blob(3), createdAt: row.int(4),
                           suspended: row.int(5) != 0)
    }

    public func insertToken(_ token: TokenRecord) async throws {
        _ = try run {
            try $0.execute("INSERT INTO tokens(\(Self.tokenColumns)) VALUES (?, ?, ?, ?, ?, ?)", [
                .text(token.id), SQLValue(token.tenant), .text(token.role.rawValue), .blob(token.hash), .integer(token.createdAt),
                .integer(token.suspended ? 1 : 0),
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

    public func setTokenSuspended(id: String, _ suspended: Bool) async throws -> Bool {
        try run { try $0.execute("UPDATE tokens SET suspended = ? WHERE id = ?", [.integer(suspended ? 1 : 0), .text(id)]) > 0 }
    }

    public func token(id: String) async throws -> TokenRecord? {
        try run { try $0.query("SELECT \(Self.tokenColumns) FROM tokens WHERE id = ?", [.text(id)], Self.token).first }
    }

    // MARK: Policies

    public func policy(key: String) async throws -> String? {
        try run { try $0.query("SELECT document FROM policies WHERE key = ?", [.text(key)]) { $0.text(0) }.first }
    }

    public func setPolicy(key: String, document: String, at time: Int64) async throws {
        _ = try run {
            try $0.execute("INSERT OR REPLACE INTO policies(key, document, updated_at) VALUES (?, ?, ?)",
                           [.text(key), .text(document), .integer(time)])
        }
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

    private static func arguments(_ r: Record) throws -> [SQLValue] {
        let metadata = r.metadata.json
        return [.text(r.tenant), .text(r.id), .text(r.kind), .integer(r.createdAt), SQLValue(r.expiresAt),
                .text(metadata), .blob(r.header), .blob(r.body), SQLValue(r.metadata.model)]
    }

    private static let insertSQL = "INSERT INTO records(\(recordColumns), model) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"

    /// Runs `insertSQL` for a record (its columns in that order).
    private static func insert(_ r: Record, with statement: SQLiteStatement) throws {
        try statement.run(r.tenant, r.id, r.kind, r.createdAt, r.expiresAt, r.metadata.json, r.header, r.body, r.metadata.model)
    }

    /// Inserts waiting while another caller writes are committed together, in one transaction
    /// (group commit): one WAL append for many requests under load. Audit events ride in the same
    /// transaction as the records they describe, chained at the head as they commit.
    ///
    /// The caller holding the writer's role commits its own insert with all that queued behind
    /// it, then hands the role to the first insert that queued meanwhile, which commits on its own
    /// thread. A writer used to commit every later batch itself before it returned: its own
    /// request, and its event loop, waited for other loops' commits.
    @discardableResult
    public func insert(_ records: [Record], audit: [AuditEvent]) async throws -> [AuditEvent] {
        let work = Work(records: records, audit: audit)
        // Nobody writing: commit on this thread without suspending (a hop to the executor and
        // back costs more than the commit).
        let (idle, gather) = pending.withLock { p in
            guard !p.writing, !p.checkpointWaiting else { return (false, false) }
            p.writing = true
            return (true, p.followed)
        }
        if idle {
            // Under concurrent load, let the work already queued on this thread reach its insert
            // first, so that it shares this commit: a commit rewrites the same few pages for one
            // insert or for twenty. A lone writer does not wait (a yield costs a thread hop).
            if gather { await Task.yield() }
            return try commitAsWriter(work)!.get()
        }
        let home = callerHome()
        let turn = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Turn, any Error>) in
            let lead = pending.withLock { p -> Bool in
                guard p.writing || p.checkpointWaiting else {  // the writer left meanwhile
                    p.writing = true
                    return true
                }
                p.batches.append(PendingBatch(work: work, continuation: continuation, home: home))
                return false
            }
            if lead { continuation.resume(returning: .write) }
        }
        switch turn {
        case .committed(let events): return events
        case .write: return try commitAsWriter(work)!.get()
        }
    }

    /// Commits `work` (the caller's own; nil for a checkpoint that held writers back) and all that
    /// queued behind it, as the holder of the writer's role, resumes the others, then passes the
    /// role on. Returns the result of `work`.
    private func commitAsWriter(_ work: Work?) -> Result<[AuditEvent], any Error>? {
        let queued = pending.withLock { p in
            defer { p.batches = [] }
            p.followed = !p.batches.isEmpty
            return p.batches
        }
        let works = (work.map { [$0] } ?? []) + queued.map(\.work)
        let results = works.isEmpty ? [] : commitEach(works)
        let own = work == nil ? 0 : 1
        for (b, result) in zip(queued, results.dropFirst(own)) { b.resume(with: result.map { .committed($0) }) }
        passTheWriterRole()
        return work == nil ? nil : results[0]
    }

    /// Hands the writer's role to the first queued insert (resumed where it came from, it commits
    /// there), or frees it: when nothing is queued, or for a checkpoint that waits for it.
    private func passTheWriterRole() {
        let next = pending.withLock { p -> PendingBatch? in
            guard !p.batches.isEmpty, !p.checkpointWaiting else {
                p.writing = false
                return nil
            }
            return p.batches.removeFirst()
        }
        next?.resume(with: .success(.write))
    }

    @discardableResult
    public func appendAudit(_ events: [AuditEvent]) async throws -> [AuditEvent] {
        try await insert([], audit: events)
    }

    /// What one caller commits: record rows and audit events.
    private struct Work: Sendable {
        let records: [Record]
        let audit: [AuditEvent]
    }

    /// What a queued insert is told: its events as committed, or that it holds the writer's role.
    private enum Turn: Sendable {
        case committed([AuditEvent])
        case write
    }

    private struct PendingBatch: Sendable {
        let work: Work
        let continuation: CheckedContinuation<Turn, any Error>
        let home: Home?
        func resume(with result: Result<Turn, any Error>) {
            if let home { home { continuation.resume(with: result) } } else { continuation.resume(with: result) }
        }
    }

    private struct PendingInserts: Sendable {
        var batches: [PendingBatch] = []
        var writing = false
        /// Whether the last commit carried inserts that had queued behind another.
        var followed = false
        /// A checkpoint waits for the writer's role (see `holdWriters`).
        var checkpointWaiting = false
    }

    private let pending = Mutex(PendingInserts())

    /// Commits `works` in one transaction; if that fails, each alone, so that only a caller at
    /// fault fails (all or none per caller).
    private func commitEach(_ works: [Work]) -> [Result<[AuditEvent], any Error>] {
        do {
            return try write(works).map { .success($0) }
        } catch where works.count == 1 {
            return [.failure(error)]
        } catch {
            return works.map { w in Result { try write([w])[0] } }
        }
    }

    private static let auditInsertSQL = """
        INSERT INTO audit_events(seq, time, actor, tenant, key, operation, purpose, request_id, record, result, detail, prev_hash, hash)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        """

    private func write(_ batches: [Work]) throws -> [[AuditEvent]] {
        try run { c in
            let written = try c.transaction {
                // The head is whatever committed last: our own last append, unless another
                // connection has written since (data_version moves only for others' commits).
                let version = try c.dataVersion()
                var head: AuditHead? = cachedHead.withLock { $0?.version == version ? $0!.head : nil }
                var out: [[AuditEvent]] = []
                out.reserveCapacity(batches.count)
                let insertRecord = try c.statement(Self.insertSQL)
                let insertEvent = try c.statement(Self.auditInsertSQL)
                for b in batches {
                    for r in b.records { try Self.insert(r, with: insertRecord) }
                    guard !b.audit.isEmpty else { out.append([]); continue }
                    var linked = try head ?? Self.auditHead(c)
                    let events = linked.link(b.audit)
                    for e in events {
                        try insertEvent.run(e.seq, e.time, e.actor, e.tenant, e.key, e.operation.rawValue, e.purpose, e.requestID, e.record,
                                            e.result.rawValue, e.detail, e.previousHash, e.hash)
                    }
                    head = linked
                    out.append(events)
                }
                return (out, version, head)
            }
            // Only after the commit: a rolled-back append leaves the head where it was.
            if let head = written.2 { cachedHead.withLock { $0 = (written.1, head) } }
            return written.0
        }
    }

    /// The chain head as of our last append, and the data_version it was read at; only touched
    /// under the connection lock.
    private let cachedHead = Mutex<(version: Int64, head: AuditHead)?>(nil)

    private static func auditHead(_ c: SQLiteConnection) throws -> AuditHead {
        try c.query("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1") { AuditHead(seq: $0.int(0), hash: $0.blob(1)) }.first
            ?? .genesis
    }

    public func upsert(_ record: Record) async throws {
        let row = try Self.arguments(record)
        _ = try run {
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

    public func deleteAllRecords(tenant: String) async throws -> Int {
        try run { try $0.execute("DELETE FROM records WHERE tenant = ?", [.text(tenant)]) }
    }

    public func countRecords(tenant: String) async throws -> Int64 {
        try run { try $0.query("SELECT count(*) FROM records WHERE tenant = ?", [.text(tenant)]) { $0.int(0) }.first ?? 0 }
    }

    // MARK: Audit

    private static let auditColumns = "seq, time, actor, tenant, key, operation, purpose, request_id, record, result, detail, prev_hash, hash"

    private static func auditEvent(_ row: SQLiteRow) -> AuditEvent {
        var e = AuditEvent(time: row.int(1), actor: row.text(2), tenant: row.optionalText(3), key: row.optionalText(4),
                           operation: AuditOperation(rawValue: row.text(5)), purpose: row.optionalText(6), requestID: row.optionalText(7),
                           record: row.optionalText(8), result: AuditResult(rawValue: row.text(9)), detail: row.optionalText(10))
        e.seq = row.int(0)
        e.previousHash = row.blob(11)
        e.hash = row.blob(12)
        return e
    }

    public func auditEvents(_ q: AuditQuery) async throws -> [AuditEvent] {
        var sql = "SELECT \(Self.auditColumns) FROM audit_events WHERE seq > ?"
        var args: [SQLValue] = [.integer(q.afterSeq)]
        if let since = q.since { sql += " AND time >= ?"; args.append(.integer(since)) }
        if let tenant = q.tenant { sql += " AND tenant = ?"; args.append(.text(tenant)) }
        if let key = q.key { sql += " AND key = ?"; args.append(.text(key)) }
        if let operation = q.operation { sql += " AND operation = ?"; args.append(.text(operation.rawValue)) }
        sql += " ORDER BY seq LIMIT ?"
        args.append(.integer(Int64(max(0, q.limit))))
        return try run { try $0.query(sql, args, Self.auditEvent) }
    }

    public func auditHead() async throws -> AuditHead {
        try run { try Self.auditHead($0) }
    }

    public func insertCheckpoint(_ c: AuditCheckpoint) async throws {
        _ = try run {
            try $0.execute("INSERT OR REPLACE INTO audit_checkpoints(seq, hash, time, public_key, signature) VALUES (?, ?, ?, ?, ?)",
                           [.integer(c.seq), .blob(c.hash), .integer(c.time), .blob(c.publicKey), .blob(c.signature)])
        }
    }

    public func checkpoints() async throws -> [AuditCheckpoint] {
        try run {
            try $0.query("SELECT seq, hash, time, public_key, signature FROM audit_checkpoints ORDER BY seq") {
                AuditCheckpoint(seq: $0.int(0), hash: $0.blob(1), time: $0.int(2), publicKey: $0.blob(3), signature: $0.blob(4))
            }
        }
    }

    // MARK: Jobs

    private static let jobColumns = "id, tenant, from_key, to_key, status, cursor_id, cursor_kind, processed, rewrapped, data_keys, total, created_at, updated_at, active_ms, error, unmatched"

    private static func job(_ row: SQLiteRow) throws -> Job {
        guard let status = Job.Status(rawValue: row.text(4)) else { throw StorageError(.corrupt, "job \(row.text(0)) has an unknown status") }
        var j = Job(id: row.text(0), tenant: row.text(1), fromKey: row.text(2), toKey: row.text(3), total: row.int(10), createdAt: row.int(11))
        j.status = status
        j.cursorID = row.optionalText(5)
        j.cursorKind = row.optionalText(6)
        j.processed = row.int(7)
        j.rewrapped = row.int(8)
        j.dataKeys = row.int(9)
        j.updatedAt = row.int(12)
        j.activeMs = row.int(13)
        j.error = row.optionalText(14)
        j.unmatched = row.int(15)
        return j
    }

    private static func jobArguments(_ j: Job) -> [SQLValue] {
        [.text(j.id), .text(j.tenant), .text(j.fromKey), .text(j.toKey), .text(j.status.rawValue), SQLValue(j.cursorID),
         SQLValue(j.cursorKind), .integer(j.processed), .integer(j.rewrapped), .integer(j.dataKeys), .integer(j.total),
         .integer(j.createdAt), .integer(j.updatedAt), .integer(j.activeMs), SQLValue(j.error), .integer(j.unmatched)]
    }

    private static let saveJobSQL = "INSERT OR REPLACE INTO jobs(\(jobColumns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"

    public func createJob(_ job: Job) async throws {
        _ = try run { try $0.execute("INSERT INTO jobs(\(Self.jobColumns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", Self.jobArguments(job)) }
    }

    public func job(id: String) async throws -> Job? {
        try run { try $0.query("SELECT \(Self.jobColumns) FROM jobs WHERE id = ?", [.text(id)], Self.job).first }
    }

    public func jobs(status: Job.Status) async throws -> [Job] {
        try run { try $0.query("SELECT \(Self.jobColumns) FROM jobs WHERE status = ? ORDER BY created_at, id", [.text(status.rawValue)], Self.job) }
    }

    public func updateJob(_ job: Job) async throws {
        _ = try run { try $0.execute(Self.saveJobSQL, Self.jobArguments(job)) }
    }

    /// Jobs held by a worker of this process (the only process that writes this database).
    private let claimedJobs = Mutex<Set<String>>([])

    public func withJobClaimed(id: String, _ body: (Job) async throws -> (job: Job, headers: [HeaderChange])?) async throws -> JobClaim {
        guard claimedJobs.withLock({ $0.insert(id).inserted }) else { return .busy }
        defer { _ = claimedJobs.withLock { $0.remove(id) } }
        guard let current = try await job(id: id) else { return .missing }
        guard let (updated, changes) = try await body(current) else { return .unchanged(current) }
        var job = updated
        let replaced = try run { c in
            try c.transaction {
                var replaced = 0
                for ch in changes {
                    replaced += try c.execute("UPDATE records SET header = ? WHERE tenant = ? AND id = ? AND kind = ? AND header = ?",
                                              [.blob(ch.new), .text(job.tenant), .text(ch.id), .text(ch.kind), .blob(ch.old)])
                }
                // A header changed meanwhile (record deleted) was left alone: count what was written.
                job.rewrapped -= Int64(changes.count - replaced)
                _ = try c.execute(Self.saveJobSQL, Self.jobArguments(job))
                return replaced
            }
        }
        return .saved(job, replaced: replaced)
    }

    public func recordHeaders(tenant: String, after: (id: String, kind: String)?, limit: Int) async throws -> [RecordHeader] {
        try page("id, kind, header", tenant: tenant, after: after, limit: limit) {
            RecordHeader(id: $0.text(0), kind: $0.text(1), header: $0.blob(2))
        }
    }

    public func records(tenant: String, after: (id: String, kind: String)?, limit: Int) async throws -> [Record] {
        try page(Self.recordColumns, tenant: tenant, after: after, limit: limit, Self.record)
    }

    /// A tenant's rows after (id, kind), in that order, through the unique index.
    private func page<T>(_ columns: String, tenant: String, after: (id: String, kind: String)?, limit: Int,
                         _ map: (SQLiteRow) throws -> T) throws -> [T] {
        var sql = "SELECT \(columns) FROM records WHERE tenant = ?"
        var args: [SQLValue] = [.text(tenant)]
        if let after {
            sql += " AND (id, kind) > (?, ?)"
            args += [.text(after.id), .text(after.kind)]
        }
        args.append(.integer(Int64(limit)))
        return try run { try $0.query(sql + " ORDER BY id, kind LIMIT ?", args, map) }
    }
}
