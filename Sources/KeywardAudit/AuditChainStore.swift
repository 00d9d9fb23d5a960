/// The position and hash of the chain's last event: where the next event is linked.
public struct AuditHead: Sendable, Hashable {
    /// 0 before the first event.
    public var seq: Int64
    public var hash: [UInt8]

    public init(seq: Int64, hash: [UInt8]) {
        self.seq = seq
        self.hash = hash
    }

    /// The head of an empty chain.
    public static let genesis = AuditHead(seq: 0, hash: AuditEvent.genesis)

    /// Links `events` after this head, in order: each gets the next position, the previous hash
    /// and its own hash. The head moves to the last of them. Every store appends through this, so
    /// that the chain is computed one way whatever holds it.
    public mutating func link(_ events: [AuditEvent]) -> [AuditEvent] {
        var linked = events
        for i in linked.indices {
            linked[i].seq = seq + 1
            linked[i].previousHash = hash
            linked[i].hash = linked[i].chainHash(after: hash)
            seq = linked[i].seq
            hash = linked[i].hash
        }
        return linked
    }
}

/// Where the audit chain and its signed checkpoints are kept. Appends are serialised by the
/// store (one chain across every writer and replica) and atomic per call.
public protocol AuditChainStore: Sendable {
    /// Appends events at the head of the chain, in order and atomically.
    /// - Returns: the events with their positions and hashes.
    @discardableResult
    func appendAudit(_ events: [AuditEvent]) async throws -> [AuditEvent]
    /// Events in chain order.
    func auditEvents(_ query: AuditQuery) async throws -> [AuditEvent]
    /// The last event's position and hash (``AuditHead/genesis`` when empty).
    func auditHead() async throws -> AuditHead
    func insertCheckpoint(_ checkpoint: AuditCheckpoint) async throws
    func checkpoints() async throws -> [AuditCheckpoint]
}
