import Crypto

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
    public static func verify(_ store: any AuditChainStore, trustedKeys: [[UInt8]]) async throws -> (events: Int64, signedThrough: Int64) {
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
