import Foundation
import Hummingbird
import KeywardCrypto
import KeywardKeyStores
import KeywardStorage

/// An error answered in OpenAI's shape, `{"error": {"message", "type", "code"}}`. The message is
/// written for the client and never carries plaintext, keys or tokens.
public struct GatewayError: Error, HTTPResponseError, CustomStringConvertible {
    public let status: HTTPResponse.Status
    public let type: String
    public let code: String
    public let message: String
    /// Extra response headers (e.g. `retry-after` from an upstream).
    public var headers: HTTPFields = [:]

    public init(_ status: HTTPResponse.Status, type: String, code: String, _ message: String) {
        self.status = status
        self.type = type
        self.code = code
        self.message = message
    }

    public var description: String { "\(status.code) \(code): \(message)" }

    public static func invalidRequest(_ message: String, code: String = "invalid_request") -> GatewayError {
        GatewayError(.badRequest, type: "invalid_request_error", code: code, message)
    }
    public static let unauthorized = GatewayError(.unauthorized, type: "authentication_error", code: "invalid_api_key",
                                                  "missing or invalid bearer token")
    public static func forbidden(_ message: String, code: String = "permission_denied") -> GatewayError {
        GatewayError(.forbidden, type: "permission_error", code: code, message)
    }
    public static func notFound(_ message: String) -> GatewayError {
        GatewayError(.notFound, type: "invalid_request_error", code: "not_found", message)
    }
    public static let internalError = GatewayError(.internalServerError, type: "server_error", code: "internal_error",
                                                   "the gateway failed to handle the request")

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var fields = headers
        fields[.contentType] = "application/json"
        return Response(status: status, headers: fields, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    var body: [UInt8] {
        struct Body: Encodable {
            struct Inner: Encodable { let message: String; let type: String; let code: String }
            let error: Inner
        }
        return Array((try? JSONEncoder().encode(Body(error: .init(message: message, type: type, code: code)))) ?? Data())
    }

    /// Translates errors from the layers below into what a client may see.
    static func from(_ error: any Error) -> GatewayError {
        switch error {
        case let e as GatewayError:
            return e
        case let e as KeyStoreError:
            switch e.code {
            case .keyDisabled, .keyPendingDeletion:
                return GatewayError(.forbidden, type: "permission_error", code: "key_revoked",
                                    "the tenant's master key is disabled: requests and stored records are refused until it is enabled")
            case .keyDestroyed:
                return GatewayError(.gone, type: "invalid_request_error", code: "key_destroyed",
                                    "the tenant's master key was destroyed: its records are shredded")
            case .accessDenied:
                return GatewayError(.forbidden, type: "permission_error", code: "key_access_denied",
                                    "the key store refused the gateway access to the tenant's master key")
            default:
                return GatewayError(.serviceUnavailable, type: "server_error", code: "key_unavailable",
                                    "the tenant's key store is unavailable (\(e.code))")
            }
        case let e as KeywardCryptoError:
            return GatewayError(.internalServerError, type: "server_error", code: "record_unreadable",
                                "a stored record failed to decrypt (\(e.code)): it was altered or moved")
        case let e as StorageError where e.code == .unavailable:
            return GatewayError(.serviceUnavailable, type: "server_error", code: "storage_unavailable", "the database or blob store is unavailable")
        case let e as any HTTPResponseError where e.status == .contentTooLarge:
            // Raised while the body streams in (NIOTooManyBytesError), before it is all read.
            return GatewayError(.contentTooLarge, type: "invalid_request_error", code: "request_too_large",
                                "the request body is larger than the gateway's limit")
        case let e as any HTTPResponseError:
            return GatewayError(e.status, type: e.status == .notFound ? "invalid_request_error" : "api_error",
                                code: e.status == .notFound ? "not_found" : "http_\(e.status.code)", e.status.reasonPhrase)
        default:
            return internalError
        }
    }
}
