import Foundation
import KeywardAudit
import KeywardCrypto
import KeywardKeyStores
import KeywardStorage

// The admin API's answers as typed bodies (encoded with sorted keys by `JSONBody.encoded`; an
// absent optional is left out, as the API documents). Field names are the API's.

/// A list answer: `{"object": "list", "data": [...]}`.
struct ListBody<Item: Encodable>: Encodable {
    let object = "list"
    let data: [Item]
}

struct TenantBody: Encodable {
    let name: String
    let key: String
    let store: String
    let retention_days: Int
    let encrypted_requests: String
    /// The tenant's own limits (a limit left out: the configured default's).
    let rate_limits: RateLimits
    /// Seconds since 1970.
    let created_at: Int64

    init(_ t: Tenant) {
        name = t.name
        key = t.key
        store = t.store.rawValue
        retention_days = t.retentionDays
        encrypted_requests = t.encryptedRequests.rawValue
        rate_limits = t.rateLimits
        created_at = t.createdAt / 1000
    }
}

/// A new token: its value appears here, once, and nowhere else.
struct TokenCreatedBody: Encodable {
    let id: String
    let token: String
    let role: String
    let tenant: String?
    /// An app token's own limits.
    let rate_limits: RateLimits?
}

struct TokenLimitsBody: Encodable {
    let id: String
    let rate_limits: RateLimits
}

struct TokenDeletedBody: Encodable {
    let id: String
    let deleted = true
}

struct TokenSuspensionBody: Encodable {
    let id: String
    let suspended: Bool
}

struct PurgedBody: Encodable {
    let tenant: String
    let deleted: Int
}

/// A master key's state in its store (times in seconds since 1970).
struct KeyBody: Encodable {
    let key: String
    /// The key store: the reference's scheme.
    let store: String
    let state: String
    let versions: Int?
    let created_at: Int?
    let deletion_date: Int?
    let rotation_enabled: Bool?
    let min_decryption_version: Int?
    /// The store's own state, where Keyward's differs (a key Keyward revoked that its store has enabled).
    let store_state: String?
    /// The tenants on the key (its own description and the list only).
    let tenants: [String]?
    /// Why the key could not be described (the list only: its store did not answer).
    let error: ErrorBody?

    struct ErrorBody: Encodable {
        let code: String
        let message: String
    }

    init(_ d: KeyDescription, tenants: [String]? = nil) {
        self.tenants = tenants
        key = d.reference
        store = KeyReference(parsing: d.reference)?.scheme ?? ""
        error = nil
        state = d.state.rawValue
        versions = d.versions
        created_at = d.created.map { Int($0.timeIntervalSince1970) }
        deletion_date = d.deletionDate.map { Int($0.timeIntervalSince1970) }
        rotation_enabled = d.rotationEnabled
        min_decryption_version = d.minDecryptionVersion
        store_state = d.storeState?.rawValue
    }

    /// A key whose store did not describe it: state `unavailable`, and why.
    init(unavailable reference: String, tenants: [String], error: GatewayError) {
        key = reference
        store = KeyReference(parsing: reference)?.scheme ?? ""
        state = "unavailable"
        self.tenants = tenants
        self.error = ErrorBody(code: error.code, message: error.message)
        versions = nil
        created_at = nil
        deletion_date = nil
        rotation_enabled = nil
        min_decryption_version = nil
        store_state = nil
    }
}

/// A token as the admin API lists it: never its value (which is not kept) nor its hash.
struct TokenBody: Encodable {
    let id: String
    let role: String
    let tenant: String?
    let suspended: Bool
    /// Seconds since 1970.
    let created_at: Int64
    let rate_limits: RateLimits?

    init(_ t: TokenRecord) {
        id = t.id
        role = t.role.rawValue
        tenant = t.tenant
        suspended = t.suspended
        created_at = t.createdAt / 1000
        rate_limits = t.role == .app ? t.rateLimits : nil
    }
}

/// A configured upstream as the admin API shows it: never its API key, only whether it has one,
/// and its URL without a query (some providers take a key there) or user information.
struct UpstreamBody: Encodable {
    let name: String
    let kind: String
    let api: String
    let url: String
    let models: [String]
    let has_api_key: Bool

    init(_ u: UpstreamConfiguration) {
        name = u.name
        kind = u.kind.rawValue
        api = u.api.rawValue
        url = URLComponents(string: u.url).map { c in
            var shown = URLComponents()
            (shown.scheme, shown.host, shown.port, shown.path) = (c.scheme, c.host, c.port, c.path)
            return shown.string ?? ""
        } ?? ""
        models = u.models
        has_api_key = u.apiKey != nil
    }
}

struct JobStartedBody: Encodable {
    let job: String
    let status = "running"
}

/// A re-key job's progress (times in seconds since 1970).
struct JobBody: Encodable {
    let id: String
    let object = "job"
    let type = "rekey"
    let tenant: String
    let from_key: String
    let to_key: String
    let status: String
    let records_total: Int64
    let records_processed: Int64
    let records_rewrapped: Int64
    let data_keys_unwrapped: Int64
    let created_at: Int64
    let updated_at: Int64
    let rate_per_second: Double
    let error: String?

    init(_ j: Job) {
        id = j.id
        tenant = j.tenant
        from_key = j.fromKey
        to_key = j.toKey
        status = j.status.rawValue
        records_total = j.total
        records_processed = j.processed
        records_rewrapped = j.rewrapped
        data_keys_unwrapped = j.dataKeys
        created_at = j.createdAt / 1000
        updated_at = j.updatedAt / 1000
        rate_per_second = j.activeMs > 0 ? Double(j.processed) * 1000 / Double(j.activeMs) : 0
        error = j.error
    }
}

/// One audit event (time in seconds since 1970, hashes in hex).
struct AuditEventBody: Encodable {
    let seq: Int64
    let time: Double
    let actor: String
    let operation: String
    let result: String
    let prev_hash: String
    let hash: String
    let tenant: String?
    let key: String?
    let purpose: String?
    let request_id: String?
    let record: String?
    let detail: String?

    init(_ e: AuditEvent) {
        seq = e.seq
        time = Double(e.time) / 1000
        actor = e.actor
        operation = e.operation.rawValue
        result = e.result.rawValue
        prev_hash = Hex.encode(e.previousHash)
        hash = Hex.encode(e.hash)
        tenant = e.tenant
        key = e.key
        purpose = e.purpose
        request_id = e.requestID
        record = e.record
        detail = e.detail
    }
}

/// A page of the audit log, with where the chain ends now (so that a reader can start near it).
struct AuditPageBody: Encodable {
    let object = "list"
    let data: [AuditEventBody]
    let last_seq: Int64
    let head_seq: Int64
}
