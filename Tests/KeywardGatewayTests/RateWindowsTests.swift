@testable import KeywardGateway
import KeywardStorage
import Testing

@Suite("Rate windows")
struct RateWindowsTests {
    let minute: Int64 = 60_000
    /// A time `seconds` into minute 1000.
    func at(_ seconds: Double, minute m: Int64 = 1000) -> Int64 { m * minute + Int64(seconds * 1000) }

    @Test func requestsUpToTheLimitThenARefusalWithItsWait() {
        var w = RateWindows()
        let tenant = [(scope: "tenant:a", limits: RateLimits(requestsPerMinute: 3))]
        for s in [1.0, 2, 3] { #expect(w.admit(tenant, nowMs: at(s)) == nil) }
        let refusal = w.admit(tenant, nowMs: at(4))
        #expect(refusal?.limit == .requests && refusal?.perMinute == 3 && refusal?.firstThisMinute == true)
        // Three in this minute: in the next, 3 × (1 − t) ≤ 2 needs t ≥ 1/3: 56 s + 20 s.
        #expect(refusal?.retryAfterSeconds == 76)
        #expect(w.admit(tenant, nowMs: at(5))?.firstThisMinute == false, "one audited refusal a minute")
        // Refusals are not counted: at 20 s into the next minute, 3 × 2/3 = 2 ≤ 2, one may go.
        #expect(w.admit(tenant, nowMs: at(19, minute: 1001)) != nil)
        #expect(w.admit(tenant, nowMs: at(21, minute: 1001)) == nil)
        #expect(w.admit(tenant, nowMs: at(22, minute: 1001))?.firstThisMinute == false, "refused already at 19 s")
        // The next minute: the one of 21 s weighs 0.98, two more fit, and the next refusal is its minute's first.
        #expect(w.admit(tenant, nowMs: at(1, minute: 1002)) == nil)
        #expect(w.admit(tenant, nowMs: at(2, minute: 1002)) == nil)
        #expect(w.admit(tenant, nowMs: at(3, minute: 1002))?.firstThisMinute == true)
    }

    @Test func theEstimateSlidesAcrossTheMinuteBoundary() {
        var w = RateWindows()
        let limits = [(scope: "tenant:a", limits: RateLimits(requestsPerMinute: 10))]
        for _ in 0..<10 { #expect(w.admit(limits, nowMs: at(59)) == nil) }
        // A fixed window would let ten more through at once; the previous minute still weighs 9.5.
        #expect(w.admit(limits, nowMs: at(3, minute: 1001)) != nil)
        // Half-way, 10 × 0.5 = 5: five more fit (each needs room: 5 + 4 + 1 ≤ 10), the sixth does not.
        for _ in 0..<5 { #expect(w.admit(limits, nowMs: at(30, minute: 1001)) == nil) }
        let r = w.admit(limits, nowMs: at(30, minute: 1001))
        // 10 × (1 − t) + 5 ≤ 9 needs t ≥ 0.6: 6 s.
        #expect(r?.retryAfterSeconds == 6)
        #expect(w.admit(limits, nowMs: at(37, minute: 1001)) == nil)
        // Two minutes on, nothing of it is left.
        for _ in 0..<10 { #expect(w.admit(limits, nowMs: at(0, minute: 1003)) == nil) }
    }

    @Test func everyScopeMustAdmitAndOnlyThenAreAllCounted() {
        var w = RateWindows()
        let tenant = (scope: "tenant:a", limits: RateLimits(requestsPerMinute: 3))
        let token1 = (scope: "token:1", limits: RateLimits(requestsPerMinute: 1))
        let token2 = (scope: "token:2", limits: RateLimits())
        #expect(w.admit([tenant, token1], nowMs: at(1)) == nil)
        let refused = w.admit([tenant, token1], nowMs: at(2))
        #expect(refused?.scope == "token:1")
        // The refusal took nothing from the tenant: two more of another token fit.
        #expect(w.admit([tenant, token2], nowMs: at(3)) == nil)
        #expect(w.admit([tenant, token2], nowMs: at(4)) == nil)
        #expect(w.admit([tenant, token2], nowMs: at(5))?.scope == "tenant:a")
    }

    @Test func tokensCountFromAnswersAndStopTheNextRequest() {
        var w = RateWindows()
        let limits = [(scope: "tenant:a", limits: RateLimits(tokensPerMinute: 100))]
        #expect(w.admit(limits, nowMs: at(1)) == nil)
        w.use(tokens: 99, limits, nowMs: at(2))
        #expect(w.admit(limits, nowMs: at(3)) == nil, "under the limit, a request goes (its answer may cross it)")
        w.use(tokens: 50, limits, nowMs: at(4))
        let r = w.admit(limits, nowMs: at(5))
        #expect(r?.limit == .tokens && r?.perMinute == 100)
        // 149 in this minute: next minute, 149 × (1 − t) < 100 needs t > 0.33: 55 s + 20 s.
        #expect(r.map { (74...76).contains($0.retryAfterSeconds) } == true)
    }

    @Test func otherReplicasCountsAreAddedAndOwnCountsAreShared() {
        var w = RateWindows()
        let limits = [(scope: "tenant:a", limits: RateLimits(requestsPerMinute: 5))]
        #expect(w.admit(limits, nowMs: at(1)) == nil)
        #expect(w.takeChanged(nowMs: at(1)) == [RateCount(scope: "tenant:a", minute: 1000, requests: 1, tokens: 0)])
        #expect(w.takeChanged(nowMs: at(1)).isEmpty, "nothing changed since")
        w.setOthers([RateCount(scope: "tenant:a", minute: 1000, requests: 4, tokens: 0)], nowMs: at(2))
        #expect(w.admit(limits, nowMs: at(2)) != nil, "1 own + 4 others' = the limit")
        // Others' counts are replaced by each read, not added to.
        w.setOthers([RateCount(scope: "tenant:a", minute: 1000, requests: 2, tokens: 0)], nowMs: at(3))
        #expect(w.admit(limits, nowMs: at(3)) == nil)
        let changed = w.takeChanged(nowMs: at(3))
        #expect(changed == [RateCount(scope: "tenant:a", minute: 1000, requests: 2, tokens: 0)])
        w.markChanged(changed)  // a failed write gives them back
        #expect(w.takeChanged(nowMs: at(4)) == changed)
    }

    @Test func oldMinutesAndIdleScopesAreForgotten() {
        var w = RateWindows()
        for i in 0..<1000 {
            #expect(w.admit([(scope: "token:\(i)", limits: RateLimits(requestsPerMinute: 1))], nowMs: at(1)) == nil)
        }
        #expect(w.scopeCount == 1000)
        _ = w.takeChanged(nowMs: at(1, minute: 1001))
        #expect(w.scopeCount == 1000, "the previous minute still counts")
        _ = w.takeChanged(nowMs: at(1, minute: 1002))
        #expect(w.scopeCount == 0)
    }

    /// Without replicas to sync with, nothing else prunes: requests do, once a minute.
    @Test func requestsAloneForgetOldMinutes() {
        var w = RateWindows()
        for i in 0..<100 { _ = w.admit([(scope: "token:\(i)", limits: RateLimits(requestsPerMinute: 5))], nowMs: at(1)) }
        #expect(w.scopeCount == 100)
        _ = w.admit([(scope: "tenant:a", limits: RateLimits(requestsPerMinute: 5))], nowMs: at(1, minute: 1002))
        #expect(w.scopeCount == 1)
    }

    /// The wait given is the longest of the refusing scopes': after it, every one has room.
    @Test func theLongestWaitOfEveryRefusingScopeIsGiven() {
        var w = RateWindows()
        let tenant = (scope: "tenant:a", limits: RateLimits(requestsPerMinute: 3, tokensPerMinute: 10))
        let token = (scope: "token:1", limits: RateLimits(requestsPerMinute: 2))
        #expect(w.admit([tenant, token], nowMs: at(10)) == nil)
        #expect(w.admit([tenant, token], nowMs: at(11)) == nil)
        w.use(tokens: 1000, [tenant, token], nowMs: at(12))
        let r = w.admit([token, tenant], nowMs: at(13))
        // The token refuses first (room in 47 s + 30 s); the tenant's tokens need longer:
        // 1000 × (1 − t) ≤ 9 in the next minute, t ≥ 0.991: 47 s + 59.5 s.
        #expect(r?.scope == "tenant:a" && r?.limit == .tokens)
        #expect(r.map { (106...108).contains($0.retryAfterSeconds) } == true)
    }

    @Test func theWaitIsBoundedAndAtLeastASecond() {
        #expect(RateWindows.wait(previous: 0, current: 1, ceiling: 0, elapsed: 0.5) == 90)
        #expect(RateWindows.wait(previous: 1_000_000, current: 0, ceiling: 0, elapsed: 0) == 60)
        #expect(RateWindows.wait(previous: 10, current: 0, ceiling: 9, elapsed: 0.0999) == 1)
        for p in stride(from: 0.0, through: 100, by: 7) {
            for c in stride(from: 0.0, through: 100, by: 9) {
                for t in stride(from: 0.0, to: 1, by: 0.13) {
                    #expect((1...120).contains(RateWindows.wait(previous: p, current: c, ceiling: 50, elapsed: t)))
                }
            }
        }
    }
}
