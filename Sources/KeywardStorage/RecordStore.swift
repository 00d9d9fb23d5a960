import KeywardAudit

/// Where the gateway keeps tenants, token hashes and encrypted records: one repository per
/// aggregate, one store that is all of them. The SQLite store is the embedded default; every
/// implementation must pass the same conformance suite.
///
/// Records are opaque ciphertext to a store: it never sees a key or a plaintext byte.
public protocol RecordStore: TenantRepository, TokenRepository, PolicyRepository, KeyStateRepository, RecordRepository,
    JobRepository, BatchRepository, RateCountRepository, AuditChainStore, SettingsStore
{
    /// Creates the schema if needed, or brings it to ``Schema/version``; safe to call on every start.
    func migrate() async throws
    /// Succeeds when the database answers.
    func ping() async throws
    /// Periodic upkeep off the request path (SQLite: checkpoint the write-ahead log). Returns a
    /// count of work done, for logs.
    @discardableResult
    func maintain() async throws -> Int
}

public protocol TenantRepository: Sendable {
    /// - Throws: `StorageError.alreadyExists` if the name is taken.
    func createTenant(_ tenant: Tenant) async throws
    func tenant(named name: String) async throws -> Tenant?
    func tenants() async throws -> [Tenant]
    /// Tenants whose master key (or previous key, during a re-key) is `key`.
    func tenants(usingKey key: String) async throws -> [Tenant]
    /// Writes a tenant's keys (its key, its previous key during a re-key), nothing else.
    func updateTenantKeys(_ tenant: Tenant) async throws
    /// Writes the settings `change` gives, each alone: neither the keys nor a setting left out.
    func updateTenantSettings(_ name: String, _ change: TenantSettingsChange) async throws
}

public protocol TokenRepository: Sendable {
    func insertToken(_ token: TokenRecord) async throws
    func token(hash: [UInt8]) async throws -> TokenRecord?
    func token(id: String) async throws -> TokenRecord?
    func tokens(role: TokenRecord.Role) async throws -> [TokenRecord]
    /// - Returns: whether a token was deleted.
    func deleteToken(id: String) async throws -> Bool
    /// - Returns: whether the token exists.
    func setTokenSuspended(id: String, _ suspended: Bool) async throws -> Bool
    /// Replaces an app token's own rate limits; false if there is no app token `id`.
    func setTokenRateLimits(id: String, _ limits: RateLimits) async throws -> Bool
}

public protocol PolicyRepository: Sendable {
    /// The access policy document (JSON) of a master key, or nil if none was ever set.
    func policy(key: String) async throws -> String?
    func setPolicy(key: String, document: String, at time: Int64) async throws
}

/// Keyward's own key states (``KeyStateRecord``): at most one per key reference.
public protocol KeyStateRepository: Sendable {
    func keyState(key: String) async throws -> KeyStateRecord?
    func keyStates() async throws -> [KeyStateRecord]
    /// - Throws: `StorageError.alreadyExists` if the key has a state.
    func insertKeyState(_ state: KeyStateRecord) async throws
    /// Replaces (or with nil, deletes) the key's state if it is still exactly `old`.
    /// - Returns: whether it was; false if another change came first.
    func replaceKeyState(_ old: KeyStateRecord, with new: KeyStateRecord?) async throws -> Bool
    /// States whose deletion date is at or before `time`: keys pending deletion that are due, and
    /// destroyed keys whose store has not yet confirmed it (their date is cleared once it has).
    func keysDueForDeletion(at time: Int64) async throws -> [KeyStateRecord]
}

public protocol RecordRepository: Sendable {
    /// Stores records and the audit events that describe them, all or none: a record is never
    /// kept without its event, nor an event appended for a record that was not kept.
    /// - Returns: the events as appended (with position and hashes).
    /// - Throws: `StorageError.alreadyExists` if any (tenant, id, kind) is taken.
    @discardableResult
    func insert(_ records: [Record], audit: [AuditEvent]) async throws -> [AuditEvent]
    /// Inserts or replaces one record (for values with a fixed id, such as provider keys).
    func upsert(_ record: Record) async throws
    /// One record of a tenant, or nil: another tenant's record is not found.
    func record(tenant: String, id: String, kind: String) async throws -> Record?
    /// Every record of a tenant with one of these ids (any kind), in no particular order, for
    /// reading their content: their metadata is not read (left empty), which keeps a long
    /// Responses chain (whose records each list their earlier ids) from costing a decode per id.
    func records(tenant: String, ids: [String]) async throws -> [Record]
    /// A page of a tenant's records of one kind, ordered by creation time then id.
    func records(_ query: RecordQuery) async throws -> [Record]
    /// A tenant's records of every kind after (id, kind), ordered by id then kind.
    func records(tenant: String, after: (id: String, kind: String)?, limit: Int) async throws -> [Record]
    /// A tenant's record headers after (id, kind), ordered by id then kind.
    func recordHeaders(tenant: String, after: (id: String, kind: String)?, limit: Int) async throws -> [RecordHeader]
    func countRecords(tenant: String) async throws -> Int64
    /// Deletes one record; returns whether it existed.
    func deleteRecord(tenant: String, id: String, kind: String) async throws -> Bool
    /// Deletes every record with this id of this tenant; returns how many.
    func deleteRecords(tenant: String, id: String) async throws -> Int
    /// Deletes every record of a tenant (shredded data); returns how many.
    func deleteAllRecords(tenant: String) async throws -> Int
    /// Deletes records whose `expiresAt` is before `time`, then the ended batches whose metadata
    /// record is gone (expired, or deleted with its tenant's data); returns how many records.
    func purgeExpired(before time: Int64) async throws -> Int
}

public protocol JobRepository: Sendable {
    func createJob(_ job: Job) async throws
    func job(id: String) async throws -> Job?
    func jobs(status: Job.Status) async throws -> [Job]
    func updateJob(_ job: Job) async throws
    /// Runs one batch of job `id` while holding the job against every other worker (another
    /// replica, another task): `body` gets the job as saved and returns it updated, with the
    /// headers to replace (each only if still equal to its `old` value), or nil to save nothing.
    /// Headers and job commit together; a worker that dies mid-batch leaves it to the next.
    func withJobClaimed(id: String, _ body: (Job) async throws -> (job: Job, headers: [HeaderChange])?) async throws -> JobClaim
}

extension RecordRepository {
    /// Stores records all or none, without audit events.
    public func insert(_ records: [Record]) async throws {
        try await insert(records, audit: [])
    }
}
