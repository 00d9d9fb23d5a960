import KeywardStorage
import Logging
import PostgresNIO

/// ``Schema``'s migrations on PostgreSQL.
extension PostgresRecordStore {
    /// Applies ``Schema``'s pending migrations in one transaction. Every replica may start at
    /// once: the advisory lock lets one migrate while the others wait, then find the schema current.
    public func migrate() async throws {
        try await runBeforeTransactionSteps()
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

    /// Runs the pending migrations' ``Schema/Migration/beforeTransaction`` statements on a
    /// database that has tables already, one replica at a time (a session advisory lock, released
    /// below, or with the connection if this process dies).
    private func runBeforeTransactionSteps() async throws {
        let logger = logger
        try await run {
            try await leased { c in
                let recorded = try await Self.recordedVersion(on: c, logger: logger)
                let steps = Schema.pending(after: recorded).flatMap(\.beforeTransaction)
                guard recorded > 0, !steps.isEmpty else { return }
                try await Self.rows("SELECT pg_advisory_lock(7346524118)", on: c, logger: logger, limit: .seconds(3600))
                do {
                    for step in steps { try await Self.rows(PostgresQuery(unsafeSQL: step), on: c, logger: logger, limit: .seconds(3600)) }
                } catch {
                    _ = try? await Self.rows("SELECT pg_advisory_unlock(7346524118)", on: c, logger: logger)
                    throw error
                }
                try await Self.rows("SELECT pg_advisory_unlock(7346524118)", on: c, logger: logger)
            }
        }
    }
}
