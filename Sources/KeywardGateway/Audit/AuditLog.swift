import Foundation
import Hummingbird
import KeywardAudit
import KeywardErrors
import KeywardStorage
import Logging
import Synchronization

/// Who is acting, for audit events raised below the routes (in the vault, on a key-store call).
struct AuditScope: Sendable {
    @TaskLocal static var current: AuditScope?
    /// The id of the request being handled (set by the middleware).
    @TaskLocal static var requestID: String?
    var actor: String
    var tenant: String?
    var requestID: String?
    var purpose: Purpose?

    init(actor: String, tenant: String? = nil, requestID: String? = AuditScope.requestID, purpose: Purpose? = nil) {
        self.actor = actor
        self.tenant = tenant
        self.requestID = requestID
        self.purpose = purpose
    }
}

/// The gateway's side of the audit log: builds events, appends them through the store (which
/// chains them), and fails closed: when an append fails, the operation it describes is refused
/// with 503 `audit_unavailable`, and key operations are refused up front until an append works again.
public final class AuditLog: Sendable {
    let store: any RecordStore
    let metrics: GatewayMetrics
    let logger: Logger
    /// Told of every unwrap and retrieval that was logged.
    let alerts: AlertCenter
    private let failing = Atomic<Bool>(false)

    let traces: Traces

    init(store: any RecordStore, metrics: GatewayMetrics, logger: Logger, alerts: AlertCenter, traces: Traces = .off) {
        self.traces = traces
        self.store = store
        self.metrics = metrics
        self.logger = logger
        self.alerts = alerts
    }

    /// Whether the last append worked. Key operations check this before they start.
    public var isAvailable: Bool { !failing.load(ordering: .relaxed) }

    func requireAvailable() throws {
        guard isAvailable else { throw GatewayError.auditUnavailable }
    }

    static func event(_ operation: AuditOperation, key: String? = nil, record: String? = nil, result: AuditResult = .ok,
                      detail: String? = nil, scope: AuditScope? = AuditScope.current) -> AuditEvent {
        AuditEvent(time: Gateway.nowMs(), actor: scope?.actor ?? "system", tenant: scope?.tenant, key: key, operation: operation,
                   purpose: scope?.purpose?.rawValue, requestID: scope?.requestID, record: record, result: result, detail: detail)
    }

    /// Appends events durably, or throws ``GatewayError/auditUnavailable``. `reads`: how many
    /// records a single `decrypt_record` event stands for, as the anomaly detector counts them.
    @discardableResult
    func append(_ events: [AuditEvent], reads: Int = 1) async throws -> [AuditEvent] {
        guard !events.isEmpty else { return [] }
        do {
            let appended = try await store.appendAudit(events)
            succeeded(appended, reads: reads)
            return appended
        } catch {
            failed(error)
            throw GatewayError.auditUnavailable
        }
    }

    func append(_ event: AuditEvent) async throws {
        try await append([event])
    }

    /// Stores records with the events that describe them, all or none.
    func insert(_ records: [Record], events: [AuditEvent]) async throws {
        do {
            let appended = try await traces.span("storage insert") { span in
                span?.attributes["keyward.records"] = records.count
                span?.attributes["keyward.audit_events"] = events.count
                return try await store.insert(records, audit: events)
            }
            succeeded(appended)
        } catch let e as StorageError where e.code == .alreadyExists {
            throw e
        } catch {
            failed(error)
            throw GatewayError.auditUnavailable
        }
    }

    private func succeeded(_ events: [AuditEvent], reads: Int = 1) {
        metrics.auditAppend(ok: true)
        if failing.exchange(false, ordering: .relaxed) { logger.notice("audit log writable again") }
        for e in events where e.operation == .decryptRecord || e.operation == .unwrap {
            alerts.observe(e, count: e.operation == .decryptRecord ? reads : 1)
        }
    }

    private func failed(_ error: any Error) {
        metrics.auditAppend(ok: false)
        if !failing.exchange(true, ordering: .relaxed) {
            logger.critical("audit log append failed: key operations are refused until it works", metadata: ["error": "\(error)"])
        }
    }
}

extension AuditResult {
    /// `error:<code>` for a failed key-store call: the error's code, never its message.
    static func failure(_ error: any Error) -> Self {
        .error((error as? any CodedError).map { "\($0.code)" } ?? "error")
    }
}

extension GatewayError {
    static let auditUnavailable = GatewayError(.serviceUnavailable, type: "server_error", code: "audit_unavailable",
                                               "the audit log cannot be written: key operations are refused until it can")
    static func accessDenied(_ message: String) -> GatewayError {
        GatewayError(.forbidden, type: "permission_error", code: "access_denied", message)
    }
}
