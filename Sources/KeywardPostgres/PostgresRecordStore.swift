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
    let health = Health()
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

    // MARK: Statements

    public var dialect: SQLDialect { .postgres }

    public func query<T>(_ statement: SQLStatement, _ decode: (PostgresRow) throws -> T) async throws -> [T] {
        try await rows(Self.postgresQuery(statement)).map { try decode(PostgresRow(row: $0)) }
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
        try await rows(Self.postgresQuery(statement), limit: .seconds(300)).map { try decode(PostgresRow(row: $0)) }
    }

    private func count(_ statement: SQLStatement, limit: Duration) async throws -> Int {
        let counted = SQLStatement("WITH d AS (\(statement.text) RETURNING 1) SELECT count(*) FROM d", statement.values)
        return Int(try await rows(Self.postgresQuery(counted), limit: limit).first.map { try PostgresRow(row: $0).int(0) } ?? 0)
    }

    /// `statement` with numbered parameters and its values bound, typed even when absent.
    static func postgresQuery(_ statement: SQLStatement) -> PostgresQuery {
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
            let found = try await Self.rows(Self.postgresQuery(SQLStatement("SELECT \(Job.columns) FROM jobs WHERE id = ? FOR UPDATE SKIP LOCKED",
                                                                    [.text(id)])), on: c, logger: logger)
            guard let row = found.first else {
                let exists = try await Self.rows(Self.postgresQuery(SQLStatement("SELECT 1 FROM jobs WHERE id = ?", [.text(id)])), on: c, logger: logger)
                return exists.isEmpty ? .missing : .busy
            }
            let current = try Job(row: PostgresRow(row: row))
            guard let (updated, changes) = try await body(current) else { return .unchanged(current) }
            var job = updated
            let replaced = try await Self.replace(changes, tenant: job.tenant, on: c, logger: logger)
            // A header changed meanwhile (record deleted) was left alone: count what was written.
            job.rewrapped -= Int64(changes.count - replaced)
            try await Self.rows(Self.postgresQuery(job.save), on: c, logger: logger)
            return .saved(job, replaced: replaced)
        }
    }

    /// One statement for a whole batch: each header is replaced only if still `old`.
    private static func replace(_ changes: [HeaderChange], tenant: String, on c: PostgresConnection, logger: Logger) async throws -> Int {
        guard !changes.isEmpty else { return 0 }
        var binds = PostgresBindings()
        binds.append(changes.map(\.id))
        binds.append(changes.map(\.kind))
        binds.append(changes.map { ByteBuffer(bytes: $0.old) })
        binds.append(changes.map { ByteBuffer(bytes: $0.new) })
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
