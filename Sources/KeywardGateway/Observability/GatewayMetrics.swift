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

    public init() {
        recordsStoredCounter = registry.makeCounter(descriptor: Self.descriptor("records_stored", "total", "Encrypted records written"), labels: [])
        let registry = self.registry
        auditAppendCounters = [true, false].map { ok in
            registry.makeCounter(descriptor: Self.descriptor("audit_appends", "total", "Audit append transactions by result"),
                                 labels: [("result", ok ? "ok" : "error")])
        }
    }

    // The registry builds names and label keys on every lookup; each handle is looked up once.
    private let counters = Mutex<[String: Counter]>([:])
    private let histograms = Mutex<[String: DurationHistogram]>([:])

    private func counter(_ name: String, _ unit: String, _ help: String, _ labels: [(String, String)]) -> Counter {
        let key = name + labels.map { "|" + $0.1 }.joined()
        if let c = counters.withLock({ $0[key] }) { return c }
        let c = registry.makeCounter(descriptor: Self.descriptor(name, unit, help), labels: labels)
        counters.withLock { $0[key] = c }
        return c
    }

    private func histogram(_ name: String, _ help: String, _ labels: [(String, String)]) -> DurationHistogram {
        let key = name + labels.map { "|" + $0.1 }.joined()
        if let h = histograms.withLock({ $0[key] }) { return h }
        let h = registry.makeDurationHistogram(descriptor: Self.descriptor(name, "seconds", help), labels: labels, buckets: Self.latencyBuckets)
        histograms.withLock { $0[key] = h }
        return h
    }

    private static func descriptor(_ name: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "keyward", metricName: name, unitName: unit, helpText: help)
    }

    /// The handles of the two per-request families, by their labels: found without building a
    /// key string on every request.
    private struct Labels: Hashable {
        let a: String, b: String, status: Int
    }
    private let requestHandles = Mutex<[Labels: (Counter, DurationHistogram)]>([:])
    private let upstreamHandles = Mutex<[Labels: (Counter, DurationHistogram)]>([:])

    func request(route: String, method: String, status: Int, duration: Duration) {
        let key = Labels(a: route, b: method, status: status)
        let handles = requestHandles.withLock { $0[key] } ?? {
            let h = (counter("http_requests", "total", "HTTP requests by route, method and status",
                             [("route", route), ("method", method), ("status", String(status))]),
                     histogram("http_request_duration", "Time to the response head, by route", [("route", route)]))
            requestHandles.withLock { $0[key] = h }
            return h
        }()
        handles.0.increment()
        handles.1.record(duration)
    }

    func upstream(_ name: String, status: Int, duration: Duration) {
        let key = Labels(a: name, b: "", status: status)
        let handles = upstreamHandles.withLock { $0[key] } ?? {
            let h = (counter("upstream_responses", "total", "Upstream responses by upstream and status",
                             [("upstream", name), ("status", String(status))]),
                     histogram("upstream_duration", "Upstream response time, by upstream", [("upstream", name)]))
            upstreamHandles.withLock { $0[key] = h }
            return h
        }()
        handles.1.record(duration)
        handles.0.increment()
    }

    /// A call that reached a key store (a data-key cache miss), with its outcome.
    func keyStoreCall(_ operation: String, ok: Bool) {
        counter("keystore_calls", "total", "Key-store calls by operation and result",
                [("operation", operation), ("result", ok ? "ok" : "error")]).increment()
    }

    /// A request for data-key materials; a miss is followed by a key-store call.
    func dataKeyCache(_ direction: String, hit: Bool) {
        let key = Labels(a: direction, b: "", status: hit ? 1 : 0)
        let c = dataKeyHandles.withLock { $0[key] } ?? {
            let c = counter("datakey_cache", "total", "Data-key cache lookups by direction and result",
                            [("direction", direction), ("result", hit ? "hit" : "miss")])
            dataKeyHandles.withLock { $0[key] = c }
            return c
        }()
        c.increment()
    }
    private let dataKeyHandles = Mutex<[Labels: Counter]>([:])

    /// A stored record decrypted for a reader.
    func unwrap(kind: String) {
        counter("record_unwraps", "total", "Stored records decrypted, by kind", [("kind", kind)]).increment()
    }

    func recordsStored(_ count: Int) { recordsStoredCounter.increment(by: Int64(count)) }
    private let recordsStoredCounter: Counter

    func recordsPurged(_ count: Int) {
        counter("records_purged", "total", "Expired records deleted", []).increment(by: Int64(count))
    }

    func auditAppend(ok: Bool) { auditAppendCounters[ok ? 0 : 1].increment() }
    private let auditAppendCounters: [Counter]

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
