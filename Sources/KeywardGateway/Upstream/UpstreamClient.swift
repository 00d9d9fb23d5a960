import KeywardCrypto
import Foundation
import Hummingbird
import KeywardHTTP
import NIOCore
import NIOHTTP1

/// Sends requests to upstream providers over pooled keep-alive connections (on the event loop of
/// the request that asks) and turns their failures into OpenAI-shaped errors.
public final class UpstreamClient: Sendable {
    let http: PooledHTTPClient
    let traces: Traces

    init(traces: Traces = .off) {
        http = PooledHTTPClient()
        self.traces = traces
    }

    public func shutdown() async throws { await http.shutdown() }

    /// POSTs (or GETs, without a body) to `path` under the upstream's URL; returns the response
    /// head and body stream once the head arrives. Non-2xx answers are thrown as ``GatewayError``.
    /// Redirects are never followed: one would carry the provider key to wherever it points.
    func send(_ upstream: UpstreamConfiguration, path: String, body: ByteBuffer?, apiKey: Secret?,
              headers extra: [(String, String)] = []) async throws -> PooledHTTPClient.Response {
        var headers: [(String, String)] = []
        headers.reserveCapacity(3 + extra.count)
        if body != nil { headers.append(("content-type", "application/json")) }
        // Header values are strings: this copy lives for the request only.
        if let key = apiKey?.exposed() {
            switch upstream.kind {
            case .openAICompatible:
                headers.append(("authorization", "Bearer \(key)"))
                headers.append(("api-key", key))  // Azure OpenAI
            case .anthropic:
                headers.append(("x-api-key", key))
            }
        }
        headers += extra
        let timeout = TimeAmount.nanoseconds(Int64(upstream.timeoutSeconds * 1e9))
        let response: PooledHTTPClient.Response
        do {
            // The span ends with the response head; the body streams after it.
            response = try await traces.span("upstream \(upstream.name)", kind: .client) { span in
                span?.attributes["keyward.upstream"] = upstream.name
                let response = try await http.execute(body == nil ? .GET : .POST, upstream.endpoint, target: path, headers: headers,
                                                      body: body, deadline: .now() + timeout, readTimeout: timeout)
                span?.attributes["http.response.status_code"] = Int(response.status.code)
                return response
            }
        } catch let e as HTTPClientError where e.code == .deadlineExceeded || e.code == .connectTimeout || e.code == .readTimeout {
            throw GatewayError(.gatewayTimeout, type: "api_error", code: "upstream_timeout",
                               "upstream \(upstream.name) did not answer in time")
        } catch {
            throw GatewayError(.badGateway, type: "api_error", code: "upstream_unavailable",
                               "upstream \(upstream.name) could not be reached")
        }
        guard (200..<300).contains(response.status.code) else {
            throw await Self.error(from: response, upstream: upstream)
        }
        return response
    }

    /// The whole body of an upstream's answer. One that breaks off, stalls or grows past `limit`
    /// is the upstream's failure: 502, or 504 for a stall.
    static func collect(_ response: PooledHTTPClient.Response, upTo limit: Int, from upstream: UpstreamConfiguration) async throws -> ByteBuffer {
        do { return try await response.body.collect(upTo: limit) } catch {
            throw bodyError(error, from: upstream, limit: limit)
        }
    }

    /// Hands each piece of a streamed answer's body to `body` as it comes; returns nil at its end,
    /// or what the client is told if it broke off or stalled (errors of `body` itself are thrown).
    static func forEachChunk(of response: PooledHTTPClient.Response, from upstream: UpstreamConfiguration,
                             _ body: (ByteBuffer) async throws -> Void) async throws -> GatewayError? {
        var chunks = response.body.makeAsyncIterator()
        while true {
            let buffer: ByteBuffer?
            do { buffer = try await chunks.next() } catch { return bodyError(error, from: upstream) }
            guard let buffer else { return nil }
            try await body(buffer)
        }
    }

    /// What a client is told of an answer's body that failed as it was read: a stall is 504,
    /// anything else (a reset, a cut, too much) 502.
    static func bodyError(_ error: any Error, from upstream: UpstreamConfiguration, limit: Int? = nil) -> GatewayError {
        switch (error as? HTTPClientError)?.code {
        case .readTimeout?:
            GatewayError(.gatewayTimeout, type: "api_error", code: "upstream_timeout", "upstream \(upstream.name) stopped answering")
        case .bodyTooLarge?:
            GatewayError(.badGateway, type: "api_error", code: "upstream_error",
                         "upstream \(upstream.name) answered more than \(limit.map(String.init) ?? "the limit's") bytes")
        default:
            GatewayError(.badGateway, type: "api_error", code: "upstream_unavailable", "upstream \(upstream.name) broke off its answer")
        }
    }

    /// Keeps the upstream's status where it means something to the client and its message where it
    /// is the provider's own error text; 401/403 become 502, since the client's token was fine.
    static func error(from response: PooledHTTPClient.Response, upstream: UpstreamConfiguration) async -> GatewayError {
        let body = (try? await response.body.collect(upTo: 64 << 10)).map { Array(buffer: $0) } ?? []
        var message = "upstream \(upstream.name) answered \(response.status.code)"
        var code = "upstream_error"
        if let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any],
           let error = object["error"] as? [String: Any] {
            if let m = error["message"] as? String { message += ": " + m.prefix(500) }
            if let c = error["code"] as? String { code = c } else if let t = error["type"] as? String { code = t }
        }
        let status = response.status.code
        var e: GatewayError
        switch status {
        case 429:
            e = GatewayError(.tooManyRequests, type: "rate_limit_error", code: code, message)
            if let retry = response.headers.first(name: "retry-after") { e.headers[.retryAfter] = retry }
        case 400, 404, 409, 413, 422:
            e = GatewayError(HTTPResponse.Status(code: Int(status)), type: "invalid_request_error", code: code, message)
        case 504, 408:
            e = GatewayError(.gatewayTimeout, type: "api_error", code: "upstream_timeout", message)
        case 401, 403:
            e = GatewayError(.badGateway, type: "api_error", code: "upstream_auth_failed",
                             "upstream \(upstream.name) refused the gateway's provider credentials (\(status))")
        default:
            e = GatewayError(.badGateway, type: "api_error", code: code, message)
        }
        return e
    }
}
