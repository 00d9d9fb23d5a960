import Prometheus
import Synchronization

/// The gateway's Prometheus metrics. Labels carry routes, statuses, upstream names and key-store
/// operations only: never a tenant's data, a token or a key.
public final class GatewayMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    private static let latencyBuckets: [Duration] = [
        .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
        .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
        .seconds(2.5), .seconds(5), .seconds(10), .seconds(30), .seconds(60),
    ]

    public init() {}

    // The registry builds names and label keys on every lookup; each handle is looked up once.
    private let counters = Mutex<[String: Counter]>([:])
    private let histograms = Mutex<[String: DurationHistogram]>([:])

    private func counter(_ name: String, _ unit: String, _ help: String, _ labels: [(String, String)]) -> Counter {
        let key = name + labels.map { "|" + $0.1 }.joined()
        if let c = counters.withLock({ $0[key] }) { return c }
        let c = registry.makeCounter(descriptor: descriptor(name, unit, help), labels: labels)
        counters.withLock { $0[key] = c }
        return c
    }

    private func histogram(_ name: String, _ help: String, _ labels: [(String, String)]) -> DurationHistogram {
        let key = name + labels.map { "|" + $0.1 }.joined()
        if let h = histograms.withLock({ $0[key] }) { return h }
        let h = registry.makeDurationHistogram(descriptor: descriptor(name, "seconds", help), labels: labels, buckets: Self.latencyBuckets)
        histograms.withLock { $0[key] = h }
        return h
    }

    private func descriptor(_ name: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "keyward", metricName: name, unitName: unit, helpText: help)
    }

    func request(route: String, method: String, status: Int, duration: Duration) {
        counter("http_requests", "total", "HTTP requests by route, method and status",
                [("route", route), ("method", method), ("status", String(status))]).increment()
        histogram("http_request_duration", "Time to the response head, by route", [("route", route)]).record(duration)
    }

    func upstream(_ name: String, status: Int, duration: Duration) {
        histogram("upstream_duration", "Upstream response time, by upstream", [("upstream", name)]).record(duration)
        counter("upstream_responses", "total", "Upstream responses by upstream and status",
                [("upstream", name), ("status", String(status))]).increment()
    }

    /// A call that reached a key store (a data-key cache miss), with its outcome.
    func keyStoreCall(_ operation: String, ok: Bool) {
        counter("keystore_calls", "total", "Key-store calls by operation and result",
                [("operation", operation), ("result", ok ? "ok" : "error")]).increment()
    }

    /// A request for data-key materials; a miss is followed by a key-store call.
    func dataKeyCache(_ direction: String, hit: Bool) {
        counter("datakey_cache", "total", "Data-key cache lookups by direction and result",
                [("direction", direction), ("result", hit ? "hit" : "miss")]).increment()
    }

    /// A stored record decrypted for a reader.
    func unwrap(kind: String) {
        counter("record_unwraps", "total", "Stored records decrypted, by kind", [("kind", kind)]).increment()
    }

    func recordsStored(_ count: Int) {
        counter("records_stored", "total", "Encrypted records written", []).increment(by: Int64(count))
    }

    func recordsPurged(_ count: Int) {
        counter("records_purged", "total", "Expired records deleted", []).increment(by: Int64(count))
    }

    func auditAppend(ok: Bool) {
        counter("audit_appends", "total", "Audit append transactions by result", [("result", ok ? "ok" : "error")]).increment()
    }

    func alert(_ reason: String) {
        counter("alerts", "total", "Anomalous unwrap activity alerts raised", [("reason", reason)]).increment()
    }

    func keyEvent(_ operation: String) {
        counter("key_events", "total", "Key life-cycle operations through the admin API", [("operation", operation)]).increment()
    }

    func accessDenied(_ purpose: String) {
        counter("access_denied", "total", "Requests refused by a key policy or a role, by purpose", [("purpose", purpose)]).increment()
    }

    func headersRewrapped(_ count: Int) {
        counter("headers_rewrapped", "total", "Record headers re-wrapped by re-key jobs", []).increment(by: Int64(count))
    }

    /// The change feed started listening (after which every cache was dropped) or lost its connection.
    func changeFeed(listening: Bool) {
        counter("change_feed_events", "total", "Change-notification connection events: listening (caches dropped) or lost",
                [("event", listening ? "listening" : "lost")]).increment()
    }

    /// The exposition text for `/metrics`.
    public func exposition() -> [UInt8] { registry.emitToBuffer() }
}
