/// The SQL an engine speaks. Statements are written once, with `?` parameters and the neutral
/// type names below; each engine renders them in its own dialect.
public enum SQLDialect: String, Sendable, Hashable {
    case sqlite, postgres

    /// `text` with `?` parameters numbered for this dialect (`$1`, `$2`, … for PostgreSQL). A `?`
    /// inside a quoted literal is left alone.
    public func render(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count + 16)
        var n = 0
        var quoted = false
        for c in text {
            if c == "'" { quoted.toggle() }
            if c == "?" && !quoted {
                n += 1
                out += self == .postgres ? "$\(n)" : "?"
            } else {
                out.append(c)
            }
        }
        return out
    }

    /// A schema statement with its neutral column types in this dialect: `BIGINT` is SQLite's
    /// `INTEGER` (the same 64-bit integer; an `INTEGER PRIMARY KEY` is SQLite's row id), `BYTES`
    /// is `BLOB` or `BYTEA`; SQLite keeps a `BOOLEAN` as 0 or 1.
    func schema(_ statement: String) -> String {
        switch self {
        case .postgres: statement.replacingWord("BYTES", with: "BYTEA")
        case .sqlite: statement.replacingWord("BYTES", with: "BLOB").replacingWord("BIGINT", with: "INTEGER")
        }
    }
}

extension String {
    /// `self` with every whole-word `word` replaced.
    fileprivate func replacingWord(_ word: String, with replacement: String) -> String {
        var out = ""
        var rest = self[...]
        while let r = rest.range(of: word) {
            let before = r.lowerBound == rest.startIndex ? nil : rest[rest.index(before: r.lowerBound)]
            let after = r.upperBound == rest.endIndex ? nil : rest[r.upperBound]
            let whole = !(before.map(Self.isWordCharacter) ?? false) && !(after.map(Self.isWordCharacter) ?? false)
            out += rest[..<r.lowerBound]
            out += whole ? replacement : word
            rest = rest[r.upperBound...]
        }
        return out + rest
    }

    private static func isWordCharacter(_ c: Character) -> Bool { c.isLetter || c.isNumber || c == "_" }
}

/// A value bound to a statement's parameter. An absent value keeps its case, so that an engine
/// can type it where the statement does not (PostgreSQL's `VALUES` lists cast each parameter).
public enum SQLValue: Sendable, Hashable {
    case integer(Int64?)
    case text(String?)
    case bytes([UInt8]?)
    case boolean(Bool?)
}

/// A statement written once for every engine: text with `?` parameters and the values bound to them.
public struct SQLStatement: Sendable, Hashable, ExpressibleByStringLiteral {
    public var text: String
    public var values: [SQLValue]

    public init(_ text: String, _ values: [SQLValue] = []) {
        self.text = text
        self.values = values
    }

    public init(stringLiteral text: String) { self.init(text) }

    /// Appends text and its parameters' values.
    public static func += (s: inout SQLStatement, tail: SQLStatement) {
        s.text += tail.text
        s.values += tail.values
    }

    public static func + (s: SQLStatement, tail: SQLStatement) -> SQLStatement {
        var out = s
        out += tail
        return out
    }
}

/// The current row of a result, read by column position.
public protocol SQLRow {
    func int(_ column: Int) throws -> Int64
    func optionalInt(_ column: Int) throws -> Int64?
    func text(_ column: Int) throws -> String
    func optionalText(_ column: Int) throws -> String?
    func bytes(_ column: Int) throws -> [UInt8]
    func bool(_ column: Int) throws -> Bool
}

/// What the shared repositories need of an engine: statements in, rows out. Each call is atomic
/// on its own; multi-statement transactions stay inside the engine (group commit, job claims,
/// migrations), where each engine has its own way of holding the writer.
public protocol SQLDatabase: Sendable {
    associatedtype Row: SQLRow
    var dialect: SQLDialect { get }
    /// Runs a query and decodes each row.
    func query<T>(_ statement: SQLStatement, _ decode: (Row) throws -> T) async throws -> [T]
    /// Runs a statement that changes rows; returns how many it changed.
    @discardableResult
    func execute(_ statement: SQLStatement) async throws -> Int
    /// A statement that changes many rows (purges): engines may give it longer than a request's statement.
    func executeLong(_ statement: SQLStatement) async throws -> Int
    /// A query over many rows (counts), with the same allowance.
    func queryLong<T>(_ statement: SQLStatement, _ decode: (Row) throws -> T) async throws -> [T]
}

extension SQLDatabase {
    public func executeLong(_ statement: SQLStatement) async throws -> Int { try await execute(statement) }
    public func queryLong<T>(_ statement: SQLStatement, _ decode: (Row) throws -> T) async throws -> [T] {
        try await query(statement, decode)
    }

    /// The first row decoded, or nil.
    func first<T>(_ statement: SQLStatement, _ decode: (Row) throws -> T) async throws -> T? {
        try await query(statement, decode).first
    }
}
