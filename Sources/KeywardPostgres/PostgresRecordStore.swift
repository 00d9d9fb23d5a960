import Foundation
import KeywardAudit
import KeywardStorage
import Logging
import NIOCore
import PostgresNIO
import ServiceLifecycle
import Synchronization

/// The store for several replicas: one PostgreSQL database shared by every `keyward serve`.
///
/// A bounded pool of connections (PostgresNIO's, which reconnects with back-off after a restart);
/// every failure to reach the server is `StorageError.unavailable`, which the gateway answers
/// with 503 rather than serve from stale state. The audit chain is serialised in the database by
/// a row lock on its head, so appends from every replica form one chain.
public final class PostgresRecordStore: SQLStore, Service {
    public let url: PostgresURL
    let client: PostgresClient
    let logger: Logger
    private let health = Health()
    /// Who commits the next inserts, and with whom (see `insert(_:audit:)`).
    let pending = Mutex(GroupCommit<PendingBatch, Never>())
    /// The chain head as of this process's last append: the next append expects it, in one
    /// statement, and learns otherwise if another replica appended since.
    let knownHead = Mutex<AuditHead?>(nil)

    /// Whether the server answered the monitor's last probe.
    final class Health: Sendable {
        let up = Atomic<Bool>(true)
    }

    /// Connects lazily: nothing is sent until the first call, and calls wait for ``run()``.
    public init(url: PostgresURL, maxConnections: Int = 16, logger: Logger = Logger(label: "keyward.postgres")) throws {
        self.url = url
        self.logger = logger
        // The pool's background log says at warning level that a lease came before run() started,
        // which is a harmless race when a call is made as the service group starts.
        var background = logger
        background.logLevel = .error
        client = PostgresClient(configuration: try url.clientConfiguration(maxConnections: maxConnections), backgroundLogger: background)
    }

    /// Runs the connection pool and the health monitor until cancelled or shut down gracefully
    /// (the service group of `keyward serve` lists the store first, so that it stops last);
    /// calls wait for a connection until it runs, and fail after it returns.
    public func run() async throws {
        let (client, url, health, logger) = (client, url, health, logger)
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask { await client.run() }
                group.addTask { await Self.watch(url, health: health, logger: logger) }
            }
        }
    }

    /// Runs `body` while the store runs, for a command that owns the store for one task (not
    /// `keyward serve`, whose service group runs it); the store stops when `body` returns.
    public func whileRunning<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.run() }
            defer { group.cancelAll() }
            return try await body()
        }
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
                    try? await withDeadline(.seconds(2)) { try await c.close() }
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

    // MARK: Statements

    public var dialect: SQLDialect { .postgres }

    public func query<T>(_ statement: SQLStatement, _ decode: (PostgresRow) throws -> T) async throws -> [T] {
        try await rows(Self.query(statement)).map { try decode(PostgresRow(row: $0)) }
    }

    /// Counted through `RETURNING`: the driver does not report how many rows a statement changed.
    @discardableResult
    public func execute(_ statement: SQLStatement) async throws -> Int {
        try await count(statement, limit: .seconds(5))
    }

    /// Deletes and counts over many rows: minutes, not seconds, are their bound.
    public func executeLong(_ statement: SQLStatement) async throws -> Int {
        try await count(statement, limit: .seconds(300))
    }

    public func queryLong<T>(_ statement: SQLStatement, _ decode: (PostgresRow) throws -> T) async throws -> [T] {
        try await rows(Self.query(statement), limit: .seconds(300)).map { try decode(PostgresRow(row: $0)) }
    }

    private func count(_ statement: SQLStatement, limit: Duration) async throws -> Int {
        let counted = SQLStatement("WITH d AS (\(statement.text) RETURNING 1) SELECT count(*) FROM d", statement.values)
        return Int(try await rows(Self.query(counted), limit: limit).first.map { try PostgresRow(row: $0).int(0) } ?? 0)
    }

    /// `statement` with numbered parameters and its values bound, typed even when absent.
    static func query(_ statement: SQLStatement) -> PostgresQuery {
        var binds = PostgresBindings(capacity: statement.values.count)
        for value in statement.values {
            switch value {
            case .integer(let v): binds.append(v)
            case .text(let v): binds.append(v)
            case .bytes(let v): binds.append(v.map { ByteBuffer(bytes: $0) })
            case .boolean(let v): binds.append(v)
            }
        }
        return PostgresQuery(unsafeSQL: SQLDialect.postgres.render(statement.text), binds: binds)
    }

    // MARK: Schema

    /// Applies ``Schema``'s pending migrations in one transaction. Every replica may start at
    /// once: the advisory lock lets one migrate while the others wait, then find the schema current.
    public func migrate() async throws {
        try await buildListingIndexConcurrently()
        try await transaction { c in
            try await Self.rows("SELECT pg_advisory_xact_lock(7346524117)", on: c, logger: logger, limit: .seconds(600))
            try await Self.rows("CREATE TABLE IF NOT EXISTS keyward_schema(version INTEGER NOT NULL)", on: c, logger: logger)
            let pending = Schema.pending(after: try await Self.recordedVersion(on: c, logger: logger))
            guard let last = pending.last else { return }
            for migration in pending {
                for statement in migration.statements(for: .postgres) {
                    try await Self.rows(PostgresQuery(unsafeSQL: statement), on: c, logger: logger, limit: .seconds(600))
                }
            }
            try await Self.rows("DELETE FROM keyward_schema", on: c, logger: logger)
            try await Self.rows("INSERT INTO keyward_schema(version) VALUES (\(Int32(last.version)))", on: c, logger: logger)
        }
    }

    /// The schema's version, in ``Schema``'s numbering (0 for an empty database).
    private static func recordedVersion(on c: PostgresConnection, logger: Logger) async throws -> Int {
        let exists = try await rows("SELECT to_regclass('keyward_schema') IS NOT NULL", on: c, logger: logger).first.map { try PostgresRow(row: $0).bool(0) }
        guard exists == true else { return 0 }
        let recorded = try await rows("SELECT version FROM keyward_schema", on: c, logger: logger).first.map { try $0[0].decode(Int32.self) }
        return Schema.postgresVersion(recorded: Int(recorded ?? 0))
    }

    /// Migration 4's index on a database that has records already, built without blocking their
    /// writers (a build inside the migration's transaction would hold every replica's writes,
    /// older replicas' included during a rolling upgrade, for as long as the build takes); the
    /// migration then only drops the old index. `CONCURRENTLY` cannot run in a transaction.
    private func buildListingIndexConcurrently() async throws {
        let logger = logger
        try await run {
            try await leased { c in
                guard try await Self.recordedVersion(on: c, logger: logger) < 4,
                      try await Self.rows("SELECT to_regclass('records') IS NOT NULL", on: c, logger: logger).first
                        .map({ try PostgresRow(row: $0).bool(0) }) == true else { return }
                // One replica builds; the others wait here, then find it built. The lock is the
                // session's: released below, or with the connection if this process dies.
                try await Self.rows("SELECT pg_advisory_lock(7346524118)", on: c, logger: logger, limit: .seconds(3600))
                do {
                    // An earlier build that was interrupted leaves an invalid index of the same name: rebuild it.
                    try await Self.rows("""
                        DO $$ BEGIN
                          IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                                     WHERE c.relname = 'records_by_time' AND NOT i.indisvalid) THEN
                            DROP INDEX records_by_time;
                          END IF;
                        END $$
                        """, on: c, logger: logger)
                    try await Self.rows("CREATE INDEX CONCURRENTLY IF NOT EXISTS records_by_time ON records(tenant, created_at, id)",
                                        on: c, logger: logger, limit: .seconds(3600))
                } catch {
                    _ = try? await Self.rows("SELECT pg_advisory_unlock(7346524118)", on: c, logger: logger)
                    throw error
                }
                try await Self.rows("SELECT pg_advisory_unlock(7346524118)", on: c, logger: logger)
            }
        }
    }

    public func ping() async throws {
        let client = client
        try await run {
            try await Self.withDeadline(.seconds(2)) { for try await _ in try await client.query("SELECT 1") {} }
        }
    }

    /// Nothing to do: PostgreSQL vacuums and checkpoints by itself.
    public func maintain() async throws -> Int { 0 }

    // MARK: Jobs

    /// Holds the job's row for the length of one batch: `FOR UPDATE SKIP LOCKED` hands the next
    /// batch to whichever replica asks while nobody holds it; a replica that dies mid-batch loses
    /// its connection, its transaction rolls back, and the batch goes to the next one to ask.
    public func withJobClaimed(id: String, _ body: (Job) async throws -> (job: Job, headers: [HeaderChange])?) async throws -> JobClaim {
        let logger = logger
        return try await transaction { c -> JobClaim in
            let found = try await Self.rows(Self.query(SQLStatement("SELECT \(Job.columns) FROM jobs WHERE id = ? FOR UPDATE SKIP LOCKED",
                                                                    [.text(id)])), on: c, logger: logger)
            guard let row = found.first else {
                let exists = try await Self.rows(Self.query(SQLStatement("SELECT 1 FROM jobs WHERE id = ?", [.text(id)])), on: c, logger: logger)
                return exists.isEmpty ? .missing : .busy
            }
            let current = try Job(row: PostgresRow(row: row))
            guard let (updated, changes) = try await body(current) else { return .unchanged(current) }
            var job = updated
            let replaced = try await Self.replace(changes, tenant: job.tenant, on: c, logger: logger)
            // A header changed meanwhile (record deleted) was left alone: count what was written.
            job.rewrapped -= Int64(changes.count - replaced)
            try await Self.rows(Self.query(job.save), on: c, logger: logger)
            return .saved(job, replaced: replaced)
        }
    }

    /// One statement for a whole batch: each header is replaced only if still `old`.
    private static func replace(_ changes: [HeaderChange], tenant: String, on c: PostgresConnection, logger: Logger) async throws -> Int {
        guard !changes.isEmpty else { return 0 }
        var binds = PostgresBindings()
        try binds.append(changes.map(\.id))
        try binds.append(changes.map(\.kind))
        try binds.append(changes.map { ByteBuffer(bytes: $0.old) })
        try binds.append(changes.map { ByteBuffer(bytes: $0.new) })
        binds.append(tenant)
        let sql = """
            UPDATE records r SET header = ch.new FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bytea[]) AS ch(id, kind, old, new)
            WHERE r.tenant = $5 AND r.id = ch.id AND r.kind = ch.kind AND r.header = ch.old RETURNING 1
            """
        return try await rows(PostgresQuery(unsafeSQL: sql, binds: binds), on: c, logger: logger).count
    }
}

/// A row of a PostgreSQL result, read by the shared row codecs.
public struct PostgresRow: SQLRow {
    let row: PostgresRandomAccessRow
    public func text(_ i: Int) throws -> String { try row[i].decode(String.self) }
    public func optionalText(_ i: Int) throws -> String? { try row[i].decode(String?.self) }
    public func int(_ i: Int) throws -> Int64 { try row[i].decode(Int64.self) }
    public func optionalInt(_ i: Int) throws -> Int64? { try row[i].decode(Int64?.self) }
    public func bool(_ i: Int) throws -> Bool { try row[i].decode(Bool.self) }
    public func bytes(_ i: Int) throws -> [UInt8] { Array(buffer: try row[i].decode(ByteBuffer.self)) }
}
