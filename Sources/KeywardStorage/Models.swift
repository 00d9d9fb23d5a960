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

    public var name: String
    /// The master key reference (`local:NAME`, `aws-kms:ARN`, `pkcs11:…`).
    public var key: String
    public var store: StorePolicy
    public var retentionDays: Int
    /// Milliseconds since 1970.
    public var createdAt: Int64

    public init(name: String, key: String, store: StorePolicy = .always, retentionDays: Int = 30, createdAt: Int64) {
        self.name = name
        self.key = key
        self.store = store
        self.retentionDays = retentionDays
        self.createdAt = createdAt
    }
}

/// An issued bearer token, kept only as the SHA-256 of its value.
public struct TokenRecord: Sendable, Hashable {
    public enum Role: String, Sendable, Hashable, Codable, CaseIterable {
        case admin
        case app
    }

    /// A public identifier (`tok_…`), safe to log and to name in the admin API.
    public var id: String
    /// nil for admin tokens.
    public var tenant: String?
    public var role: Role
    public var hash: [UInt8]
    public var createdAt: Int64

    public init(id: String, tenant: String?, role: Role, hash: [UInt8], createdAt: Int64) {
        self.id = id
        self.tenant = tenant
        self.role = role
        self.hash = hash
        self.createdAt = createdAt
    }
}

/// One encrypted record: an ESDK message split into its header and body, with the only metadata
/// kept in the clear.
public struct Record: Sendable, Hashable {
    public var tenant: String
    /// Shared by the records of one exchange (its request and its response).
    public var id: String
    /// What the record holds, e.g. `chat.request`, `chat.response`; part of the encryption context.
    public var kind: String
    public var createdAt: Int64
    /// When the purge service may delete it; nil keeps it.
    public var expiresAt: Int64?
    public var metadata: RecordMetadata
    /// The message header: the encrypted data keys and the encryption context.
    public var header: [UInt8]
    /// The message body: frames, and the footer if signed.
    public var body: [UInt8]

    public init(tenant: String, id: String, kind: String, createdAt: Int64, expiresAt: Int64?,
                metadata: RecordMetadata, header: [UInt8], body: [UInt8]) {
        self.tenant = tenant
        self.id = id
        self.kind = kind
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.metadata = metadata
        self.header = header
        self.body = body
    }
}

/// The non-sensitive facts about a record, stored in the clear so records can be listed, counted
/// and purged without a key.
public struct RecordMetadata: Sendable, Hashable, Codable {
    public var model: String?
    public var status: Int?
    public var promptTokens: Int?
    public var completionTokens: Int?
    /// Time the upstream took, in milliseconds.
    public var upstreamMs: Double?
    /// Plaintext size in bytes.
    public var size: Int?
    public var streamed: Bool?

    public init(model: String? = nil, status: Int? = nil, promptTokens: Int? = nil, completionTokens: Int? = nil,
                upstreamMs: Double? = nil, size: Int? = nil, streamed: Bool? = nil) {
        self.model = model
        self.status = status
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.upstreamMs = upstreamMs
        self.size = size
        self.streamed = streamed
    }
}

/// Which page of records to list.
public struct RecordQuery: Sendable, Hashable {
    public enum Order: String, Sendable { case ascending = "asc", descending = "desc" }
    public var tenant: String
    public var kind: String
    /// Only records created after (in `order`) the record with this id.
    public var after: String?
    public var limit: Int
    public var order: Order
    public var model: String?

    public init(tenant: String, kind: String, after: String? = nil, limit: Int = 20, order: Order = .ascending, model: String? = nil) {
        self.tenant = tenant
        self.kind = kind
        self.after = after
        self.limit = limit
        self.order = order
        self.model = model
    }
}
