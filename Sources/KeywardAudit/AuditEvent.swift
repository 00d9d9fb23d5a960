import Crypto

/// One entry of the audit log: who did what to which key, for which tenant and record, and how
/// it ended. Never plaintext, key material or a token: the actor is a token's public id.
public struct AuditEvent: Sendable, Hashable {
    /// Position in the chain, from 1; assigned by the store when the event is appended.
    public var seq: Int64
    /// Milliseconds since 1970.
    public var time: Int64
    /// A token id (`tok_…`), `system` (the gateway itself: jobs, expiry) or `cli` (a local command).
    public var actor: String
    public var tenant: String?
    public var key: String?
    public var operation: AuditOperation
    /// `inference`, `retrieval`, `export`, or nil for management operations.
    public var purpose: String?
    public var requestID: String?
    public var record: String?
    public var result: AuditResult
    /// A short, non-secret detail (a model name, a count, a waiting period).
    public var detail: String?
    /// SHA-256 of the previous event's chain input (32 zero bytes before the first event).
    public var previousHash: [UInt8]
    /// SHA-256 of `previousHash` followed by this event's canonical bytes.
    public var hash: [UInt8]

    public init(time: Int64, actor: String, tenant: String? = nil, key: String? = nil, operation: AuditOperation,
                purpose: String? = nil, requestID: String? = nil, record: String? = nil, result: AuditResult = .ok,
                detail: String? = nil) {
        self.seq = 0
        self.time = time
        self.actor = actor
        self.tenant = tenant
        self.key = key
        self.operation = operation
        self.purpose = purpose
        self.requestID = requestID
        self.record = record
        self.result = result
        self.detail = detail
        self.previousHash = []
        self.hash = []
    }

    /// The bytes the chain hashes: a version tag, the position and time, then every field
    /// length-prefixed (absent fields as a distinct marker), so no two events share an encoding.
    public var canonicalBytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(96 + actor.utf8.count + (tenant?.utf8.count ?? 0) + (key?.utf8.count ?? 0) + operation.rawValue.utf8.count
                            + (purpose?.utf8.count ?? 0) + (requestID?.utf8.count ?? 0) + (record?.utf8.count ?? 0)
                            + result.rawValue.utf8.count + (detail?.utf8.count ?? 0))
        out.append(contentsOf: "KWA1".utf8)
        func u64(_ v: UInt64) { for s in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: v >> UInt64(s))) } }
        func field(_ s: String?) {
            guard let s else { out.append(0xFF); return }
            out.append(0)
            u64(UInt64(s.utf8.count))
            out.append(contentsOf: s.utf8)
        }
        u64(UInt64(bitPattern: seq))
        u64(UInt64(bitPattern: time))
        field(actor); field(tenant); field(key); field(operation.rawValue); field(purpose)
        field(requestID); field(record); field(result.rawValue); field(detail)
        return out
    }

    /// The chain hash of this event after `previous`.
    public func chainHash(after previous: [UInt8]) -> [UInt8] {
        var h = SHA256()
        h.update(data: previous)
        h.update(data: canonicalBytes)
        return h.finalize().withUnsafeBytes { Array($0) }  // not byte by byte through the digest's iterator
    }

    /// The hash that precedes the first event.
    public static let genesis = [UInt8](repeating: 0, count: 32)
}

/// The head of the chain at some position, signed with the gateway's Ed25519 audit key.
public struct AuditCheckpoint: Sendable, Hashable {
    public var seq: Int64
    public var hash: [UInt8]
    public var time: Int64
    /// The Ed25519 public key (raw, 32 bytes) that signed it.
    public var publicKey: [UInt8]
    public var signature: [UInt8]

    public init(seq: Int64, hash: [UInt8], time: Int64, publicKey: [UInt8], signature: [UInt8]) {
        self.seq = seq
        self.hash = hash
        self.time = time
        self.publicKey = publicKey
        self.signature = signature
    }

    /// What the signature covers.
    public static func signedBytes(seq: Int64, hash: [UInt8], time: Int64) -> [UInt8] {
        var out = Array("KWC1".utf8)
        for v in [UInt64(bitPattern: seq), UInt64(bitPattern: time)] {
            for s in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: v >> UInt64(s))) }
        }
        return out + hash
    }
}

/// Which audit events to read.
public struct AuditQuery: Sendable, Hashable {
    /// Only events after this position.
    public var afterSeq: Int64
    /// Only events at or after this time (ms).
    public var since: Int64?
    public var tenant: String?
    public var key: String?
    public var operation: AuditOperation?
    public var limit: Int

    public init(afterSeq: Int64 = 0, since: Int64? = nil, tenant: String? = nil, key: String? = nil,
                operation: AuditOperation? = nil, limit: Int = 100) {
        self.afterSeq = afterSeq
        self.since = since
        self.tenant = tenant
        self.key = key
        self.operation = operation
        self.limit = limit
    }
}

