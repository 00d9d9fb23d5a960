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
    /// `generate_data_key`, `unwrap`, `rewrap`, `encrypt_record`, `decrypt_record`, `rotate`, …
    public var operation: String
    /// `inference`, `retrieval`, `export`, or nil for management operations.
    public var purpose: String?
    public var requestID: String?
    public var record: String?
    /// `ok`, `denied`, or `error:<code>`.
    public var result: String
    /// A short, non-secret detail (a model name, a count, a waiting period).
    public var detail: String?
    /// SHA-256 of the previous event's chain input (32 zero bytes before the first event).
    public var previousHash: [UInt8]
    /// SHA-256 of `previousHash` followed by this event's canonical bytes.
    public var hash: [UInt8]

    public init(time: Int64, actor: String, tenant: String? = nil, key: String? = nil, operation: String,
                purpose: String? = nil, requestID: String? = nil, record: String? = nil, result: String = "ok",
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
        out.reserveCapacity(96 + actor.utf8.count + (tenant?.utf8.count ?? 0) + (key?.utf8.count ?? 0) + operation.utf8.count
                            + (purpose?.utf8.count ?? 0) + (requestID?.utf8.count ?? 0) + (record?.utf8.count ?? 0)
                            + result.utf8.count + (detail?.utf8.count ?? 0))
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
        field(actor); field(tenant); field(key); field(operation); field(purpose)
        field(requestID); field(record); field(result); field(detail)
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
    public var operation: String?
    public var limit: Int

    public init(afterSeq: Int64 = 0, since: Int64? = nil, tenant: String? = nil, key: String? = nil,
                operation: String? = nil, limit: Int = 100) {
        self.afterSeq = afterSeq
        self.since = since
        self.tenant = tenant
        self.key = key
        self.operation = operation
        self.limit = limit
    }
}

/// Re-walks a chain and its checkpoints: finds the first position where the log was edited,
/// deleted from, inserted into, reordered or truncated.
public struct AuditVerifier {
    public struct Failure: Error, Sendable, Hashable, CustomStringConvertible {
        /// The first position (seq) found bad.
        public var position: Int64
        public var reason: String
        public var description: String { "audit log broken at event \(position): \(reason)" }
    }

    /// Public keys trusted to sign checkpoints.
    public let trustedKeys: [[UInt8]]
    private var expected: Int64 = 1
    private var previous = AuditEvent.genesis
    /// seq → hash of events seen, only at checkpointed positions.
    private var heads: [Int64: [UInt8]] = [:]
    private var wanted: Set<Int64>

    /// - Parameter checkpoints: all stored checkpoints; each must match the chain at its position.
    public init(trustedKeys: [[UInt8]], checkpoints: [AuditCheckpoint]) throws(Failure) {
        self.trustedKeys = trustedKeys
        for c in checkpoints {
            guard trustedKeys.contains(c.publicKey),
                  let key = try? Curve25519.Signing.PublicKey(rawRepresentation: c.publicKey),
                  key.isValidSignature(c.signature, for: AuditCheckpoint.signedBytes(seq: c.seq, hash: c.hash, time: c.time)) else {
                throw Failure(position: c.seq, reason: "the checkpoint at this position is not signed by a trusted audit key")
            }
        }
        self.checkpoints = Dictionary(checkpoints.map { ($0.seq, $0.hash) }, uniquingKeysWith: { a, _ in a })
        wanted = Set(self.checkpoints.keys)
    }

    private let checkpoints: [Int64: [UInt8]]

    /// Feeds the next event, in stored order.
    public mutating func next(_ e: AuditEvent) throws(Failure) {
        guard e.seq == expected else {
            if e.seq > expected {
                throw Failure(position: expected, reason: "event \(expected) is missing (deleted), the log continues at \(e.seq)")
            }
            throw Failure(position: e.seq, reason: "event \(e.seq) is out of order or repeated (expected \(expected))")
        }
        guard e.previousHash == previous else {
            throw Failure(position: e.seq, reason: "the event does not follow the previous one (an event was inserted, removed or reordered)")
        }
        let computed = e.chainHash(after: previous)
        guard computed == e.hash else {
            throw Failure(position: e.seq, reason: "the event's contents do not match its hash (it was edited)")
        }
        if let signed = checkpoints[e.seq] {
            guard signed == computed else {
                throw Failure(position: e.seq, reason: "the event differs from the signed checkpoint at this position")
            }
            wanted.remove(e.seq)
        }
        previous = computed
        expected += 1
    }

    /// Ends the walk: every checkpoint must have been reached.
    /// - Returns: the number of events verified.
    public func finish() throws(Failure) -> Int64 {
        if let missing = wanted.min() {
            throw Failure(position: expected, reason: "the log ends before event \(missing), which a signed checkpoint covers (truncated)")
        }
        return expected - 1
    }
}

extension AuditVerifier {
    /// Verifies a store's whole audit log against `trustedKeys`.
    /// - Returns: the number of events and the last position a checkpoint signs.
    /// - Throws: ``Failure`` at the first bad position.
    public static func verify(_ store: any RecordStore, trustedKeys: [[UInt8]]) async throws -> (events: Int64, signedThrough: Int64) {
        let checkpoints = try await store.checkpoints()
        var verifier = try AuditVerifier(trustedKeys: trustedKeys, checkpoints: checkpoints)
        var after: Int64 = 0
        while true {
            let page = try await store.auditEvents(AuditQuery(afterSeq: after, limit: 10_000))
            guard let last = page.last else { break }
            for e in page { try verifier.next(e) }
            after = last.seq
        }
        return (try verifier.finish(), checkpoints.last?.seq ?? 0)
    }
}
