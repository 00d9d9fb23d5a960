import Foundation
import KeywardAudit
import KeywardStorage
import Logging
import NIOCore
import PostgresNIO
import Synchronization

/// The store for several replicas: one PostgreSQL database shared by every `keyward serve`.
///
/// A bounded pool of connections (PostgresNIO's, which reconnects with back-off after a restart);
/// every failure to reach the server is `StorageError.unavailable`, which the gateway answers
/// with 503 rather than serve from stale state. The audit chain is serialised in the database by
/// a row lock on its head, so appends from every replica form one chain.
public final class PostgresRecordStore: RecordStore, SettingsStore {
    public let url: PostgresURL
    let client: PostgresClient
    let logger: Logger
    private let runner: Task<Void, Never>
    private let health = Health()
    private let monitor: Task<Void, Never>

    /// Whether the server answered the monitor's last probe.
    final class Health: Sendable {
        let up = Atomic<Bool>(true)
    }

    /// Connects lazily: nothing is sent until the first call.
    public init(url: PostgresURL, maxConnections: Int = 16, logger: Logger = Logger(label: "keyward.postgres")) throws {
        self.url = url
        self.logger = logger
        // The pool's background log says at warning level that a lease came before run() started,
        // which is a harmless race here (run() is started just below).
        var background = logger
        background.logLevel = .error
        let client = PostgresClient(configuration: try url.clientConfiguration(maxConnections: maxConnections), backgroundLogger: background)
        self.client = client
        runner = Task { await client.run() }
        monitor = Task { [health] in await Self.watch(url, health: health, logger: logger) }
    }

    deinit {
        runner.cancel()
        monitor.cancel()
    }

    /// Closes the pool; calls after this fail.
    public func shutdown() {
        runner.cancel()
        monitor.cancel()
    }

    /// Probes the server twice a second on a connection of its own (a busy pool must not look
    /// like a dead server). While a probe fails, calls fail at once with `unavailable` instead of
    /// waiting in the pool for a connection that cannot be made. A probe that fails on the
    /// monitor's connection is retried on a new one before the server is called down: the server
    /// (or a proxy) may end one idle session while it serves every other.
    private static func watch(_ url: PostgresURL, health: Health, logger: Logger) async {
        var connection: PostgresConnection?
        var id = 0
        while !Task.isCancelled {
            if let c = connection {
                do {
                    try await withDeadline(.seconds(2)) { _ = try await c.query("SELECT 1", logger: logger) }
                } catch {
                    Task { try? await c.close() }
                    connection = nil
                }
            }
            if connection == nil {
                id += 1
                let attempt = Task { [id] in
                    try await PostgresConnection.connect(configuration: url.connectionConfiguration(), id: id, logger: logger)
                }
                connection = try? await withDeadline(.seconds(3)) { try await attempt.value }
                // A connection made after the deadline is closed, not left open on the server.
                if connection == nil { Task { try? await attempt.value.close() } }
            }
            if connection != nil {
                health.up.store(true, ordering: .relaxed)
            } else if health.up.exchange(false, ordering: .relaxed) {
                logger.warning("the database is unreachable: calls fail until it answers again", metadata: ["database": "\(url)"])
            }
            try? await Task.sleep(for: .milliseconds(500))
        }
        if let connection { try? await connection.close() }
    }

    /// `body`'s result, or `unavailable` once `limit` has passed. Unstructured on purpose: a
    /// query on a connection the server dropped can ignore cancellation, and a task group would
    /// wait for it; here the caller is answered at the deadline and the straggler is left to fail
    /// when its connection is closed.
    static func withDeadline<T: Sendable>(_ limit: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let waiter = DeadlineWaiter<T>()
        return try await withCheckedThrowingContinuation { continuation in
            waiter.slot.withLock { $0 = continuation }
            let work = Task {
                let result: Result<T, any Error>
                do { result = .success(try await body()) } catch { result = .failure(error) }
                waiter.take()?.resume(with: result)
            }
            Task {
                try? await Task.sleep(for: limit)
                guard let late = waiter.take() else { return }
                work.cancel()
                late.resume(throwing: StorageError(.unavailable, "the database did not answer within \(limit)"))
            }
        }
    }

    /// A connection handed from the task that leased it to the caller, and handed back.
    final class ConnectionLease: Sendable {
        private enum State { case waiting, handed(PostgresConnection), abandoned }
        private let state = Mutex<(State, CheckedContinuation<PostgresConnection, any Error>?)>((.waiting, nil))
        private let back = AsyncStream<Void>.makeStream()

        /// Called by the leasing task; false if the caller gave up meanwhile.
        func hand(_ c: PostgresConnection) -> Bool {
            let waiter: CheckedContinuation<PostgresConnection, any Error>?? = state.withLock { s in
                guard case .waiting = s.0 else { return .none }
                s.0 = .handed(c)
                defer { s.1 = nil }
                return .some(s.1)
            }
            guard let waiter else { return false }
            waiter?.resume(returning: c)
            return true
        }

        /// Waits until the caller is done with the connection.
        func returned() async {
            for await _ in back.stream {}
        }

        func giveBack() { back.continuation.finish() }

        func connection(within limit: Duration, cancelling holder: Task<Void, Never>) async throws -> PostgresConnection {
            let timer = Task { [weak self] in
                try await Task.sleep(for: limit)
                self?.abandon(holder)
            }
            defer { timer.cancel() }
            return try await withCheckedThrowingContinuation { continuation in
                let ready: PostgresConnection?? = state.withLock { s in
                    switch s.0 {
                    case .handed(let c): return .some(c)
                    case .abandoned: return .some(nil)  // failed or timed out before we asked
                    case .waiting:
                        s.1 = continuation
                        return .none
                    }
                }
                switch ready {
                case .some(.some(let c)): continuation.resume(returning: c)
                case .some(.none): continuation.resume(throwing: StorageError(.unavailable, "no database connection within \(limit)"))
                case .none: break
                }
            }
        }

        private func abandon(_ holder: Task<Void, Never>) {
            holder.cancel()
            fail(StorageError(.unavailable, "no database connection in time"))
        }

        /// The lease failed (or came too late): the caller gets `error`.
        func fail(_ error: any Error) {
            let waiter: CheckedContinuation<PostgresConnection, any Error>? = state.withLock { s in
                guard case .waiting = s.0 else { return nil }
                s.0 = .abandoned
                defer { s.1 = nil }
                return s.1
            }
            waiter?.resume(throwing: error)
        }
    }

    /// The caller of ``withDeadline``, answered once by whichever comes first.
    final class DeadlineWaiter<T: Sendable>: Sendable {
        let slot = Mutex<CheckedContinuation<T, any Error>?>(nil)
        func take() -> CheckedContinuation<T, any Error>? { slot.withLock { $0.take() } }
    }

    // MARK: Running statements

    /// Runs `body`, turning driver errors into safe storage errors; fails at once while the
    /// server is known to be down.
    func run<T>(_ body: () async throws -> T) async throws -> T {
        guard health.up.load(ordering: .relaxed) else { throw StorageError(.unavailable, "the database is unreachable") }
        do { return try await body() } catch { throw PostgresErrors.map(error) }
    }

    func rows(_ query: PostgresQuery, limit: Duration = .seconds(5)) async throws -> [PostgresRandomAccessRow] {
        try await run {
            var out: [PostgresRandomAccessRow] = []
            try await leased { c in out = try await Self.rows(query, on: c, logger: logger, limit: limit) }
            return out
        }
    }

    /// One statement on `c`, answered within `limit`: a statement in flight when the server
    /// drops the connection has been seen never to complete, even once the connection is closed,
    /// so the caller is not left waiting on it (the straggler fails or stays parked, harmlessly).
    @discardableResult
    static func rows(_ query: PostgresQuery, on c: PostgresConnection, logger: Logger,
                     limit: Duration = .seconds(5)) async throws -> [PostgresRandomAccessRow] {
        do {
            return try await withDeadline(limit) {
                var out: [PostgresRandomAccessRow] = []
                for try await row in try await c.query(query, logger: logger) { out.append(row.makeRandomAccess()) }
                return out
            }
        } catch let e as StorageError where e.code == .unavailable {
            try? await c.close()
            throw e
        }
    }

    /// A pooled connection for `body`, or `unavailable` if none comes within 5 s (a pool waiting
    /// to reconnect must not hold requests indefinitely). Statements on it are bounded by
    /// ``rows(_:on:logger:limit:)``.
    func leased<T>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        let lease = ConnectionLease()
        let holder = Task { [client] in
            do {
                try await client.withConnection { c in
                    guard lease.hand(c) else { return }
                    await lease.returned()
                }
            } catch {
                lease.fail(error)
            }
        }
        defer { lease.giveBack() }
        return try await body(try await lease.connection(within: .seconds(5), cancelling: holder))
    }

    /// A transaction on one pooled connection: committed if `body` returns, rolled back if it throws.
    func transaction<T: Sendable>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        try await run {
            try await leased { c in
                try await Self.rows("BEGIN", on: c, logger: logger)
                do {
                    let result = try await body(c)
                    try await Self.rows("COMMIT", on: c, logger: logger)
                    return result
                } catch {
                    if PostgresErrors.brokeConnection(error) {
                        // Another statement on a connection that got a fatal error can wait
                        // forever: close it, and the pool makes a new one.
                        try? await c.close()
                    } else {
                        let logger = logger
                        do { try await Self.rows("ROLLBACK", on: c, logger: logger, limit: .seconds(2)) } catch {
                            try? await c.close()
                        }
                    }
                    throw error
                }
            }
        }
    }

    // MARK: Schema

    /// Every replica may start at once: the advisory lock lets one migrate while the others wait,
    /// then find the schema current.
    public func migrate() async throws {
        try await transaction { c in
            try await Self.rows("SELECT pg_advisory_xact_lock(7346524117)", on: c, logger: logger)
            try await Self.rows("CREATE TABLE IF NOT EXISTS keyward_schema(version INTEGER NOT NULL)", on: c, logger: logger)
            let version = try await Self.rows("SELECT version FROM keyward_schema", on: c, logger: logger).first.map { try $0[0].decode(Int32.self) } ?? 0
            guard version < 1 else { return }
            for statement in Self.schemaV1 { try await Self.rows(PostgresQuery(unsafeSQL: statement), on: c, logger: logger) }
            try await Self.rows("DELETE FROM keyward_schema", on: c, logger: logger)
            try await Self.rows("INSERT INTO keyward_schema(version) VALUES (1)", on: c, logger: logger)
        }
    }

    static let schemaV1 = [
        """
        CREATE TABLE tenants(
            name TEXT PRIMARY KEY, key TEXT NOT NULL, store TEXT NOT NULL, retention_days BIGINT NOT NULL,
            created_at BIGINT NOT NULL, previous_key TEXT)
        """,
        "CREATE INDEX tenants_key ON tenants(key)",
        """
        CREATE TABLE tokens(
            id TEXT PRIMARY KEY, hash BYTEA NOT NULL UNIQUE, tenant TEXT REFERENCES tenants(name), role TEXT NOT NULL,
            created_at BIGINT NOT NULL, suspended BOOLEAN NOT NULL DEFAULT FALSE)
        """,
        """
        CREATE TABLE records(
            tenant TEXT NOT NULL REFERENCES tenants(name), id TEXT NOT NULL, kind TEXT NOT NULL,
            created_at BIGINT NOT NULL, expires_at BIGINT, model TEXT, metadata TEXT NOT NULL,
            header BYTEA NOT NULL, body BYTEA NOT NULL, PRIMARY KEY (tenant, id, kind))
        """,
        // Ciphertext does not compress: do not try.
        "ALTER TABLE records ALTER COLUMN body SET STORAGE EXTERNAL",
        "CREATE INDEX records_list ON records(tenant, kind, created_at, id)",
        "CREATE INDEX records_expiry ON records(expires_at) WHERE expires_at IS NOT NULL",
        "CREATE TABLE policies(key TEXT PRIMARY KEY, document TEXT NOT NULL, updated_at BIGINT NOT NULL)",
        """
        CREATE TABLE audit_events(
            seq BIGINT PRIMARY KEY, time BIGINT NOT NULL, actor TEXT NOT NULL, tenant TEXT, key TEXT,
            operation TEXT NOT NULL, purpose TEXT, request_id TEXT, record TEXT, result TEXT NOT NULL,
            detail TEXT, prev_hash BYTEA NOT NULL, hash BYTEA NOT NULL)
        """,
        // The chain head: one row, locked by every append.
        "CREATE TABLE audit_head(id INTEGER PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL, hash BYTEA NOT NULL)",
        "INSERT INTO audit_head(id, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'))",
        """
        CREATE TABLE audit_checkpoints(
            seq BIGINT PRIMARY KEY, hash BYTEA NOT NULL, time BIGINT NOT NULL, public_key BYTEA NOT NULL, signature BYTEA NOT NULL)
        """,
        """
        CREATE TABLE jobs(
            id TEXT PRIMARY KEY, tenant TEXT NOT NULL, from_key TEXT NOT NULL, to_key TEXT NOT NULL,
            status TEXT NOT NULL, cursor_id TEXT, cursor_kind TEXT, processed BIGINT NOT NULL,
            rewrapped BIGINT NOT NULL, data_keys BIGINT NOT NULL, total BIGINT NOT NULL,
            created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, active_ms BIGINT NOT NULL, error TEXT,
            unmatched BIGINT NOT NULL DEFAULT 0)
        """,
        // The local key store's keys (their material sealed under the root key) and its header.
        "CREATE TABLE local_keys(name TEXT PRIMARY KEY, document BYTEA NOT NULL, revision BIGINT NOT NULL)",
        "CREATE TABLE settings(name TEXT PRIMARY KEY, value BYTEA NOT NULL)",
    ]

    public func ping() async throws {
        let client = client
        try await run {
            try await Self.withDeadline(.seconds(2)) { for try await _ in try await client.query("SELECT 1") {} }
        }
    }

    /// Nothing to do: PostgreSQL vacuums and checkpoints by itself.
    public func maintain() async throws -> Int { 0 }

    // MARK: Tenants

    private static let tenantColumns = "name, key, store, retention_days, created_at, previous_key"
    private static func tenant(_ r: PostgresRandomAccessRow) throws -> Tenant {
        guard let store = Tenant.StorePolicy(rawValue: try r.text(2)) else {
            throw StorageError(.corrupt, "tenant \(try r.text(0)) has an unknown store policy")
        }
        return Tenant(name: try r.text(0), key: try r.text(1), store: store, retentionDays: Int(try r.int(3)), createdAt: try r.int(4),
                      previousKey: try r.optionalText(5))
    }

    public func createTenant(_ t: Tenant) async throws {
        _ = try await rows("""
            INSERT INTO tenants(name, key, store, retention_days, created_at, previous_key)
            VALUES (\(t.name), \(t.key), \(t.store.rawValue), \(Int64(t.retentionDays)), \(t.createdAt), \(t.previousKey))
            """)
    }

    public func updateTenant(_ t: Tenant) async throws {
        let changed = try await rows("""
            UPDATE tenants SET key = \(t.key), store = \(t.store.rawValue), retention_days = \(Int64(t.retentionDays)),
            previous_key = \(t.previousKey) WHERE name = \(t.name) RETURNING 1
            """)
        guard changed.count == 1 else { throw StorageError(.notFound, "no tenant \(t.name)") }
    }

    public func tenant(named name: String) async throws -> Tenant? {
        try await rows(PostgresQuery(unsafeSQL: "SELECT \(Self.tenantColumns) FROM tenants WHERE name = $1", binds: Self.binds(name)))
            .first.map(Self.tenant)
    }

    public func tenants() async throws -> [Tenant] {
        try await rows(PostgresQuery(unsafeSQL: "SELECT \(Self.tenantColumns) FROM tenants ORDER BY name")).map(Self.tenant)
    }

    public func tenants(usingKey key: String) async throws -> [Tenant] {
        try await rows(PostgresQuery(unsafeSQL: "SELECT \(Self.tenantColumns) FROM tenants WHERE key = $1 OR previous_key = $1 ORDER BY name",
                                     binds: Self.binds(key))).map(Self.tenant)
    }

    static func binds(_ values: String...) -> PostgresBindings {
        var b = PostgresBindings()
        for v in values { b.append(v) }
        return b
    }

    // MARK: Tokens

    private static let tokenColumns = "id, tenant, role, hash, created_at, suspended"
    private static func token(_ r: PostgresRandomAccessRow) throws -> TokenRecord {
        guard let role = TokenRecord.Role(rawValue: try r.text(2)) else {
            throw StorageError(.corrupt, "token \(try r.text(0)) has an unknown role")
        }
        return TokenRecord(id: try r.text(0), tenant: try r.optionalText(1), role: role, hash: try r.bytes(3), createdAt: try r.int(4),
                           suspended: try r.bool(5))
    }

    public func insertToken(_ t: TokenRecord) async throws {
        _ = try await rows("""
            INSERT INTO tokens(id, tenant, role, hash, created_at, suspended)
            VALUES (\(t.id), \(t.tenant), \(t.role.rawValue), \(ByteBuffer(bytes: t.hash)), \(t.createdAt), \(t.suspended))
            """)
    }

    public func token(hash: [UInt8]) async throws -> TokenRecord? {
        var sql = SQL("SELECT \(Self.tokenColumns) FROM tokens WHERE hash = ")
        sql += sql.bind(bytes: hash)
        return try await rows(sql.query).first.map(Self.token)
    }

    public func tokens(role: TokenRecord.Role) async throws -> [TokenRecord] {
        try await rows(PostgresQuery(unsafeSQL: "SELECT \(Self.tokenColumns) FROM tokens WHERE role = $1 ORDER BY created_at, id",
                                     binds: Self.binds(role.rawValue))).map(Self.token)
    }

    public func deleteToken(id: String) async throws -> Bool {
        try await !rows("DELETE FROM tokens WHERE id = \(id) RETURNING 1").isEmpty
    }

    public func setTokenSuspended(id: String, _ suspended: Bool) async throws -> Bool {
        try await !rows("UPDATE tokens SET suspended = \(suspended) WHERE id = \(id) RETURNING 1").isEmpty
    }

    public func token(id: String) async throws -> TokenRecord? {
        try await rows(PostgresQuery(unsafeSQL: "SELECT \(Self.tokenColumns) FROM tokens WHERE id = $1", binds: Self.binds(id)))
            .first.map(Self.token)
    }

    // MARK: Policies and settings

    public func policy(key: String) async throws -> String? {
        try await rows("SELECT document FROM policies WHERE key = \(key)").first.map { try $0.text(0) }
    }

    public func setPolicy(key: String, document: String, at time: Int64) async throws {
        _ = try await rows("""
            INSERT INTO policies(key, document, updated_at) VALUES (\(key), \(document), \(time))
            ON CONFLICT (key) DO UPDATE SET document = EXCLUDED.document, updated_at = EXCLUDED.updated_at
            """)
    }

    /// A named value shared by every replica (the sealed audit signing key), or nil.
    public func setting(_ name: String) async throws -> [UInt8]? {
        try await rows("SELECT value FROM settings WHERE name = \(name)").first.map { try $0.bytes(0) }
    }

    /// Stores `value` under `name` unless a value is there already; returns the value that is
    /// stored now (another replica's, if it was first).
    public func setSettingIfAbsent(_ name: String, _ value: [UInt8]) async throws -> [UInt8] {
        _ = try await rows("INSERT INTO settings(name, value) VALUES (\(name), \(ByteBuffer(bytes: value))) ON CONFLICT (name) DO NOTHING")
        guard let stored = try await setting(name) else { throw StorageError(.unavailable, "setting \(name) vanished") }
        return stored
    }

    // MARK: Records

    private static let recordColumns = "tenant, id, kind, created_at, expires_at, metadata, header, body"

    private static func record(_ r: PostgresRandomAccessRow) throws -> Record {
        let id = try r.text(1)
        guard let metadata = try? JSONDecoder().decode(RecordMetadata.self, from: Data(try r.text(5).utf8)) else {
            throw StorageError(.corrupt, "record \(id) has unreadable metadata")
        }
        return Record(tenant: try r.text(0), id: id, kind: try r.text(2), createdAt: try r.int(3), expiresAt: try r.optionalInt(4),
                      metadata: metadata, header: try r.bytes(6), body: try r.bytes(7))
    }

    private static func appendRecordValues(_ records: ArraySlice<Record>, to sql: inout SQL) {
        for (i, r) in records.enumerated() {
            if i > 0 { sql += ", " }
            let values = [sql.bind(r.tenant), sql.bind(r.id), sql.bind(r.kind), sql.bind(r.createdAt), sql.bind(bigint: r.expiresAt),
                          sql.bind(r.metadata.json), sql.bind(bytes: r.header), sql.bind(bytes: r.body), sql.bind(text: r.metadata.model)]
            sql += "(" + values.joined(separator: ", ") + ")"
        }
    }

    /// Concurrent inserts are committed together by whichever caller found the writer idle: one
    /// transaction, one lock on the chain head and one commit for many requests.
    @discardableResult
    public func insert(_ records: [Record], audit: [AuditEvent]) async throws -> [AuditEvent] {
        if records.isEmpty && audit.isEmpty { return [] }
        let work = Work(records: records, audit: audit)
        return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<[AuditEvent], any Error>) in
            let lead = pending.withLock { p -> Bool in
                p.batches.append(PendingBatch(work: work, continuation: continuation))
                guard !p.writing else { return false }
                p.writing = true
                return true
            }
            if lead { Task { await self.drainPendingInserts() } }
        }
    }

    @discardableResult
    public func appendAudit(_ events: [AuditEvent]) async throws -> [AuditEvent] {
        try await insert([], audit: events)
    }

    private struct Work: Sendable {
        let records: [Record]
        let audit: [AuditEvent]
    }

    private struct PendingBatch: Sendable {
        let work: Work
        let continuation: CheckedContinuation<[AuditEvent], any Error>
    }

    private struct PendingInserts: Sendable {
        var batches: [PendingBatch] = []
        var writing = false
    }

    private let pending = Mutex(PendingInserts())

    private func drainPendingInserts() async {
        while true {
            let batches = pending.withLock { p -> [PendingBatch] in
                if p.batches.isEmpty { p.writing = false }
                // Bounded, so one transaction stays short.
                let n = min(p.batches.count, 256)
                defer { p.batches.removeFirst(n) }
                return Array(p.batches.prefix(n))
            }
            if batches.isEmpty { return }
            do {
                let appended = try await write(batches.map(\.work))
                for (b, events) in zip(batches, appended) { b.continuation.resume(returning: events) }
            } catch where batches.count == 1 {
                batches[0].continuation.resume(throwing: error)
            } catch {
                // All or none per caller: retry each alone, so only the one at fault fails.
                for b in batches {
                    do { b.continuation.resume(returning: try await write([b.work])[0]) } catch { b.continuation.resume(throwing: error) }
                }
            }
        }
    }

    /// The chain head as of this process's last append: the next append expects it, in one
    /// statement, and learns otherwise if another replica appended since.
    private let knownHead = Mutex<AuditHead?>(nil)

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
            var start = 0
            while start < records.count {
                let end = min(start + 1000, records.count)
                var sql = SQL("INSERT INTO records(\(Self.recordColumns), model) VALUES ")
                Self.appendRecordValues(records[start..<end], to: &sql)
                try await Self.rows(sql.query, on: c, logger: logger)
                start = end
            }
            guard eventCount > 0 else { return (batches.map { _ in [AuditEvent]() }, AuditHead.genesis) }
            // The row lock orders appends from every replica into one chain.
            let head = try await Self.rows("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE", on: c, logger: logger)
            guard let row = head.first else { throw StorageError(.corrupt, "the audit chain head is missing") }
            let (out, next) = Self.chain(batches, after: AuditHead(seq: try row.int(0), hash: try row.bytes(1)))
            try await Self.insertEvents(out.flatMap { $0 }, on: c, logger: logger)
            var update = SQL("UPDATE audit_head SET seq = ")
            update += update.bind(next.seq) + ", hash = " + update.bind(bytes: next.hash) + " WHERE id = 1"
            try await Self.rows(update.query, on: c, logger: logger)
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
        var sql = SQL("WITH h AS (UPDATE audit_head SET seq = ")
        sql += sql.bind(next.seq) + ", hash = " + sql.bind(bytes: next.hash) + " WHERE id = 1 AND seq = " + sql.bind(expected) + " RETURNING 1)"
        if !records.isEmpty {
            sql += ", r AS (INSERT INTO records(\(Self.recordColumns), model) SELECT * FROM (VALUES "
            Self.appendRecordValues(records[...], to: &sql)
            sql += ") AS v WHERE EXISTS (SELECT 1 FROM h))"
        }
        sql += ", e AS (INSERT INTO audit_events(\(Self.auditColumns)) SELECT * FROM (VALUES "
        Self.appendEventValues(events[...], to: &sql)
        sql += ") AS v WHERE EXISTS (SELECT 1 FROM h)) SELECT count(*) FROM h"
        return try await rows(sql.query).first.map { try $0.int(0) } == 1
    }

    private static func appendEventValues(_ events: ArraySlice<AuditEvent>, to sql: inout SQL) {
        for (i, e) in events.enumerated() {
            if i > 0 { sql += ", " }
            let values = [sql.bind(e.seq), sql.bind(e.time), sql.bind(e.actor), sql.bind(text: e.tenant), sql.bind(text: e.key),
                          sql.bind(e.operation.rawValue), sql.bind(text: e.purpose), sql.bind(text: e.requestID), sql.bind(text: e.record),
                          sql.bind(e.result.rawValue), sql.bind(text: e.detail),
                          sql.bind(bytes: e.previousHash), sql.bind(bytes: e.hash)]
            sql += "(" + values.joined(separator: ", ") + ")"
        }
    }

    private static func insertEvents(_ events: [AuditEvent], on c: PostgresConnection, logger: Logger) async throws {
        var start = 0
        while start < events.count {
            let end = min(start + 1000, events.count)
            var sql = SQL("INSERT INTO audit_events(\(auditColumns)) VALUES ")
            appendEventValues(events[start..<end], to: &sql)
            try await rows(sql.query, on: c, logger: logger)
            start = end
        }
    }

    public func upsert(_ r: Record) async throws {
        var sql = SQL("INSERT INTO records(\(Self.recordColumns), model) VALUES ")
        Self.appendRecordValues([r][...], to: &sql)
        sql += """
             ON CONFLICT (tenant, id, kind) DO UPDATE SET created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at,
            metadata = EXCLUDED.metadata, header = EXCLUDED.header, body = EXCLUDED.body, model = EXCLUDED.model
            """
        _ = try await rows(sql.query)
    }

    public func record(tenant: String, id: String, kind: String) async throws -> Record? {
        try await rows(PostgresQuery(unsafeSQL: "SELECT \(Self.recordColumns) FROM records WHERE tenant = $1 AND id = $2 AND kind = $3",
                                     binds: Self.binds(tenant, id, kind))).first.map(Self.record)
    }

    public func records(_ q: RecordQuery) async throws -> [Record] {
        let limit = Int64(max(0, min(q.limit, 1000)))
        let (cmp, order) = q.order == .ascending ? (">", "ASC") : ("<", "DESC")
        var sql = SQL("SELECT \(Self.recordColumns) FROM records WHERE tenant = ")
        sql += sql.bind(q.tenant) + " AND kind = " + sql.bind(q.kind)
        if let model = q.model { sql += " AND model = " + sql.bind(model) }
        if let after = q.after {
            guard let created = try await rows(PostgresQuery(
                unsafeSQL: "SELECT created_at FROM records WHERE tenant = $1 AND id = $2 AND kind = $3",
                binds: Self.binds(q.tenant, after, q.kind))).first.map({ try $0.int(0) }) else {
                throw StorageError(.notFound, "no record \(after) to list after")
            }
            sql += " AND (created_at, id) \(cmp) (" + sql.bind(created) + ", " + sql.bind(after) + ")"
        }
        sql += " ORDER BY created_at \(order), id \(order) LIMIT " + sql.bind(limit)
        return try await rows(sql.query).map(Self.record)
    }

    /// Deletes and counts over many rows: minutes, not seconds, are their bound.
    private func count(_ query: PostgresQuery) async throws -> Int {
        Int(try await rows(query, limit: .seconds(300)).first.map { try $0.int(0) } ?? 0)
    }

    public func deleteRecords(tenant: String, id: String) async throws -> Int {
        try await count("WITH d AS (DELETE FROM records WHERE tenant = \(tenant) AND id = \(id) RETURNING 1) SELECT count(*) FROM d")
    }

    public func purgeExpired(before time: Int64) async throws -> Int {
        try await count("WITH d AS (DELETE FROM records WHERE expires_at IS NOT NULL AND expires_at < \(time) RETURNING 1) SELECT count(*) FROM d")
    }

    public func deleteAllRecords(tenant: String) async throws -> Int {
        try await count("WITH d AS (DELETE FROM records WHERE tenant = \(tenant) RETURNING 1) SELECT count(*) FROM d")
    }

    public func countRecords(tenant: String) async throws -> Int64 {
        Int64(try await count("SELECT count(*) FROM records WHERE tenant = \(tenant)"))
    }

    // MARK: Audit

    private static let auditColumns = "seq, time, actor, tenant, key, operation, purpose, request_id, record, result, detail, prev_hash, hash"

    private static func auditEvent(_ r: PostgresRandomAccessRow) throws -> AuditEvent {
        var e = AuditEvent(time: try r.int(1), actor: try r.text(2), tenant: try r.optionalText(3), key: try r.optionalText(4),
                           operation: AuditOperation(rawValue: try r.text(5)), purpose: try r.optionalText(6), requestID: try r.optionalText(7),
                           record: try r.optionalText(8), result: AuditResult(rawValue: try r.text(9)), detail: try r.optionalText(10))
        e.seq = try r.int(0)
        e.previousHash = try r.bytes(11)
        e.hash = try r.bytes(12)
        return e
    }

    public func auditEvents(_ q: AuditQuery) async throws -> [AuditEvent] {
        var sql = SQL("SELECT \(Self.auditColumns) FROM audit_events WHERE seq > ")
        sql += sql.bind(q.afterSeq)
        if let since = q.since { sql += " AND time >= " + sql.bind(since) }
        if let tenant = q.tenant { sql += " AND tenant = " + sql.bind(tenant) }
        if let key = q.key { sql += " AND key = " + sql.bind(key) }
        if let operation = q.operation { sql += " AND operation = " + sql.bind(operation.rawValue) }
        sql += " ORDER BY seq LIMIT " + sql.bind(Int64(max(0, q.limit)))
        return try await rows(sql.query).map(Self.auditEvent)
    }

    public func auditHead() async throws -> AuditHead {
        guard let row = try await rows("SELECT seq, hash FROM audit_head WHERE id = 1").first else {
            throw StorageError(.corrupt, "the audit chain head is missing")
        }
        return AuditHead(seq: try row.int(0), hash: try row.bytes(1))
    }

    public func insertCheckpoint(_ c: AuditCheckpoint) async throws {
        _ = try await rows("""
            INSERT INTO audit_checkpoints(seq, hash, time, public_key, signature)
            VALUES (\(c.seq), \(ByteBuffer(bytes: c.hash)), \(c.time), \(ByteBuffer(bytes: c.publicKey)), \(ByteBuffer(bytes: c.signature)))
            ON CONFLICT (seq) DO UPDATE SET hash = EXCLUDED.hash, time = EXCLUDED.time, public_key = EXCLUDED.public_key,
            signature = EXCLUDED.signature
            """)
    }

    public func checkpoints() async throws -> [AuditCheckpoint] {
        try await rows("SELECT seq, hash, time, public_key, signature FROM audit_checkpoints ORDER BY seq").map {
            AuditCheckpoint(seq: try $0.int(0), hash: try $0.bytes(1), time: try $0.int(2), publicKey: try $0.bytes(3), signature: try $0.bytes(4))
        }
    }

    // MARK: Jobs

    private static let jobColumns = "id, tenant, from_key, to_key, status, cursor_id, cursor_kind, processed, rewrapped, data_keys, total, created_at, updated_at, active_ms, error, unmatched"

    private static func job(_ r: PostgresRandomAccessRow) throws -> Job {
        guard let status = Job.Status(rawValue: try r.text(4)) else { throw StorageError(.corrupt, "job \(try r.text(0)) has an unknown status") }
        var j = Job(id: try r.text(0), tenant: try r.text(1), fromKey: try r.text(2), toKey: try r.text(3), total: try r.int(10),
                    createdAt: try r.int(11))
        j.status = status
        j.cursorID = try r.optionalText(5)
        j.cursorKind = try r.optionalText(6)
        j.processed = try r.int(7)
        j.rewrapped = try r.int(8)
        j.dataKeys = try r.int(9)
        j.updatedAt = try r.int(12)
        j.activeMs = try r.int(13)
        j.error = try r.optionalText(14)
        j.unmatched = try r.int(15)
        return j
    }

    private static func saveJob(_ j: Job) -> SQL {
        var sql = SQL("INSERT INTO jobs(\(jobColumns)) VALUES (")
        let values = [sql.bind(j.id), sql.bind(j.tenant), sql.bind(j.fromKey), sql.bind(j.toKey), sql.bind(j.status.rawValue),
                      sql.bind(j.cursorID), sql.bind(j.cursorKind), sql.bind(j.processed), sql.bind(j.rewrapped), sql.bind(j.dataKeys),
                      sql.bind(j.total), sql.bind(j.createdAt), sql.bind(j.updatedAt), sql.bind(j.activeMs), sql.bind(j.error), sql.bind(j.unmatched)]
        sql += values.joined(separator: ", ") + ")"
        return sql
    }

    private static let updateJobSuffix = """
         ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, cursor_id = EXCLUDED.cursor_id, cursor_kind = EXCLUDED.cursor_kind,
        processed = EXCLUDED.processed, rewrapped = EXCLUDED.rewrapped, data_keys = EXCLUDED.data_keys, total = EXCLUDED.total,
        updated_at = EXCLUDED.updated_at, active_ms = EXCLUDED.active_ms, error = EXCLUDED.error,
        unmatched = EXCLUDED.unmatched
        """

    public func createJob(_ job: Job) async throws {
        _ = try await rows(Self.saveJob(job).query)
    }

    public func job(id: String) async throws -> Job? {
        try await rows(PostgresQuery(unsafeSQL: "SELECT \(Self.jobColumns) FROM jobs WHERE id = $1", binds: Self.binds(id))).first.map(Self.job)
    }

    public func jobs(status: Job.Status) async throws -> [Job] {
        try await rows(PostgresQuery(unsafeSQL: "SELECT \(Self.jobColumns) FROM jobs WHERE status = $1 ORDER BY created_at, id",
                                     binds: Self.binds(status.rawValue))).map(Self.job)
    }

    public func updateJob(_ job: Job) async throws {
        var sql = Self.saveJob(job)
        sql += Self.updateJobSuffix
        _ = try await rows(sql.query)
    }

    /// Holds the job's row for the length of one batch: `FOR UPDATE SKIP LOCKED` hands the next
    /// batch to whichever replica asks while nobody holds it; a replica that dies mid-batch loses
    /// its connection, its transaction rolls back, and the batch goes to the next one to ask.
    public func withJobClaimed(id: String, _ body: (Job) async throws -> (job: Job, headers: [HeaderChange])?) async throws -> JobClaim {
        let logger = logger
        return try await transaction { c -> JobClaim in
            let found = try await Self.rows(PostgresQuery(unsafeSQL: "SELECT \(Self.jobColumns) FROM jobs WHERE id = $1 FOR UPDATE SKIP LOCKED",
                                                          binds: Self.binds(id)), on: c, logger: logger)
            guard let row = found.first else {
                let exists = try await Self.rows(PostgresQuery(unsafeSQL: "SELECT 1 FROM jobs WHERE id = $1", binds: Self.binds(id)), on: c, logger: logger)
                return exists.isEmpty ? .missing : .busy
            }
            let current = try Self.job(row)
            guard let (updated, changes) = try await body(current) else { return .unchanged(current) }
            var job = updated
            let replaced = try await Self.replace(changes, tenant: job.tenant, on: c, logger: logger)
            // A header changed meanwhile (record deleted) was left alone: count what was written.
            job.rewrapped -= Int64(changes.count - replaced)
            var save = Self.saveJob(job)
            save += Self.updateJobSuffix
            try await Self.rows(save.query, on: c, logger: logger)
            return .saved(job, replaced: replaced)
        }
    }

    public func recordHeaders(tenant: String, after: (id: String, kind: String)?, limit: Int) async throws -> [RecordHeader] {
        try await page("id, kind, header", tenant: tenant, after: after, limit: limit).map {
            RecordHeader(id: try $0.text(0), kind: try $0.text(1), header: try $0.bytes(2))
        }
    }

    public func records(tenant: String, after: (id: String, kind: String)?, limit: Int) async throws -> [Record] {
        try await page(Self.recordColumns, tenant: tenant, after: after, limit: limit).map(Self.record)
    }

    private func page(_ columns: String, tenant: String, after: (id: String, kind: String)?, limit: Int) async throws -> [PostgresRandomAccessRow] {
        var sql = SQL("SELECT \(columns) FROM records WHERE tenant = ")
        sql += sql.bind(tenant)
        if let after { sql += " AND (id, kind) > (" + sql.bind(after.id) + ", " + sql.bind(after.kind) + ")" }
        sql += " ORDER BY id, kind LIMIT " + sql.bind(Int64(limit))
        return try await rows(sql.query)
    }

    /// One statement for a whole batch: each header is replaced only if still `old`.
    private static func replace(_ changes: [HeaderChange], tenant: String, on c: PostgresConnection, logger: Logger) async throws -> Int {
        guard !changes.isEmpty else { return 0 }
        var sql = SQL("UPDATE records r SET header = ch.new FROM unnest(")
        sql += try sql.bind(array: changes.map(\.id)) + "::text[], " + (try sql.bind(array: changes.map(\.kind))) + "::text[], "
        sql += try sql.bind(array: changes.map { ByteBuffer(bytes: $0.old) }) + "::bytea[], "
        sql += try sql.bind(array: changes.map { ByteBuffer(bytes: $0.new) }) + "::bytea[]) AS ch(id, kind, old, new) "
        sql += "WHERE r.tenant = " + sql.bind(tenant) + " AND r.id = ch.id AND r.kind = ch.kind AND r.header = ch.old RETURNING 1"
        return try await rows(sql.query, on: c, logger: logger).count
    }
}
