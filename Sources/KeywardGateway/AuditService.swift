import ServiceLifecycle

/// Signs the chain head every `checkpointEvery` events (checked each second), at least once a
/// minute while events arrive, and at shutdown; and while the audit log is failing, retries an
/// append each second so that the gateway resumes on its own when the store recovers.
struct AuditService: Service, CustomStringConvertible {
    var description: String { "AuditService" }
    let gateway: Gateway
    let signer: AuditSigner

    func run() async throws {
        var lastSigned = (try? await gateway.store.checkpoints().last?.seq) ?? 0
        var lastTime = ContinuousClock.now
        while !Task.isShuttingDownGracefully {
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(1)) }
            if !gateway.audit.isAvailable {
                try? await gateway.audit.append(AuditLog.event("audit_resumed", scope: nil))
            }
            guard let head = try? await gateway.store.auditHead(), head.seq > lastSigned else { continue }
            if head.seq - lastSigned >= gateway.configuration.auditCheckpointEvery || ContinuousClock.now - lastTime > .seconds(60) {
                if await sign(head) { lastSigned = head.seq; lastTime = .now }
            }
        }
        if let head = try? await gateway.store.auditHead(), head.seq > lastSigned { _ = await sign(head) }
    }

    private func sign(_ head: (seq: Int64, hash: [UInt8])) async -> Bool {
        do {
            try await gateway.store.insertCheckpoint(try signer.checkpoint(seq: head.seq, hash: head.hash, time: Gateway.nowMs()))
            return true
        } catch {
            gateway.logger.error("audit checkpoint failed", metadata: ["error": "\(error)"])
            return false
        }
    }
}
