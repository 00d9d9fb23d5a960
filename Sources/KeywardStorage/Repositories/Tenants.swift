// The tenants repository: rows of `tenants`, written once for every engine.

extension Tenant {
    /// The columns a tenant is read from and written to, in the order of ``init(row:)``.
    public static let columns = "name, key, store, retention_days, created_at, previous_key, encrypted_requests, requests_per_minute, tokens_per_minute"

    public init(row r: some SQLRow) throws {
        guard let store = StorePolicy(rawValue: try r.text(2)) else {
            throw StorageError(.corrupt, "tenant \(try r.text(0)) has an unknown store policy")
        }
        guard let encrypted = EncryptedRequests(rawValue: try r.text(6)) else {
            throw StorageError(.corrupt, "tenant \(try r.text(0)) has an unknown encrypted_requests setting")
        }
        self.init(name: try r.text(0), key: try r.text(1), store: store, retentionDays: Int(try r.int(3)), createdAt: try r.int(4),
                  previousKey: try r.optionalText(5), encryptedRequests: encrypted,
                  rateLimits: RateLimits(requestsPerMinute: try r.optionalInt(7), tokensPerMinute: try r.optionalInt(8)))
    }
}

extension SQLStore {
    public func createTenant(_ t: Tenant) async throws {
        try await execute(SQLStatement("INSERT INTO tenants(\(Tenant.columns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [
            .text(t.name), .text(t.key), .text(t.store.rawValue), .integer(Int64(t.retentionDays)), .integer(t.createdAt),
            .text(t.previousKey), .text(t.encryptedRequests.rawValue), .integer(t.rateLimits.requestsPerMinute),
            .integer(t.rateLimits.tokensPerMinute),
        ]))
    }

    /// Writes a tenant's keys (a re-key's move): only those, so that a settings change made
    /// meanwhile is not written back over.
    public func updateTenantKeys(_ t: Tenant) async throws {
        let changed = try await execute(SQLStatement(
            "UPDATE tenants SET key = ?, previous_key = ? WHERE name = ?", [.text(t.key), .text(t.previousKey), .text(t.name)]))
        guard changed == 1 else { throw StorageError(.notFound, "no tenant \(t.name)") }
    }

    /// Writes the settings `change` gives (store policy, retention, encrypted requests, limits),
    /// each alone: neither the tenant's keys nor a setting it leaves out.
    public func updateTenantSettings(_ name: String, _ change: TenantSettingsChange) async throws {
        let limits = change.rateLimits
        let changed = try await execute(SQLStatement("""
            UPDATE tenants SET store = COALESCE(?, store), retention_days = COALESCE(?, retention_days),
                encrypted_requests = COALESCE(?, encrypted_requests),
                requests_per_minute = CASE WHEN ? THEN ? ELSE requests_per_minute END,
                tokens_per_minute = CASE WHEN ? THEN ? ELSE tokens_per_minute END WHERE name = ?
            """, [.text(change.store?.rawValue), .integer(change.retentionDays.map(Int64.init)),
                  .text(change.encryptedRequests?.rawValue), .boolean(limits != nil), .integer(limits?.requestsPerMinute),
                  .boolean(limits != nil), .integer(limits?.tokensPerMinute), .text(name)]))
        guard changed == 1 else { throw StorageError(.notFound, "no tenant \(name)") }
    }

    public func tenant(named name: String) async throws -> Tenant? {
        try await first(SQLStatement("SELECT \(Tenant.columns) FROM tenants WHERE name = ?", [.text(name)]), Tenant.init(row:))
    }

    public func tenants() async throws -> [Tenant] {
        try await query(SQLStatement("SELECT \(Tenant.columns) FROM tenants ORDER BY name"), Tenant.init(row:))
    }

    public func tenants(usingKey key: String) async throws -> [Tenant] {
        try await query(SQLStatement("SELECT \(Tenant.columns) FROM tenants WHERE key = ? OR previous_key = ? ORDER BY name",
                                     [.text(key), .text(key)]), Tenant.init(row:))
    }
}
