import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// JSON in and out of routes: responses with `application/json`, request bodies decoded with an
/// error that says where they are wrong (never quoting them), and bodies read up to a limit.
enum JSONBody {
    static func response(_ object: Any, status: HTTPResponse.Status = .ok) -> Response {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    /// A typed body, encoded with sorted keys (as every JSON answer of the gateway is).
    static func encoded(_ value: some Encodable, status: HTTPResponse.Status = .ok) -> Response {
        let data = (try? encoder.encode(value)) ?? Data("{}".utf8)
        return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    private static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }()

    static func bytes(_ bytes: [UInt8], status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) -> Response {
        var fields = headers
        fields[.contentType] = "application/json"
        return Response(status: status, headers: fields, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    /// A request body that must be a JSON object (empty: an empty object), without the members
    /// that are null (SDKs send null for what was not given).
    static func object(_ bytes: some Collection<UInt8>) throws -> [String: Any] {
        if bytes.isEmpty { return [:] }
        guard let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] else {
            throw GatewayError.invalidRequest("the body must be a JSON object", code: "invalid_json")
        }
        return object.filter { !($0.value is NSNull) }
    }

    /// Decodes a JSON request body, saying where it is malformed.
    static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws -> T {
        do {
            return try JSONDecoder().decode(T.self, from: Data(bytes))
        } catch DecodingError.dataCorrupted {
            // JSONDecoder does not say where; JSONSerialization does, by offset, without quoting the body.
            var location = "it is not"
            do { _ = try JSONSerialization.jsonObject(with: Data(bytes)) } catch {
                if let d = (error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String { location = d }
            }
            throw GatewayError.invalidRequest("the body is not valid JSON: \(location)", code: "invalid_json")
        } catch let DecodingError.keyNotFound(key, context) {
            let path = (context.codingPath + [key]).map(\.stringValue).joined(separator: ".")
            throw GatewayError.invalidRequest("missing required field '\(path)'", code: "missing_field")
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw GatewayError.invalidRequest("field '\(path)' has the wrong type", code: "invalid_field")
        } catch {
            throw GatewayError.invalidRequest("the body is not valid JSON", code: "invalid_json")
        }
    }
}

extension Request {
    /// The body, refused with 413 as soon as it grows past `limit` (the rest drained, see
    /// ``drain(_:)``), as the buffer it arrived in when it came in one (forwarded upstream without
    /// another copy).
    func collectBody(limit: Int) async throws -> ByteBuffer {
        var chunks = body.makeAsyncIterator()
        guard var collected = try await chunks.next() else { return ByteBuffer() }
        while true {
            guard collected.readableBytes <= limit else {
                await Self.drain(&chunks)
                throw GatewayError(.contentTooLarge, type: "invalid_request_error", code: "request_too_large",
                                   "the request body is larger than the gateway's limit")
            }
            guard var chunk = try await chunks.next() else { return collected }
            collected.writeBuffer(&chunk)
        }
    }

    /// Reads and drops up to 64 MiB more (for at most ten seconds) of a body that is refused (too
    /// large, or failed on the way), so that a client that sends its whole body before it reads (Python's urllib, most
    /// SDKs) gets the answer at once instead of blocking in its send until it times out.
    static func drain(_ chunks: inout RequestBody.AsyncIterator) async {
        var left = 64 << 20
        // A client that trickles gets no more than ten seconds of it.
        let deadline = ContinuousClock.now + .seconds(10)
        while left > 0, ContinuousClock.now < deadline, let chunk = try? await chunks.next() { left -= chunk.readableBytes }
    }

    /// The same, as bytes.
    func bodyBytes(limit: Int) async throws -> [UInt8] {
        Array(buffer: try await collectBody(limit: limit))
    }
}

extension Duration {
    var milliseconds: Double { Double(components.seconds) * 1000 + Double(components.attoseconds) * 1e-15 }
}

extension HTTPField.Name {
    static let xAPIKey = HTTPField.Name("x-api-key")!
    static let keywardRecordID = HTTPField.Name("x-keyward-record-id")!
    static let keywardOverhead = HTTPField.Name("x-keyward-overhead-ms")!
    static let keywardKey = HTTPField.Name("x-keyward-key-ms")!
    /// On a 429 of Keyward's own rate limits: which limit (`tenant requests_per_minute=60`).
    static let keywardRateLimit = HTTPField.Name("x-keyward-rate-limit")!
}
