import Foundation
import NIOSSL

/// Where a client sends requests: an `http` or `https` origin, the path and query every request
/// target starts with, and (for `https`) the TLS context that verifies the server.
///
/// Made once per configured upstream. Connections are pooled per endpoint, so two endpoints that
/// trust different certificate authorities never share a connection.
public final class HTTPEndpoint: Sendable, CustomStringConvertible {
    public enum Scheme: String, Sendable { case http, https }

    public let scheme: Scheme
    /// The host as written in the URL, without brackets for an IPv6 literal.
    public let host: String
    public let port: Int
    /// What precedes every request's own path: the URL's path (no trailing slash) and query.
    public let targetPrefix: String
    /// The `Host` header value: the port only where it is not the scheme's default.
    let hostHeader: String
    let tls: NIOSSLContext?

    /// Parses `url` (`http://host[:port][/path][?query]` or `https://…`).
    ///
    /// - Parameter caFile: PEM certificates trusted in addition to the system's roots (https only).
    /// - Throws: ``HTTPClientError`` with code `invalidURL` or `tlsConfiguration`.
    public init(url: String, caFile: String? = nil) throws {
        guard let c = URLComponents(string: url), let s = c.scheme?.lowercased(), let scheme = Scheme(rawValue: s),
              let host = c.host, !host.isEmpty, c.user == nil, c.password == nil, c.fragment == nil else {
            throw HTTPClientError(.invalidURL, "not an http(s) URL with a host (and no user, password or fragment)")
        }
        self.scheme = scheme
        self.host = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        let defaultPort = scheme == .https ? 443 : 80
        port = c.port ?? defaultPort
        guard (1...65535).contains(port) else { throw HTTPClientError(.invalidURL, "the port is out of range") }
        var path = c.percentEncodedPath
        while path.hasSuffix("/") { path.removeLast() }
        targetPrefix = path + (c.percentEncodedQuery.map { "?" + $0 } ?? "")
        let literal = self.host.contains(":") ? "[\(self.host)]" : self.host
        hostHeader = port == defaultPort ? literal : "\(literal):\(port)"
        if scheme == .https {
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.applicationProtocols = ["http/1.1"]
            if let caFile { configuration.additionalTrustRoots = [.file(caFile)] }
            do { tls = try NIOSSLContext(configuration: configuration) } catch {
                throw HTTPClientError(.tlsConfiguration, "cannot set up TLS\(caFile.map { " with the certificates in \($0)" } ?? ""): \(error)")
            }
        } else {
            guard caFile == nil else { throw HTTPClientError(.tlsConfiguration, "a CA file is given for a plain-http URL") }
            tls = nil
        }
    }

    /// The origin, for logs and errors: never a path or query, which may carry a credential.
    public var description: String { "\(scheme.rawValue)://\(hostHeader)" }
}
