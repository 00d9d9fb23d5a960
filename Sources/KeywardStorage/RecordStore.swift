/// Where the gateway keeps tenants, token hashes and encrypted records. The SQLite store is the
/// embedded default; every implementation must pass the same conformance suite.
///
/// Records are opaque ciphertext to a store: it never sees a key or a plaintext byte.
public protocol RecordStore: Sendable {
    /// Creates the schema if needed; safe to call on every start.
    func migrate() async throws
    /// Succeeds when the database answers.
    func ping() async throws
    /// Periodic upkeep off the request path (SQLite: checkpoint the write-ahead log). Returns a
    /// count of work done, for logs.
    @discardableResult
    func maintain() async throws -> Int

    /// - Throws: `StorageError.alreadyExists` if the name is taken.
    func createTenant(_ tenant: Tenant) async throws
    func tenant(named name: String) async throws -> Tenant?
    func tenants() async throws -> [Tenant]
    /// Tenants whose master key is `key`.
    func tenants(usingKey key: String) async throws -> [Tenant]

    func insertToken(_ token: TokenRecord) async throws
    func token(hash: [UInt8]) async throws -> TokenRecord?
    func tokens(role: TokenRecord.Role) async throws -> [TokenRecord]
    /// - Returns: whether a token was deleted.
    func deleteToken(id: String) async throws -> Bool

    /// Stores records all or none.
    /// - Throws: `StorageError.alreadyExists` if any (tenant, id, kind) is taken.
    func insert(_ records: [Record]) async throws
    /// Inserts or replaces one record (for values with a fixed id, such as provider keys).
    func upsert(_ record: Record) async throws
    /// One record of a tenant, or nil: another tenant's record is not found.
    func record(tenant: String, id: String, kind: String) async throws -> Record?
    /// A page of a tenant's records of one kind, ordered by creation time then id.
    func records(_ query: RecordQuery) async throws -> [Record]
    /// Deletes every record with this id of this tenant; returns how many.
    func deleteRecords(tenant: String, id: String) async throws -> Int
    /// Deletes records whose `expiresAt` is before `time`; returns how many.
    func purgeExpired(before time: Int64) async throws -> Int
}
