import KeywardStorage
import NIOCore
import PostgresNIO

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
