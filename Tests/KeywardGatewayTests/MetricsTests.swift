import Foundation
import Hummingbird
import HummingbirdTesting
import HTTPTypes
@testable import KeywardGateway
import Testing

@Suite("Metrics")
struct MetricsTests {
    /// Requests are counted by the matched route's template (Hummingbird's endpoint path): ids,
    /// names and key references never become labels, and a path no route matches is `other`.
    @Test func routeLabelsAreTemplatesNeverIDs() async throws {
        try await TestGateway.with { g in
            let app = Application(router: g.gateway.router())
            let calls: [(HTTPRequest.Method, String, String)] = [
                (.post, "/v1/chat/completions", "/v1/chat/completions"),
                (.get, "/v1/chat/completions/chatcmpl-abc", "/v1/chat/completions/{id}"),
                (.get, "/v1/chat/completions/chatcmpl-abc/messages", "/v1/chat/completions/{id}/messages"),
                (.post, "/admin/v1/keys/local%3Aa/disable", "/admin/v1/keys/{ref}/disable"),
                (.delete, "/admin/v1/tokens/tok_1", "/admin/v1/tokens/{id}"),
                (.post, "/admin/v1/tokens/tok_1/suspend", "/admin/v1/tokens/{id}/suspend"),
                (.get, "/admin/v1/keys/aws-kms%3Aarn", "/admin/v1/keys/{ref}"),
                (.get, "/admin/v1/keys/local%3Aa/policy", "/admin/v1/keys/{ref}/policy"),
                (.get, "/admin/v1/jobs/job_1", "/admin/v1/jobs/{id}"),
                (.post, "/admin/v1/tenants/acme/rekey", "/admin/v1/tenants/{name}/rekey"),
                (.put, "/admin/v1/tenants/acme/provider-keys/openai", "/admin/v1/tenants/{name}/provider-keys/{upstream}"),
                (.get, "/admin/v1/tenants", "/admin/v1/tenants"),
                (.get, "/admin/v1/audit", "/admin/v1/audit"),
                (.post, "/admin/v1/keys/local%3Aa/made-up-123", "other"),
                (.get, "/some/random/deep/path/123", "other"),
            ]
            try await app.test(.router) { client in
                for (method, path, _) in calls {
                    // No token: refused, but routed (and counted) all the same.
                    _ = try await client.execute(uri: path, method: method) { $0.status }
                }
            }
            let text = String(decoding: g.gateway.metrics.exposition(), as: UTF8.self)
            let counted = Set(text.split(separator: "\n").filter { $0.hasPrefix("keyward_http_requests_total{") }.compactMap { line in
                line.split(separator: "\"").dropFirst().first.map(String.init)
            })
            #expect(counted == Set(calls.map(\.2)), "\(counted.sorted())")
            for secret in ["chatcmpl-abc", "tok_1", "acme", "job_1", "local", "aws-kms", "made-up", "random", "openai"] {
                #expect(!text.contains(secret), "\(secret) became a label")
            }
        }
    }
}
