import Crypto
import KeywardCrypto
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// AWS Signature Version 4 on swift-crypto, canonicalising exactly as botocore's `SigV4Auth` does
/// (which the tests check byte for byte): the path is normalised and percent-encoded again, query
/// pairs are sorted as given, header values are whitespace-collapsed, the host drops default ports.
public struct SigV4: Sendable, CustomReflectable {
    public let credentials: AWSCredentials
    public let region: String
    public let service: String
    /// The derived signing key changes once a day: keep the last one (day, key).
    private let signingKeys = SigningKeyCache()

    public init(credentials: AWSCredentials, region: String, service: String) {
        self.credentials = credentials
        self.region = region
        self.service = service
    }

    /// Reflection shows where it signs, never the credentials or the derived keys.
    public var customMirror: Mirror { Mirror(self, children: ["region": region, "service": service], displayStyle: .struct) }

    final class SigningKeyCache: Sendable {
        let last = Mutex<(day: String, key: SymmetricKey)?>(nil)
    }

    func signingKey(day: String) -> SymmetricKey {
        if let cached = signingKeys.last.withLock({ $0 }), cached.day == day { return cached.key }
        // "AWS4" and the secret, assembled in memory that is wiped (SymmetricKey wipes its own copy).
        let prefix = Array("AWS4".utf8)
        let secret = credentials.secretAccessKey
        let seed = SecretBytes(count: prefix.count + secret.count) { out in
            out.copyBytes(from: prefix)
            secret.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: out[prefix.count...]).copyMemory(from: $0) }
        }
        var key = seed.withUnsafeBytes { SymmetricKey(data: $0) }
        for part in [day, region, service, "aws4_request"] {
            key = SymmetricKey(data: Array(HMAC<SHA256>.authenticationCode(for: Array(part.utf8), using: key)))
        }
        signingKeys.last.withLock { $0 = (day, key) }
        return key
    }

    /// Headers that never take part in a signature (botocore's list).
    static let unsignedHeaders: Set<String> = [
        "connection", "expect", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
        "transfer-encoding", "upgrade", "user-agent", "x-amzn-trace-id",
    ]

    /// Signs a request. `url` carries an already percent-encoded path and query. Returns the
    /// request's headers with `X-Amz-Date`, `X-Amz-Security-Token` (with a session token) and
    /// `Authorization` set.
    public func sign(method: String, url: String, headers: [(String, String)], body: [UInt8], date: Date) throws -> [(String, String)] {
        try sign(method: method, url: url, headers: headers, payloadHash: Self.hex(SHA256.hash(data: body)), date: date)
    }

    /// Signs a request whose payload's SHA-256 (hex) is given, or `UNSIGNED-PAYLOAD`. For the
    /// `s3` service the path is signed as it is sent (S3 keys are not normalised or encoded
    /// twice, as botocore's `S3SigV4Auth` does); the caller sends `x-amz-content-sha256` itself.
    public func sign(method: String, url: String, headers: [(String, String)], payloadHash: String, date: Date) throws -> [(String, String)] {
        guard let parts = URLComponents(string: url), let host = parts.host else {
            throw KeyStoreError(.invalidArgument, "not a URL: \(url)")
        }
        let timestamp = Self.timestamp(date)
        let replaced: Set<String> = ["authorization", "x-amz-date", "x-amz-security-token"]
        var out = headers.filter { !replaced.contains($0.0.lowercased()) }
        out.append(("X-Amz-Date", timestamp))
        // Header values are strings: this copy lives for the request only.
        if let token = credentials.sessionToken { out.append(("X-Amz-Security-Token", token.exposed())) }

        // Lower-case names, values whitespace-collapsed, repeated names joined with commas.
        var canonical: [String: [String]] = [:]
        for (name, value) in out where !Self.unsignedHeaders.contains(name.lowercased()) {
            canonical[name.lowercased(), default: []].append(value.split(whereSeparator: \.isWhitespace).joined(separator: " "))
        }
        if canonical["host"] == nil {
            var h = host.lowercased()
            if h.contains(":") { h = "[\(h)]" }
            let defaultPort = parts.scheme == "https" ? 443 : parts.scheme == "http" ? 80 : nil
            if let port = parts.port, port != defaultPort { h += ":\(port)" }
            canonical["host"] = [h]
        }
        let names = canonical.keys.sorted()
        let signedHeaders = names.joined(separator: ";")
        let canonicalHeaders = names.map { "\($0):\(canonical[$0]!.joined(separator: ","))" }.joined(separator: "\n")
        let request = [
            method.uppercased(),
            service == "s3" ? (parts.percentEncodedPath.isEmpty ? "/" : parts.percentEncodedPath)
                : Self.percentEncode(Self.removeDotSegments(parts.percentEncodedPath), keep: "/~"),
            Self.canonicalQuery(parts.percentEncodedQuery),
            canonicalHeaders + "\n",
            signedHeaders,
            payloadHash,
        ].joined(separator: "\n")

        let day = String(timestamp.prefix(8))
        let scope = "\(day)/\(region)/\(service)/aws4_request"
        let stringToSign = ["AWS4-HMAC-SHA256", timestamp, scope, Self.hex(SHA256.hash(data: Array(request.utf8)))].joined(separator: "\n")
        let signature = Self.hex(HMAC<SHA256>.authenticationCode(for: Array(stringToSign.utf8), using: signingKey(day: day)))
        out.append(("Authorization", "AWS4-HMAC-SHA256 Credential=\(credentials.accessKeyID)/\(scope), SignedHeaders=\(signedHeaders), Signature=\(signature)"))
        return out
    }

    /// `YYYYMMDDTHHMMSSZ` in UTC.
    static func timestamp(_ date: Date) -> String {
        var t = time_t(date.timeIntervalSince1970.rounded(.down))
        var c = tm()
        gmtime_r(&t, &c)
        var out: [UInt8] = []
        func digits(_ v: Int32, _ n: Int) {
            var v = v, d = [UInt8](repeating: 0x30, count: n)
            for i in (0..<n).reversed() { d[i] = 0x30 + UInt8(v % 10); v /= 10 }
            out += d
        }
        digits(c.tm_year + 1900, 4); digits(c.tm_mon + 1, 2); digits(c.tm_mday, 2)
        out.append(UInt8(ascii: "T"))
        digits(c.tm_hour, 2); digits(c.tm_min, 2); digits(c.tm_sec, 2)
        out.append(UInt8(ascii: "Z"))
        return String(decoding: out, as: UTF8.self)
    }

    /// Query pairs as given (already encoded), sorted by key, then value.
    static func canonicalQuery(_ query: String?) -> String {
        guard let query, !query.isEmpty else { return "" }
        let pairs: [(String, String)] = query.split(separator: "&", omittingEmptySubsequences: false).map { pair in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            return (String(parts[0]), parts.count > 1 ? String(parts[1]) : "")
        }
        return pairs.sorted { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }.map { "\($0.0)=\($0.1)" }.joined(separator: "&")
    }

    /// RFC 3986 dot-segment removal, also folding repeated slashes (as AWS requires); "" is "/".
    static func removeDotSegments(_ path: String) -> String {
        guard !path.isEmpty else { return "/" }
        var output: [Substring] = []
        for segment in path.split(separator: "/", omittingEmptySubsequences: false) where !segment.isEmpty && segment != "." {
            if segment == ".." {
                if !output.isEmpty { output.removeLast() }
            } else {
                output.append(segment)
            }
        }
        let first = path.hasPrefix("/") ? "/" : ""
        let last = path.hasSuffix("/") && !output.isEmpty ? "/" : ""
        return first + output.joined(separator: "/") + last
    }

    /// Percent-encodes every byte but unreserved characters and those in `keep` (as Python's quote).
    private static let unreserved = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~".utf8)

    static func percentEncode(_ text: String, keep: String) -> String {
        let safe = keep.isEmpty ? unreserved : unreserved.union(keep.utf8)
        var out: [UInt8] = []
        for byte in text.utf8 {
            if safe.contains(byte) {
                out.append(byte)
            } else {
                out += [UInt8(ascii: "%"), upperHex[Int(byte >> 4)], upperHex[Int(byte & 0xF)]]
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static let upperHex = Array("0123456789ABCDEF".utf8)

    static func hex<D: Sequence>(_ bytes: D) -> String where D.Element == UInt8 { Hex.encode(bytes) }
}
