import CKeywardSQLiteLog
import CSQLite
#if canImport(Glibc)
import Glibc
#endif

/// The columns of the current row of a query.
public struct SQLiteRow: SQLRow {
    fileprivate let statement: OpaquePointer

    public func int(_ column: Int) -> Int64 { sqlite3_column_int64(statement, Int32(column)) }
    public func optionalInt(_ column: Int) -> Int64? {
        sqlite3_column_type(statement, Int32(column)) == SQLITE_NULL ? nil : sqlite3_column_int64(statement, Int32(column))
    }
    public func text(_ column: Int) -> String {
        guard let p = sqlite3_column_text(statement, Int32(column)) else { return "" }
        return String(cString: p)
    }
    public func optionalText(_ column: Int) -> String? {
        sqlite3_column_type(statement, Int32(column)) == SQLITE_NULL ? nil : text(column)
    }
    public func bytes(_ column: Int) -> [UInt8] {
        let count = Int(sqlite3_column_bytes(statement, Int32(column)))
        guard count > 0, let p = sqlite3_column_blob(statement, Int32(column)) else { return [] }
        return Array(UnsafeRawBufferPointer(start: p, count: count))
    }
    /// SQLite keeps a boolean as 0 or 1.
    public func bool(_ column: Int) -> Bool { int(column) != 0 }
}

/// One SQLite connection with a cache of prepared statements. Not thread-safe: its owner keeps it
/// behind a lock (hence the unchecked `Sendable`).
final class SQLiteConnection: @unchecked Sendable {
    private let db: OpaquePointer
    private var statements: [String: OpaquePointer] = [:]

    /// Opens (creating with mode 0600) the database at `path`; `:memory:` for a private one.
    init(path: String) throws {
        if path != ":memory:" {
            // SQLite gives its -wal and -shm files the mode of the database file. Only a new file
            // is touched: closing an fd of a file SQLite has open drops its POSIX locks on it.
            let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            if fd >= 0 { close(fd) } else if errno != EEXIST {
                throw StorageError(.unavailable, "cannot open the database file \(path) (errno \(errno))")
            }
        }
        var handle: OpaquePointer?
        // The log's frames go out with one write call per commit (see CKeywardSQLiteLog); should the
        // VFS fail to register, the default one serves.
        let vfs = kw_sqlite_log_vfs_register() == SQLITE_OK ? kw_sqlite_log_vfs_name : nil
        let rc = sqlite3_open_v2(path, &handle, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, vfs)
        guard rc == SQLITE_OK, let handle else {
            if let handle { sqlite3_close_v2(handle) }
            throw StorageError(.unavailable, "cannot open the database \(path) (sqlite \(rc))")
        }
        db = handle
        sqlite3_busy_timeout(db, 5000)

        sqlite3_extended_result_codes(db, 1)
    }

    /// For tests: the write calls this connection's log made to its file, and SQLite's writes it
    /// gathered into them (nil without a log of the keyward-log VFS).
    var logWrites: (calls: Int64, gathered: Int64)? {
        var calls: Int64 = 0, gathered: Int64 = 0, pending: Int64 = 0
        return kw_sqlite_log_counts(db, &calls, &gathered, &pending) == SQLITE_OK ? (calls, gathered) : nil
    }

    deinit {
        for statement in statements.values { sqlite3_finalize(statement) }
        sqlite3_close_v2(db)
    }

    /// Syncs the database file and the log now (always safe: sooner than SQLite would).
    func syncFiles() { _ = kw_sqlite_sync_files(db) }

    /// Allocates the open log file's blocks up to `bytes`; false if the log is not open.
    @discardableResult
    func preallocateLog(bytes: Int64) -> Bool { kw_sqlite_preallocate_log(db, bytes, 1 << 20) == SQLITE_OK }

    /// Runs one or more statements without parameters or results (schema, pragmas).
    func exec(_ sql: String) throws {
        let rc = sqlite3_exec(db, sql, nil, nil, nil)
        guard rc == SQLITE_OK else { throw error(rc, doing: "run a schema statement") }
    }

    /// Runs a statement; returns the number of rows it changed.
    @discardableResult
    func execute(_ sql: String, _ arguments: [SQLValue] = []) throws -> Int {
        let statement = try prepared(sql, arguments)
        defer { sqlite3_reset(statement); sqlite3_clear_bindings(statement) }
        let rc = sqlite3_step(statement)
        guard rc == SQLITE_DONE || rc == SQLITE_ROW else { throw error(rc, doing: "write") }
        return Int(sqlite3_changes(db))
    }

    /// Runs a query and maps each row.
    func query<T>(_ sql: String, _ arguments: [SQLValue] = [], _ map: (SQLiteRow) throws -> T) throws -> [T] {
        let statement = try prepared(sql, arguments)
        defer { sqlite3_reset(statement); sqlite3_clear_bindings(statement) }
        var rows: [T] = []
        while true {
            let rc = sqlite3_step(statement)
            if rc == SQLITE_DONE { return rows }
            guard rc == SQLITE_ROW else { throw error(rc, doing: "read") }
            rows.append(try map(SQLiteRow(statement: statement)))
        }
    }

    /// Runs `body` in one transaction, rolled back if it throws.
    func transaction<T>(_ body: () throws -> T) throws -> T {
        // Through statements held here: an audit append is a transaction of its own, and looking
        // BEGIN and COMMIT up by their text, with an argument array each, cost about 1 µs of 19.
        try step(held(&begin, "BEGIN IMMEDIATE"), doing: "begin a transaction")
        do {
            let result = try body()
            try step(held(&commit, "COMMIT"), doing: "commit")
            return result
        } catch {
            _ = try? execute("ROLLBACK")
            throw error
        }
    }

    /// `PRAGMA data_version`: moves when another connection commits, not for our own commits.
    func dataVersion() throws -> Int64 {
        let query = try held(&dataVersionQuery, "PRAGMA data_version")
        defer { sqlite3_reset(query) }
        let rc = sqlite3_step(query)
        guard rc == SQLITE_ROW else { throw error(rc, doing: "read") }
        return sqlite3_column_int64(query, 0)
    }

    private var begin: OpaquePointer?
    private var commit: OpaquePointer?
    private var dataVersionQuery: OpaquePointer?

    /// The statement in `slot`, prepared (and cached with the others) on first use.
    private func held(_ slot: inout OpaquePointer?, _ sql: String) throws -> OpaquePointer {
        if let statement = slot { return statement }
        let statement = try self.statement(sql).handle
        slot = statement
        return statement
    }

    private func step(_ statement: OpaquePointer, doing what: String) throws {
        defer { sqlite3_reset(statement) }
        let rc = sqlite3_step(statement)
        guard rc == SQLITE_DONE else { throw error(rc, doing: what) }
    }

    /// The cached statement for `sql`, prepared on first use.
    func statement(_ sql: String) throws -> SQLiteStatement {
        if let cached = statements[sql] { return SQLiteStatement(handle: cached, connection: self) }
        var handle: OpaquePointer?
        let rc = sqlite3_prepare_v3(db, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &handle, nil)
        guard rc == SQLITE_OK, let handle else { throw error(rc, doing: "prepare a statement") }
        statements[sql] = handle
        return SQLiteStatement(handle: handle, connection: self)
    }

    private func prepared(_ sql: String, _ arguments: [SQLValue]) throws -> OpaquePointer {
        let statement = try self.statement(sql).handle
        for (i, argument) in arguments.enumerated() {
            let rc = argument.bind(to: statement, at: Int32(i + 1))
            guard rc == SQLITE_OK else { throw error(rc, doing: "bind a value") }
        }
        return statement
    }

    /// The SQLite message names tables and constraints, never bound values, so it is safe to keep.
    fileprivate func error(_ rc: Int32, doing what: String) -> StorageError {
        let message = String(cString: sqlite3_errmsg(db))
        switch rc & 0xff {
        case SQLITE_CONSTRAINT where rc == 1555 || rc == 2067:  // _PRIMARYKEY, _UNIQUE
            return StorageError(.alreadyExists, "cannot \(what): \(message)")
        case SQLITE_CONSTRAINT:
            return StorageError(.invalidArgument, "cannot \(what): \(message)")
        case SQLITE_CORRUPT, SQLITE_NOTADB:
            return StorageError(.corrupt, "cannot \(what): \(message) (sqlite \(rc))")
        default:
            return StorageError(.unavailable, "cannot \(what): \(message) (sqlite \(rc))")
        }
    }
}

private let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

/// A prepared statement for the hot inserts: no lookup by SQL text per row. Valid while its
/// connection's lock is held.
struct SQLiteStatement {
    fileprivate let handle: OpaquePointer
    fileprivate unowned(unsafe) let connection: SQLiteConnection

    /// Binds `values` to the parameters in order, runs the statement, then resets it.
    func run(_ values: [SQLValue]) throws {
        defer { sqlite3_reset(handle) }
        for (i, value) in values.enumerated() {
            let rc = value.bind(to: handle, at: Int32(i + 1))
            guard rc == SQLITE_OK else { throw connection.error(rc, doing: "bind a value") }
        }
        let rc = sqlite3_step(handle)
        guard rc == SQLITE_DONE || rc == SQLITE_ROW else { throw connection.error(rc, doing: "write") }
    }
}

extension SQLValue {
    /// Binds the value (copied by SQLite) to parameter `index` of `statement`.
    func bind(to statement: OpaquePointer, at index: Int32) -> Int32 {
        switch self {
        case .integer(let v?): return sqlite3_bind_int64(statement, index, v)
        case .boolean(let v?): return sqlite3_bind_int64(statement, index, v ? 1 : 0)
        case .text(var v?):
            return v.withUTF8 { u in
                // A non-null pointer even for "", which SQLite would otherwise bind as NULL.
                let p = UnsafeRawPointer(u.baseAddress ?? UnsafePointer(bitPattern: 1)!).assumingMemoryBound(to: CChar.self)
                return sqlite3_bind_text(statement, index, p, Int32(u.count), transient)
            }
        case .bytes(let v?):
            return v.withUnsafeBytes {
                sqlite3_bind_blob64(statement, index, $0.baseAddress ?? UnsafeRawPointer(bitPattern: 1), UInt64($0.count), transient)
            }
        case .integer(nil), .boolean(nil), .text(nil), .bytes(nil): return sqlite3_bind_null(statement, index)
        }
    }
}
