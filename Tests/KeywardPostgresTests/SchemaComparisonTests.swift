import KeywardStorage
@testable import KeywardPostgres
import KeywardTesting
import Testing

/// What a migrated database holds, read back from the engine's own catalogue, in neutral terms.
struct SchemaDescription: Equatable, CustomStringConvertible {
    struct Column: Hashable {
        var name: String
        /// integer, text, bytes or boolean.
        var type: String
        var notNull: Bool
    }
    struct ForeignKey: Hashable {
        var column: String
        var table: String
        var referenced: String
    }
    struct Index: Hashable {
        var name: String
        var columns: [String]
        var unique: Bool
        var partial: Bool
    }
    struct Table: Equatable {
        var columns: [Column] = []
        var primaryKey: [String] = []
        var unique: Set<[String]> = []
        var foreignKeys: Set<ForeignKey> = []
        var indexes: Set<Index> = []
    }
    var tables: [String: Table] = [:]

    var description: String {
        tables.keys.sorted().map { name in
            let t = tables[name]!
            return "\(name): \(t.columns.map { "\($0.name) \($0.type)\($0.notNull ? " not null" : "")" }) pk \(t.primaryKey) "
                + "unique \(t.unique.sorted { $0.joined() < $1.joined() }) fk \(t.foreignKeys) "
                + "indexes \(t.indexes.sorted { $0.name < $1.name }.map { "\($0.name)(\($0.columns.joined(separator: ",")))\($0.unique ? " unique" : "")\($0.partial ? " partial" : "")" })"
        }.joined(separator: "\n")
    }

    static func neutralType(_ declared: String) -> String {
        switch declared.lowercased() {
        case "integer", "bigint": "integer"
        case "text": "text"
        case "blob", "bytea": "bytes"
        case "boolean": "boolean"
        default: "unknown \(declared)"
        }
    }

    static func of(_ store: SQLiteRecordStore) async throws -> SchemaDescription {
        var out = SchemaDescription()
        let names = try await store.query("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'") { $0.text(0) }
        for name in names {
            var t = Table()
            let columns = try await store.query(SQLStatement("SELECT name, type, \"notnull\", pk FROM pragma_table_info(?) ORDER BY cid",
                                                             [.text(name)])) { ($0.text(0), $0.text(1), $0.int(2) != 0, $0.int(3)) }
            t.primaryKey = columns.filter { $0.3 > 0 }.sorted { $0.3 < $1.3 }.map(\.0)
            // SQLite lets a primary key that is not an integer hold NULL (an old bug kept for
            // compatibility); the gateway never writes one, and PostgreSQL's imply NOT NULL.
            t.columns = columns.map { Column(name: $0.0, type: neutralType($0.1), notNull: $0.2 || $0.3 > 0) }
            let indexes = try await store.query(SQLStatement("SELECT name, \"unique\", origin, partial FROM pragma_index_list(?)", [.text(name)])) {
                ($0.text(0), $0.int(1) != 0, $0.text(2), $0.int(3) != 0)
            }
            for (index, unique, origin, partial) in indexes {
                let cols = try await store.query(SQLStatement("SELECT name FROM pragma_index_info(?) ORDER BY seqno", [.text(index)])) { $0.text(0) }
                switch origin {
                case "pk": t.primaryKey = cols
                case "u": t.unique.insert(cols)
                default: t.indexes.insert(Index(name: index, columns: cols, unique: unique, partial: partial))
                }
            }
            t.foreignKeys = Set(try await store.query(SQLStatement("SELECT \"from\", \"table\", \"to\" FROM pragma_foreign_key_list(?)",
                                                                   [.text(name)])) { ForeignKey(column: $0.text(0), table: $0.text(1), referenced: $0.text(2)) })
            out.tables[name] = t
        }
        return out
    }

    static func of(_ store: PostgresRecordStore) async throws -> SchemaDescription {
        var out = SchemaDescription()
        let names = try await store.query("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'") { try $0.text(0) }
        for name in names {
            var t = Table()
            t.columns = try await store.query(SQLStatement("""
                SELECT column_name::text, data_type::text, is_nullable::text FROM information_schema.columns
                WHERE table_schema = 'public' AND table_name = ? ORDER BY ordinal_position
                """, [.text(name)])) { Column(name: try $0.text(0), type: neutralType(try $0.text(1)), notNull: try $0.text(2) == "NO") }
            // Constraints (with their columns in key order) and the indexes behind none of them.
            let constraints = try await store.query(SQLStatement("""
                SELECT c.conname::text, c.contype::text,
                       (SELECT string_agg(a.attname, ',' ORDER BY k.ord) FROM unnest(c.conkey) WITH ORDINALITY k(attnum, ord)
                        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum),
                       coalesce(c.confrelid::regclass::text, ''),
                       coalesce((SELECT string_agg(a.attname, ',') FROM unnest(c.confkey) k(attnum)
                        JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum), '')
                FROM pg_constraint c WHERE c.conrelid = ?::regclass
                """, [.text(name)])) { (try $0.text(0), try $0.text(1), try $0.text(2), try $0.text(3), try $0.text(4)) }
            for (_, type, columns, table, referenced) in constraints {
                let cols = columns.split(separator: ",").map(String.init)
                switch type {
                case "p": t.primaryKey = cols
                case "u": t.unique.insert(cols)
                case "f": t.foreignKeys.insert(ForeignKey(column: cols[0], table: table, referenced: referenced))
                default: break
                }
            }
            t.indexes = Set(try await store.query(SQLStatement("""
                SELECT i.relname::text, ix.indisunique, ix.indpred IS NOT NULL,
                       (SELECT string_agg(a.attname, ',' ORDER BY k.ord) FROM unnest(ix.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
                        JOIN pg_attribute a ON a.attrelid = ix.indrelid AND a.attnum = k.attnum)
                FROM pg_index ix JOIN pg_class i ON i.oid = ix.indexrelid
                WHERE ix.indrelid = ?::regclass AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = ix.indexrelid)
                """, [.text(name)])) {
                Index(name: try $0.text(0), columns: try $0.text(3).split(separator: ",").map(String.init), unique: try $0.bool(1),
                      partial: try $0.bool(2))
            })
            out.tables[name] = t
        }
        return out
    }
}

@Suite("One schema for every engine")
struct SchemaComparisonTests {
    /// Both engines migrated from empty hold the same tables, columns (name, type, nullability, in
    /// order), primary keys, unique constraints, foreign keys and indexes (name, columns, unique,
    /// partial). PostgreSQL's own machinery is named here and nowhere else: where it keeps the
    /// version (SQLite uses `PRAGMA user_version`) and the chain head its replicas lock.
    @Test func sqliteAndPostgresHoldTheSameSchema() async throws {
        let dir = try TemporaryDirectory()
        let sqlite = try SQLiteRecordStore(path: dir.file("k.sqlite3"))
        try await sqlite.migrate()
        let running = try await TestDatabase.fresh()
        defer { running.shutdown() }
        let postgres = running.store
        try await postgres.migrate()

        var pg = try await SchemaDescription.of(postgres)
        let machinery = ["audit_head", "keyward_schema"]
        #expect(machinery.allSatisfy { pg.tables[$0] != nil })
        for name in machinery { pg.tables[name] = nil }
        let lite = try await SchemaDescription.of(sqlite)
        #expect(lite.tables.count == 12, "\(lite.tables.keys.sorted())")
        #expect(lite == pg, "SQLite:\n\(lite)\nPostgreSQL:\n\(pg)")
    }

    /// Each engine records the last migration's version, and a second migrate changes nothing.
    @Test func bothEnginesRecordTheCurrentVersion() async throws {
        let dir = try TemporaryDirectory()
        let sqlite = try SQLiteRecordStore(path: dir.file("k.sqlite3"))
        try await sqlite.migrate()
        try await sqlite.migrate()
        #expect(try await sqlite.query("PRAGMA user_version") { $0.int(0) } == [Int64(Schema.version)])
        let running = try await TestDatabase.fresh()
        defer { running.shutdown() }
        let postgres = running.store
        try await postgres.migrate()
        try await postgres.migrate()
        #expect(try await postgres.query("SELECT version::bigint FROM keyward_schema") { try $0.int(0) } == [Int64(Schema.version)])
    }
}
