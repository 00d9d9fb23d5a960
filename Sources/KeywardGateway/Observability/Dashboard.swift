/// The last hour of the gateway's own counters, a bucket per minute, for the console's dashboard:
/// requests, refusals by code, record unwraps, data-key cache lookups, key-store calls and their
/// latency, alerts. A pure state machine: the caller gives the time, so tests give any.
///
/// Prometheus (`/metrics`) keeps the totals since start; this keeps what a person looking at the
/// console asks ("what happened in the last hour"), without a time-series database.
struct Dashboard: Sendable {
    /// One minute's counts.
    struct Bucket: Sendable, Equatable {
        var requests = 0
        var refusals = 0
        var unwraps = 0
        var cacheHits = 0
        var cacheMisses = 0
        var keyStoreCalls = 0
        var keyStoreMicroseconds: Int64 = 0
        var alerts = 0
        var refusalsByCode: [String: Int] = [:]
    }

    enum Event: Sendable {
        /// A request answered; `refusal` is the error code of a refused one.
        case request(refusal: String?)
        case unwraps(Int)
        case cache(hits: Int, misses: Int)
        case keyStoreCall(microseconds: Int64)
        case alert
    }

    static let minutes = 60
    /// The most distinct refusal codes kept per minute: codes come from a fixed set in the code,
    /// but a bound keeps memory fixed whatever happens.
    static let codesPerMinute = 64

    /// `minute[i]` is the minute (since 1970) whose counts `buckets[i]` holds.
    private var minute = [Int64](repeating: -1, count: minutes)
    private var buckets = [Bucket](repeating: Bucket(), count: minutes)

    mutating func record(_ event: Event, atSecond second: Int64) {
        let m = second / 60
        let i = Int(m % Int64(Self.minutes))
        if minute[i] != m {
            minute[i] = m
            buckets[i] = Bucket()
        }
        switch event {
        case .request(let refusal):
            buckets[i].requests += 1
            if let refusal {
                buckets[i].refusals += 1
                if buckets[i].refusalsByCode[refusal] != nil || buckets[i].refusalsByCode.count < Self.codesPerMinute {
                    buckets[i].refusalsByCode[refusal, default: 0] += 1
                }
            }
        case .unwraps(let n): buckets[i].unwraps += n
        case .cache(let hits, let misses):
            buckets[i].cacheHits += hits
            buckets[i].cacheMisses += misses
        case .keyStoreCall(let us):
            buckets[i].keyStoreCalls += 1
            buckets[i].keyStoreMicroseconds += us
        case .alert: buckets[i].alerts += 1
        }
    }

    /// The hour ending with the minute of `second`, oldest minute first; minutes with nothing
    /// recorded (or recorded over an hour ago) are empty.
    func lastHour(atSecond second: Int64) -> (start: Int64, buckets: [Bucket]) {
        let now = second / 60
        let first = now - Int64(Self.minutes) + 1
        let out = (first...now).map { m -> Bucket in
            let i = Int(m % Int64(Self.minutes))
            return minute[i] == m ? buckets[i] : Bucket()
        }
        return (first * 60, out)
    }
}

/// `GET /admin/v1/dashboard`'s answer: each series a number per minute, oldest first.
struct DashboardBody: Encodable {
    let minutes: Int
    /// The first minute's start, in seconds since 1970.
    let start: Int64
    let requests: [Int]
    let refusals: [Int]
    let unwraps: [Int]
    let cache_hits: [Int]
    let cache_misses: [Int]
    let keystore_calls: [Int]
    /// The mean key-store call latency of each minute, nil in a minute without a call.
    let keystore_ms: [Double?]
    let alerts: [Int]
    let refusals_by_code: [String: Int]

    init(_ hour: (start: Int64, buckets: [Dashboard.Bucket])) {
        let b = hour.buckets
        minutes = b.count
        start = hour.start
        requests = b.map(\.requests)
        refusals = b.map(\.refusals)
        unwraps = b.map(\.unwraps)
        cache_hits = b.map(\.cacheHits)
        cache_misses = b.map(\.cacheMisses)
        keystore_calls = b.map(\.keyStoreCalls)
        keystore_ms = b.map { $0.keyStoreCalls == 0 ? nil : Double($0.keyStoreMicroseconds) / Double($0.keyStoreCalls) / 1000 }
        alerts = b.map(\.alerts)
        refusals_by_code = b.reduce(into: [:]) { total, bucket in total.merge(bucket.refusalsByCode, uniquingKeysWith: +) }
    }
}
