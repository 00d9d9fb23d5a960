// Key policies and shared settings.

extension SQLStore {
    public func policy(key: String) async throws -> String? {
        try await first(SQLStatement("SELECT document FROM policies WHERE key = ?", [.text(key)])) { try $0.text(0) }
    }

    public func setPolicy(key: String, document: String, at time: Int64) async throws {
        try await execute(SQLStatement("""
            INSERT INTO policies(key, document, updated_at) VALUES (?, ?, ?)
            ON CONFLICT (key) DO UPDATE SET document = excluded.document, updated_at = excluded.updated_at
            """, [.text(key), .text(document), .integer(time)]))
    }

    public func setting(_ name: String) async throws -> [UInt8]? {
        try await first(SQLStatement("SELECT value FROM settings WHERE name = ?", [.text(name)])) { try $0.bytes(0) }
    }

    public func setSettingIfAbsent(_ name: String, _ value: [UInt8]) async throws -> [UInt8] {
        try await execute(SQLStatement("INSERT INTO settings(name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                                       [.text(name), .bytes(value)]))
        guard let stored = try await setting(name) else { throw StorageError(.unavailable, "setting \(name) vanished") }
        return stored
    }
}
