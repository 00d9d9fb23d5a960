import Logging
import ServiceLifecycle

/// Signs the chain head every `every` events (looked at each second), at least once a minute
/// while events arrive, and once more at shutdown, so that `keyward audit verify` can tell a
/// truncated log from a short one.
public struct AuditCheckpointService: Service, CustomStringConvertible {
    public var description: String { "AuditCheckpointService" }
    let store: any AuditChainStore
    let signer: AuditSigner
    let every: Int64
    let logger: Logger
    /// Milliseconds since 1970, for the checkpoints' time.
    let now: @Sendable () -> Int64

    public init(store: any AuditChainStore, signer: AuditSigner, every: Int64, logger: Logger, now: @escaping @Sendable () -> Int64) {
        self.store = store
        self.signer = signer
        self.every = every
        self.logger = logger
        self.now = now
    }

    public func run() async throws {
        var lastSigned = (try? await store.checkpoints().last?.seq) ?? 0
        var lastTime = ContinuousClock.now
        while !Task.isShuttingDownGracefully {
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(1)) }
            guard let head = try? await store.auditHead(), head.seq > lastSigned else { continue }
            if head.seq - lastSigned >= every || ContinuousClock.now - lastTime > .seconds(60) {
                if await sign(head) { lastSigned = head.seq; lastTime = .now }
            }
        }
        if let head = try? await store.auditHead(), head.seq > lastSigned { _ = await sign(head) }
    }

    private func sign(_ head: AuditHead) async -> Bool {
        do {
            try await store.insertCheckpoint(try signer.checkpoint(seq: head.seq, hash: head.hash, time: now()))
            return true
        } catch {
            logger.error("audit checkpoint failed", metadata: ["error": "\(error)"])
            return false
        }
    }
}
