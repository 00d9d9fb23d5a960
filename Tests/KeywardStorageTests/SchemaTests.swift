import Foundation
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

    /// Record metadata is stored as this JSON (the column readers and older releases decode it):
    /// fields in this order, absent ones left out, strings escaped, and it decodes to what it was.
    @Test func recordMetadataJSON() throws {
        let all = RecordMetadata(model: "gpt \"4\"\\\u{1}é", status: 200, promptTokens: 12, completionTokens: -3, upstreamMs: 1.5,
                                 size: 4096, streamed: false, chain: ["a", "b\n"], purpose: "batch")
        #expect(all.json == #"{"model":"gpt \"4\"\\\u0001é","status":200,"promptTokens":12,"completionTokens":-3,"upstreamMs":1.5,"size":4096,"streamed":false,"chain":["a","b\u000a"],"purpose":"batch"}"#)
        #expect(try JSONDecoder().decode(RecordMetadata.self, from: Data(all.json.utf8)) == all)
        #expect(RecordMetadata().json == "{}")
        #expect(RecordMetadata(upstreamMs: .infinity, streamed: true).json == #"{"upstreamMs":0,"streamed":true}"#)
    }
}
