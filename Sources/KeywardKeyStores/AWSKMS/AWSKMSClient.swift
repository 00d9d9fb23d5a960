import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Synchronization

/// A small AWS KMS JSON-protocol client: SigV4-signed POSTs over async-http-client's shared,
/// keep-alive connection pool (no TLS handshake per call), one deadline across all attempts,
/// retries with full-jitter back-off on throttling, 5xx and connection failures, and AWS errors
/// mapped to ``KeyStoreError`` codes.
public struct AWSKMSClient: Sendable {
    public struct Configuration: Sendable {
        /// Overrides `https://kms.REGION.amazonaws.com` (from `AWS_ENDPOINT_URL_KMS` or `AWS_ENDPOINT_URL`).
        public var endpoint: String?
        /// The deadline of one call, retries included (`KEYWARD_KMS_TIMEOUT_MS`, default 5000).
        public var timeout: Duration
        /// Attempts after the first, for retryable failures.
        public var maxRetries: Int
        /// Back-off before retry n is uniform in 0 ..< base × 2ⁿ (capped at 2 s).
        public var backoffBase: Duration

        public init(endpoint: String? = nil, timeout: Duration = .seconds(5), maxRetries: Int = 3, backoffBase: Duration = .milliseconds(50)) {
            self.endpoint = endpoint
            self.timeout = timeout
            self.maxRetries = maxRetries
            self.backoffBase = backoffBase
        }

        public static func fromEnvironment(_ env: [String: String] = ProcessInfo.processInfo.environment) -> Configuration {
            var c = Configuration()
            c.endpoint = env["AWS_ENDPOINT_URL_KMS"] ?? env["AWS_ENDPOINT_URL"]
            if let ms = env["KEYWARD_KMS_TIMEOUT_MS"].flatMap(Int.init), ms > 0 { c.timeout = .milliseconds(ms) }
            return c
        }
    }

    public let credentials: AWSCredentials
    public let configuration: Configuration
    private let http: HTTPClient
    /// One signer per region, so its derived signing key is reused all day.
    private let signers = Signers()

    private final class Signers: Sendable {
        let byRegion = Mutex<[String: SigV4]>([:])
    }

    public init(credentials: AWSCredentials, configuration: Configuration, http: HTTPClient = .shared) {
        self.credentials = credentials
        self.configuration = configuration
        self.http = http
    }

    private func signer(region: String) -> SigV4 {
        signers.byRegion.withLock { signers in
            if let signer = signers[region] { return signer }
            let signer = SigV4(credentials: credentials, region: region, service: "kms")
            signers[region] = signer
            return signer
        }
    }

    public func endpoint(region: String) -> String {
        configuration.endpoint ?? "https://kms.\(region).amazonaws.com/"
    }

    /// Calls `TrentService.<operation>` and returns the decoded JSON object.
    public func call(_ operation: String, region: String, _ parameters: [String: Any]) async throws -> [String: Any] {
        let body = Array(try JSONSerialization.data(withJSONObject: parameters))
        let url = endpoint(region: region)
        let signer = signer(region: region)
        let retrying = RemoteCall(timeout: configuration.timeout, maxRetries: configuration.maxRetries, backoffBase: configuration.backoffBase)
        return try await retrying.run(late: "AWS KMS did not answer \(operation) within \(configuration.timeout)") { remaining in
            try await attemptCall(operation, url: url, body: body, signer: signer, timeout: remaining)
        }
    }

    private typealias Failure = RemoteCall.Failure

    private func attemptCall(_ operation: String, url: String, body: [UInt8], signer: SigV4, timeout: Duration) async throws -> [String: Any] {
        let headers = try signer.sign(
            method: "POST", url: url,
            headers: [("Content-Type", "application/x-amz-json-1.1"), ("X-Amz-Target", "TrentService.\(operation)")],
            body: body, date: Date())
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        request.body = .bytes(ByteBuffer(bytes: body))
        let (status, data) = try await RemoteCall.send(request, with: http, timeout: timeout, store: "AWS KMS")
        let parsed = try? JSONSerialization.jsonObject(with: Data(data), options: .fragmentsAllowed)
        let json = parsed as? [String: Any]
        guard status == .ok else {
            throw Self.failure(status: status, json: json, operation: operation)
        }
        // EnableKey and the like answer 200 with no body (moto: with `null`).
        if data.isEmpty || parsed is NSNull { return [:] }
        guard let json else {
            throw Failure(error: KeyStoreError(.keyUnavailable, "AWS KMS answered \(operation) with something that is not JSON"), retryable: false)
        }
        return json
    }

    /// AWS error types to our codes. Messages from KMS name keys and states, never key material.
    private static func failure(status: HTTPResponseStatus, json: [String: Any]?, operation: String) -> Failure {
        let type = ((json?["__type"] as? String) ?? "").split(separator: "#").last.map(String.init) ?? ""
        let message = (json?["message"] as? String) ?? (json?["Message"] as? String) ?? "HTTP \(status.code)"
        let reason = "AWS KMS \(operation): \(type.isEmpty ? "error" : type): \(message)"
        switch type {
        case "NotFoundException":
            return Failure(error: KeyStoreError(.keyNotFound, reason), retryable: false)
        case "DisabledException":
            return Failure(error: KeyStoreError(.keyDisabled, reason), retryable: false)
        case "KMSInvalidStateException":
            let pending = message.lowercased().contains("pending deletion") || message.contains("PendingDeletion")
            return Failure(error: KeyStoreError(pending ? .keyPendingDeletion : .keyDisabled, reason), retryable: false)
        case "AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException",
             "IncompleteSignature", "MissingAuthenticationToken", "ExpiredTokenException":
            return Failure(error: KeyStoreError(.accessDenied, reason), retryable: false)
        case "ThrottlingException", "LimitExceededException", "TooManyRequestsException":
            return Failure(error: KeyStoreError(.throttled, reason), retryable: true)
        case "InvalidCiphertextException", "IncorrectKeyException":
            return Failure(error: KeyStoreError(.invalidCiphertext, reason), retryable: false)
        case "KMSInternalException", "DependencyTimeoutException", "KeyUnavailableException", "ServiceUnavailableException":
            return Failure(error: KeyStoreError(.keyUnavailable, reason), retryable: true)
        default:
            if status == .tooManyRequests { return Failure(error: KeyStoreError(.throttled, reason), retryable: true) }
            if status.code >= 500 { return Failure(error: KeyStoreError(.keyUnavailable, reason), retryable: true) }
            return Failure(error: KeyStoreError(.invalidArgument, reason), retryable: false)
        }
    }
}
