import Foundation
import KeywardAudit
import KeywardHTTP
import KeywardStorage
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// Alerting on anomalous unwrap activity: feeds logged unwraps and retrievals to the
/// ``AnomalyDetector``; on a breach appends an `alert` audit event, counts it, queues a webhook
/// delivery (never awaited by a request) and, if configured, suspends the principal's token.
public final class AlertCenter: Sendable {
    public struct Configuration: Sendable {
        public var detector: AnomalyDetector.Configuration
        /// Where alerts are POSTed as JSON; nil: audit event and metric only.
        public var webhook: String?
        /// Suspend the token whose activity raised the alert.
        public var suspendToken: Bool

        public init(detector: AnomalyDetector.Configuration = .init(), webhook: String? = nil, suspendToken: Bool = false) {
            self.detector = detector
            self.webhook = webhook
            self.suspendToken = suspendToken
        }
    }

    let configuration: Configuration
    private let detector: Mutex<AnomalyDetector>
    private let deliveries: AsyncStream<[UInt8]>
    private let queue: AsyncStream<[UInt8]>.Continuation
    private let handler = Mutex<(@Sendable (AnomalyDetector.Alert, AuditEvent) async -> Void)?>(nil)
    /// Alerts raised and not yet handled: the alert service handles them, never the request that raised them.
    private let raised: AsyncStream<(AnomalyDetector.Alert, AuditEvent)>
    private let raise: AsyncStream<(AnomalyDetector.Alert, AuditEvent)>.Continuation

    init(configuration: Configuration) {
        self.configuration = configuration
        detector = Mutex(AnomalyDetector(configuration: configuration.detector))
        (deliveries, queue) = AsyncStream.makeStream(of: [UInt8].self, bufferingPolicy: .bufferingNewest(1000))
        (raised, raise) = AsyncStream.makeStream(of: (AnomalyDetector.Alert, AuditEvent).self, bufferingPolicy: .bufferingNewest(1000))
    }

    /// Sets what happens on an alert (the gateway appends the event and may suspend).
    func onAlert(_ handler: @escaping @Sendable (AnomalyDetector.Alert, AuditEvent) async -> Void) {
        self.handler.withLock { $0 = handler }
    }

    /// Counts a logged use: `count` records for an event that stands for several (a turn's context).
    func observe(_ event: AuditEvent, count: Int = 1) {
        let now = Gateway.clock()
        guard let alert = detector.withLock({ $0.observe(principal: event.actor, key: event.key ?? "-", at: now, count: count) }) else { return }
        raise.yield((alert, event))
    }

    /// Handles raised alerts (audit event, metric, webhook, suspension) until ``finish()``.
    func runHandling() async {
        for await (alert, event) in raised {
            guard let handler = handler.withLock({ $0 }) else { continue }
            await handler(alert, event)
        }
    }

    func deliver(_ alert: AnomalyDetector.Alert, tenant: String?) {
        var object: [String: Any] = [
            "type": "keyward.alert", "reason": alert.reason, "subjects": alert.subjects, "principal": alert.principal,
            "key": alert.key, "count": alert.count, "window_seconds": configuration.detector.window,
            "baseline": alert.baseline, "time": Gateway.nowMs() / 1000,
        ]
        if let tenant { object["tenant"] = tenant }
        post(object)
    }

    /// A revocation, restoration, rotation or deletion schedule: operators hear of it as it happens.
    func keyChanged(_ key: String, operation: String, actor: String, tenants: [String]) {
        post(["type": "keyward.key_event", "operation": operation, "key": key, "actor": actor, "tenants": tenants,
              "time": Gateway.nowMs() / 1000])
    }

    private func post(_ object: [String: Any]) {
        guard configuration.webhook != nil,
              let body = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return }
        queue.yield(Array(body))
    }

    /// Posts queued alerts to the webhook, retrying with back-off; drops an alert after 5 tries.
    func runDeliveries(logger: Logger) async {
        guard let url = configuration.webhook, let endpoint = try? HTTPEndpoint(url: url) else { return }
        let http = PooledHTTPClient()
        for await body in deliveries {
            var delay = Duration.milliseconds(500)
            for attempt in 1...5 {
                if let response = try? await http.execute(.POST, endpoint, target: "", headers: [("content-type", "application/json")],
                                                          body: ByteBuffer(bytes: body), deadline: .now() + .seconds(5), readTimeout: .seconds(5)),
                   (200..<300).contains(response.status.code) {
                    _ = try? await response.body.collect(upTo: 1 << 16)
                    break
                }
                if attempt == 5 { logger.error("alert webhook delivery failed after 5 attempts") }
                try? await Task.sleep(for: delay)
                delay *= 2
            }
        }
        await http.shutdown()
    }

    /// Ends handling and delivery once what is queued is done.
    func finish() {
        raise.finish()
        queue.finish()
    }
}


/// Handles raised alerts and delivers them to the webhook until shutdown.
struct AlertService: Service, CustomStringConvertible {
    var description: String { "AlertService" }
    let alerts: AlertCenter
    let logger: Logger

    func run() async throws {
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                group.addTask { await alerts.runHandling() }
                // Without a webhook, deliveries end at once; handling goes on.
                group.addTask { await alerts.runDeliveries(logger: logger) }
            }
        } onGracefulShutdown: {
            alerts.finish()
        }
    }
}
