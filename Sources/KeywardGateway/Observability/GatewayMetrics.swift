import Foundation
import Metrics
import struct Prometheus.PrometheusMetricsFactory
import class Prometheus.PrometheusCollectorRegistry
import Synchronization

/// The gateway's metrics, through swift-metrics, with swift-prometheus as the factory of each
/// gateway's own registry (several gateways in one test process keep their counts apart). Labels
/// carry route templates (Hummingbird's `endpointPath`), statuses, upstream names and key-store
/// operations only: never a tenant's data, a token or a key.
public final class GatewayMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    let factory: PrometheusMetricsFactory

    public init(now: @escaping @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970) }) {
        self.now = now
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [
            .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
            .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
            .seconds(2.5), .seconds(5), .seconds(10), .seconds(30), .seconds(60),
        ]
        self.factory = factory
        recordsStoredCounter = Metrics.Counter(label: "keyward_records_stored_total", dimensions: [], factory: factory)
        var rateLimited: [String: Metrics.Counter] = [:]
        for scope in ["tenant", "token"] {
            for limit in ["requests", "tokens"] {
                rateLimited[scope + "/" + limit] = Metrics.Counter(label: "keyward_rate_limited_total",
                                                                   dimensions: [("scope", scope), ("limit", limit)], factory: factory)
            }
        }
        rateLimitedCounters = rateLimited
        auditAppendCounters = ["ok", "error"].map {
            Metrics.Counter(label: "keyward_audit_appends_total", dimensions: [("result", $0)], factory: factory)
        }
    }

    /// A connection closed at once: its address held as many as the listener allows.
    func connectionRefused() { connectionsRefused.increment() }
    private var connectionsRefused: Metrics.Counter { counter("connections_refused", []) }

    private func counter(_ name: String, _ labels: [(String, String)]) -> Metrics.Counter {
        Metrics.Counter(label: "keyward_\(name)_total", dimensions: labels, factory: factory)
    }

    private func timer(_ name: String, _ labels: [(String, String)]) -> Metrics.Timer {
        Metrics.Timer(label: "keyward_\(name)_seconds", dimensions: labels, factory: factory)
    }

    /// The per-request families' handles, by their labels: the factory builds names and label
    /// keys at each lookup, which a request should not pay for.
    private struct Labels: Hashable {
        let a: String, b: String, status: Int
    }
    private let requestHandles = Mutex<[Labels: (Metrics.Counter, Metrics.Timer)]>([:])
    private let upstreamHandles = Mutex<[Labels: (Metrics.Counter, Metrics.Timer)]>([:])
    private let dataKeyHandles = Mutex<[Labels: Metrics.Counter]>([:])

    /// The last hour per minute, for the console (``Dashboard``).
    private let dashboard = Mutex(Dashboard())
    /// Seconds since 1970 (tests set another clock).
    let now: @Sendable () -> Int64

    private func note(_ event: Dashboard.Event) {
        let second = now()
        dashboard.withLock { $0.record(event, atSecond: second) }
    }

    /// The dashboard's last hour, ending now.
    var lastHour: DashboardBody {
        let second = now()
        return DashboardBody(dashboard.withLock { $0.lastHour(atSecond: second) })
    }

    /// A request answered. `route` is the matched route's template; nil for a path no route matches.
    /// `refusal`: the error code of a refused request.
    func request(route: String?, method: String, status: Int, duration: Duration, refusal: String? = nil) {
        note(.request(refusal: refusal))
        let route = route ?? "other"
        let key = Labels(a: route, b: method, status: status)
        let handles = requestHandles.withLock { $0[key] } ?? {
            let h = (counter("http_requests", [("route", route), ("method", method), ("status", String(status))]),
                     timer("http_request_duration", [("route", route)]))
            requestHandles.withLock { $0[key] = h }
            return h
        }()
        handles.0.increment()
        handles.1.record(duration: duration)
    }

    func upstream(_ name: String, status: Int, duration: Duration) {
        let key = Labels(a: name, b: "", status: status)
        let handles = upstreamHandles.withLock { $0[key] } ?? {
            let h = (counter("upstream_responses", [("upstream", name), ("status", String(status))]),
                     timer("upstream_duration", [("upstream", name)]))
            upstreamHandles.withLock { $0[key] = h }
            return h
        }()
        handles.1.record(duration: duration)
        handles.0.increment()
    }

    /// A call that reached a key store (a data-key cache miss), with its outcome and how long it took.
    func keyStoreCall(_ operation: String, ok: Bool, duration: Duration) {
        counter("keystore_calls", [("operation", operation), ("result", ok ? "ok" : "error")]).increment()
        timer("keystore_call_duration", [("operation", operation)]).record(duration: duration)
        let (seconds, attoseconds) = duration.components
        note(.keyStoreCall(microseconds: seconds * 1_000_000 + attoseconds / 1_000_000_000_000))
    }

    /// A request for data-key materials; a miss is followed by a key-store call.
    func dataKeyCache(_ direction: String, hit: Bool) {
        dataKeyCache(direction, hits: hit ? 1 : 0, misses: hit ? 0 : 1)
    }

    /// Data-key cache lookups of many records at once.
    func dataKeyCache(_ direction: String, hits: Int, misses: Int) {
        note(.cache(hits: hits, misses: misses))
        for (hit, n) in [(true, hits), (false, misses)] where n > 0 {
            let key = Labels(a: direction, b: "", status: hit ? 1 : 0)
            let c = dataKeyHandles.withLock { $0[key] } ?? {
                let c = counter("datakey_cache", [("direction", direction), ("result", hit ? "hit" : "miss")])
                dataKeyHandles.withLock { $0[key] = c }
                return c
            }()
            c.increment(by: n)
        }
    }

    /// Stored records decrypted for a reader.
    func unwrap(kind: String, count: Int = 1) {
        counter("record_unwraps", [("kind", kind)]).increment(by: count)
        note(.unwraps(count))
    }

    func recordsStored(_ count: Int) { recordsStoredCounter.increment(by: count) }
    private let recordsStoredCounter: Metrics.Counter

    func recordsPurged(_ count: Int) {
        counter("records_purged", []).increment(by: count)
    }

    func auditAppend(ok: Bool) { auditAppendCounters[ok ? 0 : 1].increment() }
    private let auditAppendCounters: [Metrics.Counter]

    func alert(_ reason: String) {
        counter("alerts", [("reason", reason)]).increment()
        note(.alert)
    }

    func keyEvent(_ operation: String) {
        counter("key_events", [("operation", operation)]).increment()
    }

    /// A request refused by a key policy or a role, by purpose.
    func accessDenied(_ purpose: String) {
        counter("access_denied", [("purpose", purpose)]).increment()
    }

    /// A request refused by a rate limit: `scope` tenant or token, `limit` requests or tokens.
    func rateLimited(scope: String, limit: String) {
        rateLimitedCounters[scope + "/" + limit]?.increment()
    }
    /// Built once: refusals come fastest when a client floods.
    private let rateLimitedCounters: [String: Metrics.Counter]

    func headersRewrapped(_ count: Int) {
        counter("headers_rewrapped", []).increment(by: count)
    }

    /// The change feed started listening (after which every cache was dropped) or lost its connection.
    func changeFeed(listening: Bool) {
        counter("change_feed_events", [("event", listening ? "listening" : "lost")]).increment()
    }

    /// Read each time `/metrics` is: the storage engine's memory in this process, if it has any there.
    var storageMemory: (@Sendable () -> Int64)? {
        get { storageMemorySampler.withLock { $0 } }
        set { storageMemorySampler.withLock { $0 = newValue } }
    }
    private let storageMemorySampler = Mutex<(@Sendable () -> Int64)?>(nil)

    /// The exposition text for `/metrics`.
    public func exposition() -> [UInt8] {
        if let read = storageMemory {
            Metrics.Gauge(label: "keyward_storage_memory_bytes", dimensions: [], factory: factory).record(read())
        }
        return registry.emitToBuffer()
    }
}
