import KeywardErrors

/// An error of ``PooledHTTPClient``. The reason names what failed, never a header or body byte.
public struct HTTPClientError: CodedError {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Backing: String, Hashable, Sendable {
            case invalidURL = "invalid_url"
            case tlsConfiguration = "tls_configuration"
            case connectFailed = "connect_failed"
            case connectTimeout = "connect_timeout"
            case deadlineExceeded = "deadline_exceeded"
            case readTimeout = "read_timeout"
            case connectionClosed = "connection_closed"
            case protocolError = "protocol_error"
            case bodyTooLarge = "body_too_large"
            case shutDown = "shut_down"
        }
        private let backing: Backing
        private init(_ backing: Backing) { self.backing = backing }

        public static let invalidURL = Code(.invalidURL)
        /// The TLS context cannot be made (a CA file that does not load).
        public static let tlsConfiguration = Code(.tlsConfiguration)
        /// The TCP connection or the TLS handshake failed (refused, unreachable, certificate not trusted).
        public static let connectFailed = Code(.connectFailed)
        public static let connectTimeout = Code(.connectTimeout)
        /// No response head before the request's deadline.
        public static let deadlineExceeded = Code(.deadlineExceeded)
        /// A response body stopped arriving for longer than the read timeout.
        public static let readTimeout = Code(.readTimeout)
        /// The server closed the connection before the response was complete.
        public static let connectionClosed = Code(.connectionClosed)
        /// The server's bytes are not an HTTP/1.1 response.
        public static let protocolError = Code(.protocolError)
        /// A collected body grew past the caller's limit.
        public static let bodyTooLarge = Code(.bodyTooLarge)
        public static let shutDown = Code(.shutDown)

        public var description: String { backing.rawValue }
    }

    public let code: Code
    public let reason: String

    public init(_ code: Code, _ reason: String) {
        self.code = code
        self.reason = reason
    }
}
