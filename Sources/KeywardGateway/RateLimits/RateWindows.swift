import KeywardStorage

/// Requests and model tokens counted per scope (`tenant:NAME`, `token:ID`) and minute, and whether
/// a request may go: a pure state machine (the caller gives the clock), held by ``RateLimiter``.
///
/// A scope's use over the last 60 s is estimated from two fixed minutes: the current minute's
/// count plus the previous minute's, weighted by the part of it the last 60 s still cover. The
/// estimate is exact when the previous minute's use was even, and a burst at a minute's boundary
/// cannot pass the limit twice over (as fixed windows let it). Counts are this replica's own
/// plus the other replicas', as last read from the database.
struct RateWindows {
    struct Count: Hashable {
        var requests: Int64 = 0
        var tokens: Int64 = 0
    }

    enum Limit: String, Sendable { case requests, tokens }

    /// A request that may not go now.
    struct Refusal: Equatable, Sendable {
        let scope: String
        let limit: Limit
        let perMinute: Int64
        /// Whole seconds until the estimate is back under the limit (at least 1), if nothing else is sent.
        let retryAfterSeconds: Int
        /// The scope's first refusal this minute (the one the audit log records).
        let firstThisMinute: Bool
    }

    private struct Scope {
        var own: [Int64: Count] = [:]
        var others: [Int64: Count] = [:]
        /// The minute of the last refusal.
        var refusedIn: Int64?
        /// Own counts changed since the last ``takeChanged(nowMs:)``.
        var changed = false

        func total(_ minute: Int64) -> Count {
            let a = own[minute] ?? Count(), b = others[minute] ?? Count()
            return Count(requests: a.requests + b.requests, tokens: a.tokens + b.tokens)
        }
    }

    private var scopes: [String: Scope] = [:]
    /// The minute of the last ``prune(nowMs:)``: every count is pruned once a minute, by whatever
    /// comes first (a request, or the replicas' sync where there is one).
    private var prunedIn: Int64 = .min

    static let minuteMs: Int64 = 60_000

    /// Admits a request if every scope is under its limits, and then counts it in each; else
    /// the refusal with the longest wait (the one after which every limit has room), counting nothing.
    mutating func admit(_ checks: [(scope: String, limits: RateLimits)], nowMs: Int64) -> Refusal? {
        let minute = nowMs / Self.minuteMs
        if prunedIn != minute { prune(nowMs: nowMs) }
        let elapsed = Double(nowMs % Self.minuteMs) / Double(Self.minuteMs)
        var refusal: Refusal?
        for (name, limits) in checks {
            let s = scopes[name] ?? Scope()
            let previous = s.total(minute - 1), current = s.total(minute)
            // A request needs room for itself; tokens are counted after the answer, so a request
            // may go while the estimate is under the limit (its answer may cross it).
            for (limit, perMinute, prev, cur, room) in [
                (Limit.requests, limits.requestsPerMinute, previous.requests, current.requests, 1.0),
                (Limit.tokens, limits.tokensPerMinute, previous.tokens, current.tokens, 0.0),
            ] {
                guard let perMinute else { continue }
                let ceiling = Double(perMinute) - room  // the estimate must be at most this (tokens: below it)
                let estimate = Double(prev) * (1 - elapsed) + Double(cur)
                guard room > 0 ? estimate > ceiling : estimate >= ceiling else { continue }
                // Tokens need the estimate below the limit: aim a token under it.
                let wait = Self.wait(previous: Double(prev), current: Double(cur), ceiling: room > 0 ? ceiling : ceiling - 1, elapsed: elapsed)
                if wait > refusal?.retryAfterSeconds ?? 0 {
                    refusal = Refusal(scope: name, limit: limit, perMinute: perMinute, retryAfterSeconds: wait,
                                      firstThisMinute: s.refusedIn != minute)
                }
            }
        }
        if let refusal {
            scopes[refusal.scope, default: Scope()].refusedIn = minute
            return refusal
        }
        for (name, limits) in checks where !limits.isEmpty {
            scopes[name, default: Scope()].own[minute, default: Count()].requests += 1
            scopes[name]!.changed = true
        }
        return nil
    }

    /// Seconds until `previous × (1 − t) + current` (t: the part of the current minute passed)
    /// falls to `ceiling` or below, counting nothing more: within this minute if the current
    /// count allows it, else in the next, where the current count becomes the previous.
    static func wait(previous: Double, current: Double, ceiling: Double, elapsed: Double) -> Int {
        var minutes: Double
        if current <= ceiling && previous > 0 {
            minutes = max(0, 1 - (ceiling - current) / previous - elapsed)
        } else {
            minutes = 1 - elapsed + (ceiling <= 0 || current <= 0 ? 1 : min(1, max(0, 1 - ceiling / current)))
        }
        minutes = min(minutes, 2)
        return max(1, Int((minutes * 60).rounded(.up)))
    }

    /// Adds model tokens an answer used to each scope (those with limits).
    mutating func use(tokens: Int64, _ checks: [(scope: String, limits: RateLimits)], nowMs: Int64) {
        guard tokens > 0 else { return }
        let minute = nowMs / Self.minuteMs
        for (name, limits) in checks where !limits.isEmpty {
            scopes[name, default: Scope()].own[minute, default: Count()].tokens += tokens
            scopes[name]!.changed = true
        }
    }

    /// This replica's counts of the scopes changed since the last call (both minutes it keeps),
    /// to be written to the database; ``markChanged(_:)`` gives them back if that fails.
    mutating func takeChanged(nowMs: Int64) -> [RateCount] {
        prune(nowMs: nowMs)
        var out: [RateCount] = []
        for (name, s) in scopes where s.changed {
            scopes[name]!.changed = false
            for (minute, c) in s.own { out.append(RateCount(scope: name, minute: minute, requests: c.requests, tokens: c.tokens)) }
        }
        return out
    }

    mutating func markChanged(_ counts: [RateCount]) {
        for c in counts { scopes[c.scope]?.changed = true }
    }

    /// Replaces the other replicas' counts with those read (every scope and minute they hold).
    mutating func setOthers(_ counts: [RateCount], nowMs: Int64) {
        for name in scopes.keys { scopes[name]!.others = [:] }
        for c in counts { scopes[c.scope, default: Scope()].others[c.minute] = Count(requests: c.requests, tokens: c.tokens) }
        prune(nowMs: nowMs)
    }

    /// Forgets minutes before the previous one, and scopes with nothing left.
    mutating func prune(nowMs: Int64) {
        prunedIn = nowMs / Self.minuteMs
        let oldest = prunedIn - 1
        for (name, var s) in scopes {
            s.own = s.own.filter { $0.key >= oldest }
            s.others = s.others.filter { $0.key >= oldest }
            // Counts of older minutes are not worth sharing either: a scope left with none goes.
            if s.own.isEmpty && s.others.isEmpty && (s.refusedIn ?? .min) < oldest { scopes[name] = nil } else { scopes[name] = s }
        }
    }

    /// How many scopes are held (memory stays bounded by those used in the last two minutes).
    var scopeCount: Int { scopes.count }
}
