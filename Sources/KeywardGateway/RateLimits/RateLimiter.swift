import Foundation
import HTTPTypes
import Hummingbird
import KeywardAudit
import KeywardStorage
import Logging
import ServiceLifecycle
import Synchronization

/// Requests and model tokens per minute, for each tenant (its own limits, else the configured
/// defaults) and each app token with limits of its own. A request over a limit is refused with 429
/// `rate_limited` and `retry-after` before anything is sent upstream; tokens are counted from the
/// upstream's usage once the answer is in.
///
/// Each replica counts what it admits at once; on shared storage the ``RateCountSyncService``
/// writes those counts to the database and reads the others' every half second, so a replica
/// sees another's requests within about that (plus a database round trip): across N replicas a
/// limit can be passed by what the others admit in that time.
final class RateLimiter: Sendable {
    let defaults: RateLimits
    let audit: AuditLog
    let metrics: GatewayMetrics
    private let windows = Mutex(RateWindows())

    init(defaults: RateLimits, audit: AuditLog, metrics: GatewayMetrics) {
        self.defaults = defaults
        self.audit = audit
        self.metrics = metrics
    }

    /// The scopes that limit `principal`: its tenant, and the token if it has limits of its own.
    func checks(_ principal: Principal) -> [(scope: String, limits: RateLimits)] {
        var checks: [(scope: String, limits: RateLimits)] = []
        if let t = principal.tenant {
            let limits = RateLimits(requestsPerMinute: t.rateLimits.requestsPerMinute ?? defaults.requestsPerMinute,
                                    tokensPerMinute: t.rateLimits.tokensPerMinute ?? defaults.tokensPerMinute)
            if !limits.isEmpty { checks.append(("tenant:" + t.name, limits)) }
        }
        if !principal.rateLimits.isEmpty { checks.append(("token:" + principal.tokenID, principal.rateLimits)) }
        return checks
    }

    /// Counts a request of `principal`, or throws 429 `rate_limited` (the scope's first refusal
    /// of a minute is audited; every refusal is counted in `keyward_rate_limited_total`).
    func admit(_ principal: Principal) async throws {
        let checks = checks(principal)
        guard !checks.isEmpty else { return }
        let now = Gateway.nowMs()
        guard let refusal = windows.withLock({ $0.admit(checks, nowMs: now) }) else { return }
        let kind = refusal.scope.hasPrefix("token:") ? "token" : "tenant"
        metrics.rateLimited(scope: kind, limit: refusal.limit.rawValue)
        let limit = "\(refusal.limit.rawValue)_per_minute=\(refusal.perMinute)"
        if refusal.firstThisMinute {
            // The refusal stands whether or not its event could be written: it releases nothing.
            _ = try? await audit.append(AuditLog.event(.access, result: .rateLimited, detail: "\(kind) \(limit)",
                                                       scope: principal.scope(.inference)))
        }
        var e = GatewayError(.tooManyRequests, type: "rate_limit_error", code: "rate_limited",
                             "the \(kind)'s limit of \(refusal.perMinute) \(refusal.limit == .requests ? "requests" : "model tokens") a minute is reached; retry after \(refusal.retryAfterSeconds) s")
        e.headers[.retryAfter] = String(refusal.retryAfterSeconds)
        e.headers[.keywardRateLimit] = "\(kind) \(limit)"
        throw e
    }

    /// Counts the model tokens an answer to `principal` used: the upstream's counts, each held to
    /// ``RateLimits/maximum`` (an upstream's number is not trusted to be sane). An answer without
    /// counts (a stream the client did not ask usage for, an upstream that reports none) is
    /// counted as a quarter of its request's and answer's bytes, about a token each for English.
    func used(_ counts: [Int?], orBytes bytes: Int, by principal: Principal) {
        let given = counts.compactMap { $0 }
        let tokens = given.isEmpty ? Int64(bytes / 4)
            : given.reduce(Int64(0)) { $0 + Int64(clamping: min(max($1, 0), Int(RateLimits.maximum))) }
        guard tokens > 0 else { return }
        let checks = checks(principal)
        guard !checks.isEmpty else { return }
        windows.withLock { $0.use(tokens: tokens, checks, nowMs: Gateway.nowMs()) }
    }

    /// Writes this replica's changed counts and reads the others' (the sync service's pass).
    func sync(store: any RecordStore, replica: String) async throws {
        let changed = windows.withLock { $0.takeChanged(nowMs: Gateway.nowMs()) }
        do {
            if !changed.isEmpty { try await store.saveRateCounts(changed, replica: replica) }
            let others = try await store.rateCounts(since: Gateway.nowMs() / RateWindows.minuteMs - 1, excluding: replica)
            windows.withLock { $0.setOthers(others, nowMs: Gateway.nowMs()) }
        } catch {
            windows.withLock { $0.markChanged(changed) }
            throw error
        }
    }
}

/// Admits each model request (a POST of the model routes; their reads of stored responses are
/// not model requests) against its tenant's and token's limits.
struct RateLimit: RouterMiddleware {
    typealias Context = GatewayContext
    let limiter: RateLimiter

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if request.method == .post { try await limiter.admit(context.requirePrincipal()) }
        return try await next(request, context)
    }
}

/// Shares the rate counts of replicas through the database, twice a second, and deletes counts
/// older than two minutes once a minute. Runs only on storage several replicas share.
struct RateCountSyncService: Service {
    let limiter: RateLimiter
    let store: any RecordStore
    let replica: String
    let logger: Logger

    func run() async throws {
        var lastFailure: ContinuousClock.Instant?
        var lastCleanup = ContinuousClock.now
        while !Task.isShuttingDownGracefully {
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .milliseconds(500)) }
            do {
                try await limiter.sync(store: store, replica: replica)
                if ContinuousClock.now - lastCleanup > .seconds(60) {
                    lastCleanup = .now
                    try await store.deleteRateCounts(before: Gateway.nowMs() / RateWindows.minuteMs - 2)
                }
            } catch {
                // Limits then hold per replica; said once a minute, not twice a second.
                if lastFailure.map({ ContinuousClock.now - $0 > .seconds(60) }) ?? true {
                    lastFailure = .now
                    logger.warning("rate counts not shared with the other replicas", metadata: ["error": "\(error)"])
                }
            }
        }
    }
}
