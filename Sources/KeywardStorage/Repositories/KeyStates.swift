// Keyward's own key states: revocations and deletion schedules, over what the key stores say.
// Every change is a compare-and-set on the state read, so that replicas changing one key at once
// (a cancellation racing the deletion service) cannot both win.

extension KeyStateRecord {
    static let columns = "key, state, delete_at, updated_at"

    init(row r: some SQLRow) throws {
        guard let state = State(rawValue: try r.text(1)) else { throw StorageError(.corrupt, "key \(try r.text(0)) has an unknown state") }
        self.init(key: try r.text(0), state: state, deleteAt: try r.optionalInt(2), updatedAt: try r.int(3))
    }

    /// Matches this very row: same state, date and time of change.
    fileprivate var unchanged: (sql: String, values: [SQLValue]) {
        ("key = ? AND state = ? AND COALESCE(delete_at, -1) = ? AND updated_at = ?",
         [.text(key), .text(state.rawValue), .integer(deleteAt ?? -1), .integer(updatedAt)])
    }
}

extension SQLStore {
    public func keyState(key: String) async throws -> KeyStateRecord? {
        try await first(SQLStatement("SELECT \(KeyStateRecord.columns) FROM key_states WHERE key = ?", [.text(key)]),
                        KeyStateRecord.init(row:))
    }

    public func keyStates() async throws -> [KeyStateRecord] {
        try await query(SQLStatement("SELECT \(KeyStateRecord.columns) FROM key_states ORDER BY key"), KeyStateRecord.init(row:))
    }

    public func insertKeyState(_ s: KeyStateRecord) async throws {
        try await execute(SQLStatement("INSERT INTO key_states(\(KeyStateRecord.columns)) VALUES (?, ?, ?, ?)",
                                       [.text(s.key), .text(s.state.rawValue), .integer(s.deleteAt), .integer(s.updatedAt)]))
    }

    public func replaceKeyState(_ old: KeyStateRecord, with new: KeyStateRecord?) async throws -> Bool {
        precondition(new == nil || new?.key == old.key, "a key state replaces one of the same key")
        let match = old.unchanged
        guard let new else {
            return try await execute(SQLStatement("DELETE FROM key_states WHERE \(match.sql)", match.values)) > 0
        }
        return try await execute(SQLStatement("UPDATE key_states SET state = ?, delete_at = ?, updated_at = ? WHERE \(match.sql)",
                                              [.text(new.state.rawValue), .integer(new.deleteAt), .integer(new.updatedAt)] + match.values)) > 0
    }

    public func keysDueForDeletion(at time: Int64) async throws -> [KeyStateRecord] {
        try await query(SQLStatement("SELECT \(KeyStateRecord.columns) FROM key_states WHERE delete_at <= ? ORDER BY key", [.integer(time)]),
                        KeyStateRecord.init(row:))
    }
}
