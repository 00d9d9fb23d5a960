import KeywardStorage
import NIOCore
import PostgresNIO

/// A statement built piece by piece with numbered parameters (`$1`, `$2`, …), for queries whose
/// filters depend on the request.
struct SQL {
    var text: String
    var binds = PostgresBindings()

    init(_ text: String) { self.text = text }

    /// Appends `value` as the next parameter and returns its placeholder.
    mutating func bind(_ value: some PostgresDynamicTypeEncodable) -> String {
        binds.append(value)
        return "$\(binds.count)"
    }

    mutating func bind(_ value: (some PostgresDynamicTypeEncodable)?) -> String {
        binds.append(value)
        return "$\(binds.count)"
    }

    /// Optional text, typed: a NULL parameter has no type of its own, and inside `VALUES` it
    /// would not take the column's.
    mutating func bind(text value: String?) -> String { bind(value) + "::text" }

    mutating func bind(bigint value: Int64?) -> String { bind(value) + "::bigint" }

    /// Bytes as `bytea` (a `[UInt8]` bound directly would become an array of `"char"`).
    mutating func bind(bytes: [UInt8]) -> String { bind(ByteBuffer(bytes: bytes)) }

    mutating func bind<T: PostgresArrayEncodable>(array: [T]) throws -> String {
        try binds.append(array)
        return "$\(binds.count)"
    }

    static func += (sql: inout SQL, text: String) { sql.text += text }

    var query: PostgresQuery { PostgresQuery(unsafeSQL: text, binds: binds) }
}

extension PostgresRandomAccessRow {
    func text(_ i: Int) throws -> String { try self[i].decode(String.self) }
    func optionalText(_ i: Int) throws -> String? { try self[i].decode(String?.self) }
    func int(_ i: Int) throws -> Int64 { try self[i].decode(Int64.self) }
    func optionalInt(_ i: Int) throws -> Int64? { try self[i].decode(Int64?.self) }
    func bool(_ i: Int) throws -> Bool { try self[i].decode(Bool.self) }
    func bytes(_ i: Int) throws -> [UInt8] { Array(buffer: try self[i].decode(ByteBuffer.self)) }
}

enum PostgresErrors {
    /// Whether `error` left the connection unusable: the connection itself failed, or the server
    /// ended the session (shutdown, lost connection).
    static func brokeConnection(_ error: any Error) -> Bool {
        guard let e = error as? PSQLError else { return false }
        guard e.code == .server, let state = e.serverInfo?[.sqlState] else { return true }
        return state.hasPrefix("57P") || state.hasPrefix("08")
    }

    /// A storage error with a safe reason: the SQL state says what kind of failure it was; the
    /// server's message (which may quote a value) is never carried.
    static func map(_ error: any Error) -> any Error {
        guard let e = error as? PSQLError else {
            // The pool's own failures (no connection could be made in time) are unavailability;
            // anything else is the caller's error, passed through.
            return String(reflecting: type(of: error)).contains("ConnectionPoolError")
                ? StorageError(.unavailable, "the database is unreachable") : error
        }
        guard e.code == .server, let state = e.serverInfo?[.sqlState] else {
            return StorageError(.unavailable, "the database is unreachable (\(e.code))")
        }
        switch state {
        case "23505": return StorageError(.alreadyExists, "a row with this key is already stored")
        case "23503": return StorageError(.invalidArgument, "the row refers to something that does not exist")
        case "57P01", "57P02", "57P03", "08000", "08003", "08006", "53300":
            return StorageError(.unavailable, "the database is unavailable (SQL state \(state))")
        default: return StorageError(.unavailable, "the database refused the operation (SQL state \(state))")
        }
    }
}
