import Foundation

/// How many model requests, and model tokens (as upstreams count them), a tenant or an app token
/// may use per minute; nil: no limit of that kind (a tenant's: the configured default's).
public struct RateLimits: Sendable, Hashable, Codable {
    public var requestsPerMinute: Int64?
    public var tokensPerMinute: Int64?

    public init(requestsPerMinute: Int64? = nil, tokensPerMinute: Int64? = nil) {
        self.requestsPerMinute = requestsPerMinute
        self.tokensPerMinute = tokensPerMinute
    }

    /// The largest limit accepted: counts far from overflow.
    public static let maximum: Int64 = 1 << 40

    /// Whether each limit given is from 1 to ``maximum``.
    public var isValid: Bool {
        [requestsPerMinute, tokensPerMinute].allSatisfy { $0.map { (1...Self.maximum).contains($0) } ?? true }
    }

    public var isEmpty: Bool { requestsPerMinute == nil && tokensPerMinute == nil }

    /// `requests_per_minute=… tokens_per_minute=…`, the limits given, for audit details and logs.
    public var summary: String {
        [requestsPerMinute.map { "requests_per_minute=\($0)" }, tokensPerMinute.map { "tokens_per_minute=\($0)" }]
            .compactMap { $0 }.joined(separator: " ")
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case requestsPerMinute = "requests_per_minute"
        case tokensPerMinute = "tokens_per_minute"
    }

    /// Refuses a member it does not know: a misspelt limit would otherwise be no limit.
    public init(from decoder: any Decoder) throws {
        struct AnyKey: CodingKey {
            var stringValue: String
            var intValue: Int? { nil }
            init(stringValue: String) { self.stringValue = stringValue }
            init?(intValue: Int) { nil }
        }
        let known = Set(CodingKeys.allCases.map(\.rawValue))
        if let unknown = try decoder.container(keyedBy: AnyKey.self).allKeys.first(where: { !known.contains($0.stringValue) }) {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath + [unknown],
                                                    debugDescription: "unknown rate limit \(unknown.stringValue): requests_per_minute or tokens_per_minute"))
        }
        let c = try decoder.container(keyedBy: CodingKeys.self)
        requestsPerMinute = try c.decodeIfPresent(Int64.self, forKey: .requestsPerMinute)
        tokensPerMinute = try c.decodeIfPresent(Int64.self, forKey: .tokensPerMinute)
    }
}

/// A tenant: a team or customer whose stored data is encrypted under its own master key.
public struct Tenant: Sendable, Hashable, Codable {
    /// When the gateway keeps a tenant's exchanges.
    public enum StorePolicy: String, Sendable, Hashable, Codable, CaseIterable {
        /// Every exchange is stored.
        case always
        /// Only exchanges whose request says `"store": true` (OpenAI's semantics).
        case onRequest = "on-request"
        /// Nothing is stored.
        case never
    }

    /// Whether the tenant's apps may send plaintext requests.
    public enum EncryptedRequests: String, Sendable, Hashable, Codable, CaseIterable {
        /// Plaintext requests and requests the app encrypted itself (ESDK messages) alike.
        case allowed
        /// Only requests the app encrypted itself.
        case required
    }

    public var name: String
    /// The master key reference (`local:NAME`, `aws-kms:ARN`, `pkcs11:…`).
    public var key: String
    public var store: StorePolicy
    public var retentionDays: Int
    /// Milliseconds since 1970.
    public var createdAt: Int64
    /// The key a re-key job is moving the tenant away from: records not yet re-wrapped are still
    /// under it. nil when no move is under way.
    public var previousKey: String?
    public var encryptedRequests: EncryptedRequests
    /// The tenant's own limits, for all its tokens together; a limit left nil is the configured default's.
    public var rateLimits: RateLimits

    public init(name: String, key: String, store: StorePolicy = .always, retentionDays: Int = 30, createdAt: Int64,
                previousKey: String? = nil, encryptedRequests: EncryptedRequests = .allowed, rateLimits: RateLimits = RateLimits()) {
        self.name = name
        self.rateLimits = rateLimits
        self.encryptedRequests = encryptedRequests
        self.key = key
        self.previousKey = previousKey
        self.store = store
        self.retentionDays = retentionDays
        self.createdAt = createdAt
    }
}

/// A change of some of a tenant's settings: nil leaves a setting as it is, so that two changes of
/// different settings made at once both hold.
public struct TenantSettingsChange: Sendable, Hashable {
    public var store: Tenant.StorePolicy?
    public var retentionDays: Int?
    public var encryptedRequests: Tenant.EncryptedRequests?
    /// Replaces both of the tenant's limits (a limit left nil in it: the configured default's).
    public var rateLimits: RateLimits?

    public init(store: Tenant.StorePolicy? = nil, retentionDays: Int? = nil, encryptedRequests: Tenant.EncryptedRequests? = nil,
                rateLimits: RateLimits? = nil) {
        self.store = store
        self.rateLimits = rateLimits
        self.retentionDays = retentionDays
        self.encryptedRequests = encryptedRequests
    }
}

/// An issued bearer token, kept only as the SHA-256 of its value.
public struct TokenRecord: Sendable, Hashable {
    public enum Role: String, Sendable, Hashable, Codable, CaseIterable {
        /// Tenants, tokens and key policies.
        case admin
        /// Key life cycle: rotate, disable, enable, schedule deletion, re-key.
        case keyAdmin = "key-admin"
        /// Reads the audit log.
        case auditor
        /// Inference and its own tenant's records.
        case app
    }

    /// A public identifier (`tok_…`), safe to log and to name in the admin API.
    public var id: String
    /// nil for admin tokens.
    public var tenant: String?
    public var role: Role
    public var hash: [UInt8]
    public var createdAt: Int64
    /// Set by the anomaly detector (or an admin): the token authenticates nothing until cleared.
    public var suspended: Bool
    /// An app token's own limits, within its tenant's; nil limits: none of its own.
    public var rateLimits: RateLimits

    public init(id: String, tenant: String?, role: Role, hash: [UInt8], createdAt: Int64, suspended: Bool = false,
                rateLimits: RateLimits = RateLimits()) {
        self.id = id
        self.rateLimits = rateLimits
        self.suspended = suspended
        self.tenant = tenant
        self.role = role
        self.hash = hash
        self.createdAt = createdAt
    }
}

/// A background job: today the re-key of a tenant's records (also used after a rotation, with the
/// same key on both sides). Its cursor and counts are saved with every batch, so a job survives a
/// crash and resumes where its last batch committed.
public struct Job: Sendable, Hashable {
    public enum Status: String, Sendable, Hashable { case running, done, failed }

    public var id: String
    public var tenant: String
    public var fromKey: String
    public var toKey: String
    public var status: Status
    /// The last record (id, kind) whose header the job has settled.
    public var cursorID: String?
    public var cursorKind: String?
    /// Records visited, records whose header was rewritten, distinct data keys unwrapped.
    public var processed: Int64
    public var rewrapped: Int64
    public var dataKeys: Int64
    /// Records under neither key, left as they are (the job then ends `failed`).
    public var unmatched: Int64
    /// Records of the tenant when the job started (a progress estimate: traffic adds more).
    public var total: Int64
    public var createdAt: Int64
    public var updatedAt: Int64
    /// Milliseconds spent working (not waiting for a restart), for the rate.
    public var activeMs: Int64
    /// A safe description of why the job failed.
    public var error: String?

    public init(id: String, tenant: String, fromKey: String, toKey: String, total: Int64, createdAt: Int64) {
        self.id = id
        self.tenant = tenant
        self.fromKey = fromKey
        self.toKey = toKey
        self.status = .running
        self.processed = 0
        self.rewrapped = 0
        self.dataKeys = 0
        self.unmatched = 0
        self.total = total
        self.createdAt = createdAt
        self.updatedAt = createdAt
        self.activeMs = 0
    }
}

/// What a claim on a job's next batch came to.
public enum JobClaim: Sendable, Hashable {
    /// The batch ran: the job as saved, and how many headers were replaced.
    case saved(Job, replaced: Int)
    /// The batch had nothing to save (the job is finished or nothing was left).
    case unchanged(Job)
    /// Another worker holds the job now.
    case busy
    /// No such job.
    case missing
}

/// Keyward's own word on a master key, kept beside the records: a key Keyward has revoked, or
/// whose deletion it keeps the schedule of. It holds on every replica whatever the key's store
/// says (a store may have no disable, or enable a key behind Keyward's back); no row means the
/// store alone decides.
public struct KeyStateRecord: Sendable, Hashable {
    public enum State: String, Sendable, Hashable {
        /// Revoked: no data key is wrapped or unwrapped until the key is enabled through Keyward.
        case disabled
        /// Revoked until `deleteAt`, then destroyed.
        case pendingDeletion = "pending-deletion"
        /// Destroyed: its records are shredded.
        case destroyed
    }

    /// The key reference, as tenants name it.
    public var key: String
    public var state: State
    /// Milliseconds since 1970 when a key pending deletion is destroyed.
    public var deleteAt: Int64?
    public var updatedAt: Int64

    public init(key: String, state: State, deleteAt: Int64? = nil, updatedAt: Int64) {
        self.key = key
        self.state = state
        self.deleteAt = deleteAt
        self.updatedAt = updatedAt
    }
}
