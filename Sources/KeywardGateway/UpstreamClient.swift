import AsyncHTTPClient
import Foundation
import Hummingbird
import NIOCore
import NIOHTTP1

/// Sends requests to upstream providers over one pooled HTTP client and turns their failures into
/// OpenAI-shaped errors.
public final class UpstreamClient: Sendable {
    let http: HTTPClient

    public init() {
        var configuration = HTTPClient.Configuration()
        configuration.timeout = .init(connect: .seconds(10))
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 256)
        configuration.decompression = .disabled
        // A redirect would carry the provider key to wherever it points: never follow one.
        configuration.redirectConfiguration = .disallow
        configuration.httpVersion = .automatic
        http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    public func shutdown() async throws { try await http.shutdown() }

    /// POSTs (or GETs, without a body) to `path` under the upstream's URL; returns the response
    /// head and body stream once the head arrives. Non-2xx answers are thrown as ``GatewayError``.
    func send(_ upstream: UpstreamConfiguration, path: String, body: ByteBuffer?, apiKey: Secret?,
              headers extra: [(String, String)] = []) async throws -> HTTPClientResponse {
        var request = HTTPClientRequest(url: upstream.url + path)
        request.method = body == nil ? .GET : .POST
        if let body {
            request.headers.add(name: "content-type", value: "application/json")
            request.body = .bytes(body)
        }
        if let key = apiKey?.value {
            switch upstream.kind {
            case .openAICompatible:
                request.headers.add(name: "authorization", value: "Bearer \(key)")
                request.headers.add(name: "api-key", value: key)  // Azure OpenAI
            case .anthropic:
                request.headers.add(name: "x-api-key", value: key)
            }
        }
        for (name, value) in extra { request.headers.add(name: name, value: value) }
        let response: HTTPClientResponse
        do {
            response = try await http.execute(request, timeout: .milliseconds(Int64(upstream.timeoutSeconds * 1000)))
        } catch let e as HTTPClientError where e == .deadlineExceeded || e == .readTimeout || e == .connectTimeout {
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

    /// Keeps the upstream's status where it means something to the client and its message where it
    /// is the provider's own error text; 401/403 become 502, since the client's token was fine.
    static func error(from response: HTTPClientResponse, upstream: UpstreamConfiguration) async -> GatewayError {
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
