import Foundation
import Hummingbird
import HummingbirdTesting
import HTTPTypes
import KeywardConsole
import KeywardStorage
@testable import KeywardGateway
import Testing

@Suite("Console")
struct ConsoleTests {
    /// Every file of the console's folder is compiled in and served, under the CSP, with its
    /// content type; nothing else is served.
    @Test func everyFileIsServedWithTheContentSecurityPolicy() async throws {
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../Sources/KeywardConsole/web").standardized.path
        let names = try FileManager.default.contentsOfDirectory(atPath: folder).filter { !$0.hasPrefix(".") }
        #expect(!names.isEmpty)
        #expect(Set(ConsoleAssets.files.keys) == Set(names), "ConsoleAssets.files must list every file of web/")
        try await TestGateway.with { g in
            let app = Application(router: g.gateway.router())
            try await app.test(.router) { client in
                for name in names {
                    let expected = try Data(contentsOf: URL(fileURLWithPath: folder + "/" + name))
                    try await client.execute(uri: "/console/" + name, method: .get) { r in
                        #expect(r.status == .ok, "\(name)")
                        #expect(Data(r.body.readableBytesView) == expected, "\(name)")
                        #expect(r.headers[.contentSecurityPolicy] == ConsoleController.contentSecurityPolicy)
                        #expect(r.headers[.contentSecurityPolicy]?.contains("script-src 'self';") == true)
                        #expect(r.headers[.contentSecurityPolicy]?.contains("unsafe") == false)
                        #expect(r.headers[.xContentTypeOptions] == "nosniff")
                        #expect(r.headers[.contentType] == ConsoleAssets.asset(named: name)?.contentType)
                    }
                }
                try await client.execute(uri: "/console/", method: .get) { r in
                    #expect(r.status == .ok && r.headers[.contentType] == "text/html; charset=utf-8")
                }
                try await client.execute(uri: "/console", method: .get) { r in
                    #expect(r.status == .movedPermanently && r.headers[.location] == "/console/")
                }
                for missing in ["/console/nosuch.js", "/console/..%2FPackage.swift", "/console/a/b"] {
                    try await client.execute(uri: missing, method: .get) { r in #expect(r.status == .notFound, "\(missing)") }
                }
                // API answers are never for a cache, errors included.
                try await client.execute(uri: "/admin/v1/session", method: .get) { r in
                    #expect(r.status == .unauthorized && r.headers[.cacheControl] == "no-store")
                }
            }
        }
    }
}

@Suite("Console's read endpoints")
struct ConsoleEndpointTests {
    /// The key list names a re-keying tenant on both its keys (its old key still opens the records
    /// not yet moved: disabling it is not harmless), and lists a key whose store is not configured
    /// as unavailable with the reason instead of failing the whole list.
    @Test func theKeyListNamesEveryTenantThatNeedsAKey() async throws {
        try await TestGateway.with { g in
            var a = try await g.tenant("acme")
            _ = try await g.tenant("beta")
            a.previousKey = "local:beta"
            try await g.gateway.store.updateTenantKeys(a)
            try await g.gateway.store.insertKeyState(KeyStateRecord(key: "vault-transit:gone", state: .disabled, updatedAt: 0))
            let token = try await g.token(.keyAdmin)
            let app = Application(router: g.gateway.router())
            try await app.test(.router) { client in
                try await client.execute(uri: "/admin/v1/keys", method: .get, headers: [.authorization: "Bearer \(token.exposed())"]) { r in
                    #expect(r.status == .ok)
                    let keys = try #require(try JSONSerialization.jsonObject(with: Data(r.body.readableBytesView)) as? [String: Any])["data"] as? [[String: Any]]
                    let byKey = Dictionary(uniqueKeysWithValues: (keys ?? []).map { ($0["key"] as? String ?? "", $0) })
                    #expect(Set(byKey.keys) == ["local:acme", "local:beta", "vault-transit:gone"])
                    #expect(byKey["local:acme"]?["tenants"] as? [String] == ["acme"])
                    #expect(byKey["local:beta"]?["tenants"] as? [String] == ["acme", "beta"])
                    #expect(byKey["local:beta"]?["store"] as? String == "local" && byKey["local:beta"]?["state"] as? String == "enabled")
                    #expect(byKey["vault-transit:gone"]?["state"] as? String == "unavailable")
                    #expect((byKey["vault-transit:gone"]?["error"] as? [String: Any])?["code"] != nil)
                }
            }
        }
    }

    /// An upstream's URL is listed without its query (some providers take their key there).
    @Test func anUpstreamsURLIsListedWithoutItsQuery() throws {
        let u = try UpstreamConfiguration(name: "q", kind: .openAICompatible, url: "https://llm.example.com:8443/v1?api-key=SECRET",
                                          apiKey: nil, models: ["*"])
        let body = UpstreamBody(u)
        #expect(body.url == "https://llm.example.com:8443/v1")
        #expect(!body.has_api_key)
    }
}

@Suite("Jobs list")
struct JobsListTests {
    /// A job that ended between the list's reads by status is listed once, as last read.
    @Test func aJobReadTwiceIsListedOnceAsLastRead() {
        func job(_ id: String, _ status: Job.Status, at time: Int64) -> Job {
            var j = Job(id: id, tenant: "t", fromKey: "local:a", toKey: "local:b", total: 10, createdAt: time)
            j.status = status
            return j
        }
        let listed = KeyLifecycleController.listed([[job("j2", .running, at: 2)], [job("j1", .failed, at: 1)],
                                                    [job("j2", .done, at: 2), job("j0", .done, at: 0)]])
        #expect(listed.map(\.id) == ["j2", "j1", "j0"])
        #expect(listed.map(\.status) == [.done, .failed, .done])
        #expect(KeyLifecycleController.listed([(0..<150).map { job("j\($0)", .done, at: Int64($0)) }]).count == 100)
    }
}

@Suite("Dashboard")
struct DashboardTests {
    let t0: Int64 = 1_800_000_000 - 1_800_000_000 % 60  // a minute's start

    @Test func countsLandInTheirMinuteOldestFirst() {
        var d = Dashboard()
        d.record(.request(refusal: nil), atSecond: t0 + 1)
        d.record(.request(refusal: "key_revoked"), atSecond: t0 + 59)
        d.record(.request(refusal: "key_revoked"), atSecond: t0 + 60)
        d.record(.unwraps(3), atSecond: t0 + 61)
        d.record(.cache(hits: 2, misses: 1), atSecond: t0 + 61)
        d.record(.keyStoreCall(microseconds: 1500), atSecond: t0 + 62)
        d.record(.keyStoreCall(microseconds: 500), atSecond: t0 + 63)
        d.record(.alert, atSecond: t0 + 120)
        let body = DashboardBody(d.lastHour(atSecond: t0 + 120))
        #expect(body.minutes == 60 && body.start == t0 + 120 - 59 * 60)
        #expect(body.requests.suffix(3) == [2, 1, 0])
        #expect(body.refusals.suffix(3) == [1, 1, 0])
        #expect(body.unwraps.suffix(3) == [0, 3, 0])
        #expect(body.cache_hits.suffix(2) == [2, 0] && body.cache_misses.suffix(2) == [1, 0])
        #expect(body.keystore_calls.suffix(2) == [2, 0])
        #expect(body.keystore_ms.suffix(3) == [nil, 1.0, nil])
        #expect(body.alerts.suffix(1) == [1])
        #expect(body.refusals_by_code == ["key_revoked": 2])
        #expect(body.requests.dropLast(3).allSatisfy { $0 == 0 })
    }

    /// A minute's slot is reused an hour later: what was counted then is forgotten, not added to.
    @Test func anHourLaterTheOldCountsAreGone() {
        var d = Dashboard()
        for _ in 0..<5 { d.record(.request(refusal: "rate_limited"), atSecond: t0) }
        #expect(DashboardBody(d.lastHour(atSecond: t0 + 59 * 60)).requests.first == 5)
        #expect(DashboardBody(d.lastHour(atSecond: t0 + 60 * 60)).requests.allSatisfy { $0 == 0 })
        d.record(.request(refusal: nil), atSecond: t0 + 60 * 60)
        let later = DashboardBody(d.lastHour(atSecond: t0 + 60 * 60))
        #expect(later.requests.last == 1 && later.refusals_by_code.isEmpty)
    }

    @Test func refusalCodesPerMinuteAreBounded() {
        var d = Dashboard()
        for i in 0..<(Dashboard.codesPerMinute + 10) { d.record(.request(refusal: "code_\(i)"), atSecond: t0) }
        d.record(.request(refusal: "code_0"), atSecond: t0)
        let body = DashboardBody(d.lastHour(atSecond: t0))
        #expect(body.refusals_by_code.count == Dashboard.codesPerMinute)
        #expect(body.refusals_by_code["code_0"] == 2)
        #expect(body.refusals.last == Dashboard.codesPerMinute + 11, "every refusal counted, if not every code")
    }
}
