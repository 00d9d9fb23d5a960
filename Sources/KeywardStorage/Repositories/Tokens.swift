// The tokens repository: token hashes, never token values.

extension TokenRecord {
    /// The columns a token is read from and written to, in the order of ``init(row:)``.
    public static let columns = "id, tenant, role, hash, created_at, suspended, requests_per_minute, tokens_per_minute"

    public init(row r: some SQLRow) throws {
        guard let role = Role(rawValue: try r.text(2)) else { throw StorageError(.corrupt, "token \(try r.text(0)) has an unknown role") }
        self.init(id: try r.text(0), tenant: try r.optionalText(1), role: role, hash: try r.bytes(3), createdAt: try r.int(4),
                  suspended: try r.bool(5), rateLimits: RateLimits(requestsPerMinute: try r.optionalInt(6), tokensPerMinute: try r.optionalInt(7)))
    }
}

extension SQLStore {
    public func insertToken(_ t: TokenRecord) async throws {
        try await execute(SQLStatement("INSERT INTO tokens(\(TokenRecord.columns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [
            .text(t.id), .text(t.tenant), .text(t.role.rawValue), .bytes(t.hash), .integer(t.createdAt), .boolean(t.suspended),
            .integer(t.rateLimits.requestsPerMinute), .integer(t.rateLimits.tokensPerMinute),
        ]))
    }

    public func token(hash: [UInt8]) async throws -> TokenRecord? {
        try await first(SQLStatement("SELECT \(TokenRecord.columns) FROM tokens WHERE hash = ?", [.bytes(hash)]), TokenRecord.init(row:))
    }

    public func token(id: String) async throws -> TokenRecord? {
        try await first(SQLStatement("SELECT \(TokenRecord.columns) FROM tokens WHERE id = ?", [.text(id)]), TokenRecord.init(row:))
    }

    public func tokens(role: TokenRecord.Role) async throws -> [TokenRecord] {
        try await query(SQLStatement("SELECT \(TokenRecord.columns) FROM tokens WHERE role = ? ORDER BY created_at, id",
                                     [.text(role.rawValue)]), TokenRecord.init(row:))
    }

    public func deleteToken(id: String) async throws -> Bool {
        try await execute(SQLStatement("DELETE FROM tokens WHERE id = ?", [.text(id)])) > 0
    }

    /// Replaces an app token's own limits; false if there is no app token `id`.
    public func setTokenRateLimits(id: String, _ limits: RateLimits) async throws -> Bool {
        try await execute(SQLStatement("UPDATE tokens SET requests_per_minute = ?, tokens_per_minute = ? WHERE id = ? AND role = 'app'",
                                       [.integer(limits.requestsPerMinute), .integer(limits.tokensPerMinute), .text(id)])) > 0
    }

    public func setTokenSuspended(id: String, _ suspended: Bool) async throws -> Bool {
        try await execute(SQLStatement("UPDATE tokens SET suspended = ? WHERE id = ?", [.boolean(suspended), .text(id)])) > 0
    }
}
