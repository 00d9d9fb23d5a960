import KeywardStorage
import Testing

/// How statements and migrations differ per engine, without a database (KeywardPostgresTests
/// compares the two engines' migrated schemas).
@Suite("Statements and migrations per dialect")
struct SchemaTests {
    /// Parameters are numbered for PostgreSQL, except inside quoted literals; neutral types render
    /// per engine, whole words only.
    @Test func statementsRenderPerDialect() {
        #expect(SQLDialect.postgres.render("SELECT a FROM t WHERE b = ? AND c = '?' AND d IN (?, ?)")
                == "SELECT a FROM t WHERE b = $1 AND c = '?' AND d IN ($2, $3)")
        #expect(SQLDialect.sqlite.render("SELECT ? WHERE '?'") == "SELECT ? WHERE '?'")
        #expect(Schema.pending(after: 0).map(\.version) == Array(1...Schema.version))
        #expect(Schema.postgresVersion(recorded: 1) == 3, "a database of the releases with one PostgreSQL migration")
        let create = Schema.pending(after: 1).first!.statements(for: .sqlite).first { $0.contains("audit_events(") }!
        #expect(create.contains("seq INTEGER PRIMARY KEY") && create.contains("prev_hash BLOB NOT NULL"))
        #expect(!Schema.pending(after: 1).first!.statements(for: .sqlite).contains { $0.contains("audit_head") })
    }
}
