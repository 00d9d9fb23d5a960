import ServiceLifecycle

/// While the audit log is failing, retries an append each second, so that the gateway resumes on
/// its own when the store recovers (key operations are refused meanwhile).
struct AuditResumeService: Service, CustomStringConvertible {
    var description: String { "AuditResumeService" }
    let audit: AuditLog

    func run() async throws {
        while !Task.isShuttingDownGracefully {
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(1)) }
            if !audit.isAvailable {
                try? await audit.append(AuditLog.event(.auditResumed, scope: nil))
            }
        }
    }
}
