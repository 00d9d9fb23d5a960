import Foundation
import HTTPTypes
import Hummingbird
import KeywardJSON
import Logging

/// Sends a batch's line through the gateway's own routes (chat completions, embeddings,
/// responses), as the token that made the batch: the same routing, key policy, provider key,
/// storage policy and audit as a request of that token, without a connection.
struct LineSender: Sendable {
    let responder: RouterResponder<GatewayContext>
    let logger: Logger

    /// What a line was answered.
    struct Answer: Sendable {
        var status: Int
        var body: [UInt8]
        var requestID: String
        /// The gateway's error code, when it refused or failed the request itself.
        var code: String?
        var message = ""
        /// An upstream's `retry-after`, in seconds.
        var retryAfter: Double?
        /// Refused by a rate limit of Keyward's, before anything was sent.
        var rateLimitedHere = false

        /// Worth another try: throttled, or an upstream (or the gateway's key store) failing.
        var retryable: Bool { status == 429 || (500...599).contains(status) && status != 501 }
    }

    func send(_ body: [UInt8], to path: String, as principal: Principal) async -> Answer {
        let requestID = Tokens.identifier("req_")
        let request = Request(head: HTTPRequest(method: .post, scheme: "http", authority: "keyward", path: path,
                                                headerFields: [.contentType: "application/json"]),
                              body: RequestBody(buffer: ByteBuffer(bytes: body)))
        do {
            let response = try await responder.respond(to: request, context: GatewayContext(principal: principal, logger: logger))
            let box = CollectingWriter.Box()
            try await response.body.write(CollectingWriter(box: box))
            return Answer(status: Int(response.status.code), body: Array(buffer: box.buffer), requestID: requestID)
        } catch {
            let e = GatewayError.from(error)
            return Answer(status: Int(e.status.code), body: e.body, requestID: requestID, code: e.code, message: e.message,
                          retryAfter: e.headers[.retryAfter].flatMap(Double.init), rateLimitedHere: e.headers[.keywardRateLimit] != nil)
        }
    }

    /// A line of the output or error file for an answered request, in OpenAI's shape. The body is
    /// embedded as the JSON it is; an answer that is not JSON is embedded as a string.
    static func resultLine(customID: [UInt8], status: Int, requestID: String, body: [UInt8]) -> [UInt8] {
        let json = (try? JSONSerialization.jsonObject(with: Data(body), options: [.fragmentsAllowed])) != nil
            ? body : JSONScanner.quoted(String(decoding: body, as: UTF8.self))
        var out = Array(#"{"id":"#.utf8) + JSONScanner.quoted(Tokens.identifier("batch_req_"))
        out += Array(#","custom_id":"#.utf8) + customID
        out += Array(#","response":{"status_code":"#.utf8) + Array(String(status).utf8)
        out += Array(#","request_id":"#.utf8) + JSONScanner.quoted(requestID)
        out += Array(#","body":"#.utf8) + json + Array(#"},"error":null}"#.utf8)
        return out
    }

    /// A line of the error file for a request that got no answer.
    static func errorLine(customID: [UInt8], code: String, message: String) -> [UInt8] {
        var out = Array(#"{"id":"#.utf8) + JSONScanner.quoted(Tokens.identifier("batch_req_"))
        out += Array(#","custom_id":"#.utf8) + customID
        out += Array(#","response":null,"error":{"code":"#.utf8) + JSONScanner.quoted(code)
        out += Array(#","message":"#.utf8) + JSONScanner.quoted(message) + Array("}}".utf8)
        return out
    }
}
