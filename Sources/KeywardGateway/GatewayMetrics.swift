import Prometheus

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

    private func descriptor(_ name: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "keyward", metricName: name, unitName: unit, helpText: help)
    }

    func request(route: String, method: String, status: Int, duration: Duration) {
        registry.makeCounter(descriptor: descriptor("http_requests", "total", "HTTP requests by route, method and status"),
                             labels: [("route", route), ("method", method), ("status", String(status))]).increment()
        registry.makeDurationHistogram(descriptor: descriptor("http_request_duration", "seconds", "Time to the response head, by route"),
                                       labels: [("route", route)], buckets: Self.latencyBuckets).record(duration)
    }

    func upstream(_ name: String, status: Int, duration: Duration) {
        registry.makeDurationHistogram(descriptor: descriptor("upstream_duration", "seconds", "Upstream response time, by upstream"),
                                       labels: [("upstream", name)], buckets: Self.latencyBuckets).record(duration)
        registry.makeCounter(descriptor: descriptor("upstream_responses", "total", "Upstream responses by upstream and status"),
                             labels: [("upstream", name), ("status", String(status))]).increment()
    }

    /// A call that reached a key store (a data-key cache miss), with its outcome.
    func keyStoreCall(_ operation: String, ok: Bool) {
        registry.makeCounter(descriptor: descriptor("keystore_calls", "total", "Key-store calls by operation and result"),
                             labels: [("operation", operation), ("result", ok ? "ok" : "error")]).increment()
    }

    /// A request for data-key materials; a miss is followed by a key-store call.
    func dataKeyCache(_ direction: String, hit: Bool) {
        registry.makeCounter(descriptor: descriptor("datakey_cache", "total", "Data-key cache lookups by direction and result"),
                             labels: [("direction", direction), ("result", hit ? "hit" : "miss")]).increment()
    }

    /// A stored record decrypted for a reader.
    func unwrap(kind: String) {
        registry.makeCounter(descriptor: descriptor("record_unwraps", "total", "Stored records decrypted, by kind"),
                             labels: [("kind", kind)]).increment()
    }

    func recordsStored(_ count: Int) {
        registry.makeCounter(descriptor: descriptor("records_stored", "total", "Encrypted records written")).increment(by: Int64(count))
    }

    func recordsPurged(_ count: Int) {
        registry.makeCounter(descriptor: descriptor("records_purged", "total", "Expired records deleted")).increment(by: Int64(count))
    }

    /// The exposition text for `/metrics`.
    public func exposition() -> [UInt8] { registry.emitToBuffer() }
}
