import AsyncHTTPClient
import Crypto
import Foundation
import KeywardCrypto
import KeywardKeyStores
import KeywardStorage
import NIOCore
import NIOHTTP1
import Synchronization

/// File blobs in an S3-compatible object store (AWS S3, MinIO, Ceph RGW), for several replicas:
/// signed with the project's own SigV4 (payload hashed, service `s3`), over async-http-client's
/// shared connection pool. A blob is written with one PutObject when it is small and with a
/// multipart upload (8 MiB parts) otherwise, so neither it nor its upload is ever held whole; it is
/// visible only once the PutObject or the CompleteMultipartUpload succeeds. Reads stream.
public struct S3BlobStore: BlobStore {
    public struct Configuration: Sendable {
        public var bucket: String
        /// Put before every key (`keyward/` …); empty for none.
        public var prefix: String
        public var region: String
        /// Overrides `https://s3.REGION.amazonaws.com` (MinIO, Ceph, moto); addressed path-style.
        public var endpoint: String?
        /// Bytes per part of a multipart upload (S3's minimum is 5 MiB).
        public var partSize: Int

        public init(bucket: String, prefix: String = "", region: String, endpoint: String? = nil, partSize: Int = 8 << 20) {
            self.bucket = bucket
            self.prefix = prefix
            self.region = region
            self.endpoint = endpoint
            self.partSize = partSize
        }
    }

    public let configuration: Configuration
    let signer: SigV4
    let http: HTTPClient
    /// One request's deadline (a part of 8 MiB included).
    static let timeout: TimeAmount = .seconds(60)

    public init(configuration: Configuration, credentials: AWSCredentials, http: HTTPClient = .shared) throws {
        guard !configuration.bucket.isEmpty, configuration.bucket.utf8.allSatisfy({ $0 != UInt8(ascii: "/") }) else {
            throw StorageError(.invalidArgument, "blobs.bucket must be a bucket name")
        }
        guard configuration.partSize >= 5 << 20 else { throw StorageError(.invalidArgument, "an S3 part holds at least 5 MiB") }
        self.configuration = configuration
        signer = SigV4(credentials: credentials, region: configuration.region, service: "s3")
        self.http = http
    }

    /// The bucket's URL: path-style on a given endpoint, virtual-hosted on AWS.
    var base: String {
        if let endpoint = configuration.endpoint {
            return (endpoint.hasSuffix("/") ? String(endpoint.dropLast()) : endpoint) + "/" + configuration.bucket
        }
        return "https://\(configuration.bucket).s3.\(configuration.region).amazonaws.com"
    }

    /// The bucket itself, for listings.
    func bucketURL(_ query: String) -> String {
        (configuration.endpoint == nil ? base + "/?" : base + "?") + query
    }

    func url(_ key: String, query: String = "") -> String {
        base + "/" + S3Call.encode(configuration.prefix + key) + (query.isEmpty ? "" : "?" + query)
    }

    var call: S3Call { S3Call(signer: signer, http: http) }

    public func upload(_ key: String) async throws -> any BlobUpload {
        S3Upload(store: self, key: key)
    }

    public func download(_ key: String) async throws -> any BlobDownload {
        let response = try await call.stream("GET", url(key), operation: "GetObject")
        let size = response.headers.first(name: "content-length").flatMap(Int.init) ?? 0
        return S3Download(size: size, body: response.body)
    }

    public func delete(_ key: String) async throws {
        _ = try await call.send("DELETE", url(key), operation: "DeleteObject", accept: [200, 204, 404])
    }

    public func sweepable(under below: String, before time: Int64, abandoned: Int64) async throws -> [String] {
        let stored = configuration.prefix
        let prefix = stored + below
        // Multipart uploads begun before `abandoned` and never completed.
        var marker = ""
        while true {
            let (_, xml) = try await call.send("GET", bucketURL("prefix=\(S3Call.encode(prefix, keepSlash: false))&uploads" + marker),
                                               operation: "ListMultipartUploads")
            for upload in S3XML.elements("Upload", in: xml) {
                guard let key = S3XML.value("Key", in: upload), let id = S3XML.value("UploadId", in: upload),
                      let started = S3XML.value("Initiated", in: upload).flatMap(S3XML.milliseconds), started < abandoned else { continue }
                _ = try await call.send("DELETE", base + "/" + S3Call.encode(key) + "?uploadId=" + S3Call.encode(id, keepSlash: false),
                                        operation: "AbortMultipartUpload", accept: [200, 204, 404])
            }
            guard S3XML.value("IsTruncated", in: xml) == "true", let k = S3XML.value("NextKeyMarker", in: xml),
                  let u = S3XML.value("NextUploadIdMarker", in: xml) else { break }
            marker = "&key-marker=\(S3Call.encode(k, keepSlash: false))&upload-id-marker=\(S3Call.encode(u, keepSlash: false))"
        }
        var keys: [String] = []
        var token: String?
        repeat {
            var query = "list-type=2&prefix=\(S3Call.encode(prefix, keepSlash: false))"
            if let token { query += "&continuation-token=\(S3Call.encode(token, keepSlash: false))" }
            let (_, xml) = try await call.send("GET", bucketURL(query), operation: "ListObjectsV2")
            for object in S3XML.elements("Contents", in: xml) {
                guard let key = S3XML.value("Key", in: object), key.hasPrefix(prefix),
                      let modified = S3XML.value("LastModified", in: object).flatMap(S3XML.milliseconds), modified < time else { continue }
                keys.append(String(key.dropFirst(stored.count)))
            }
            token = S3XML.value("IsTruncated", in: xml) == "true" ? S3XML.value("NextContinuationToken", in: xml) : nil
        } while token != nil
        return keys.sorted()
    }
}

/// One blob being written: appends are kept, and each ``flush()`` sends the whole parts they
/// fill; the last part (or, for a small blob, the whole of it) goes at commit. Used by one
/// request at a time, whose sealer appends while its loop flushes.
final class S3Upload: BlobUpload, @unchecked Sendable {
    let store: S3BlobStore
    let key: String
    /// What appends kept and flushes have not sent: appends (an upload's sealer, on a pool
    /// thread) and flushes (its request's loop) run side by side.
    private let buffer = Mutex<[UInt8]>([])
    private var uploadID: String?
    private var etags: [String] = []

    init(store: S3BlobStore, key: String) {
        self.store = store
        self.key = key
    }

    func append(_ bytes: UnsafeRawBufferPointer) throws {
        buffer.withLock { $0.append(contentsOf: bytes) }
    }

    func flush() async throws {
        let size = store.configuration.partSize
        // Only flushes take from the front: a part leaves the buffer once it is sent.
        while let part = buffer.withLock({ $0.count >= size ? Array($0[..<size]) : nil }) {
            try await send(part)
            buffer.withLock { $0.removeFirst(size) }
        }
    }

    func commit() async throws {
        let rest = buffer.withLock { b in
            defer { b = [] }
            return b
        }
        guard let uploadID else {
            _ = try await store.call.send("PUT", store.url(key), body: rest, operation: "PutObject")
            return
        }
        if !rest.isEmpty || etags.isEmpty { try await send(rest) }
        var xml = "<CompleteMultipartUpload>"
        for (i, etag) in etags.enumerated() { xml += "<Part><PartNumber>\(i + 1)</PartNumber><ETag>\(S3XML.escape(etag))</ETag></Part>" }
        xml += "</CompleteMultipartUpload>"
        let (_, answer) = try await store.call.send("POST", store.url(key, query: "uploadId=\(S3Call.encode(uploadID, keepSlash: false))"),
                                                    body: Array(xml.utf8), operation: "CompleteMultipartUpload")
        // S3 may answer 200 with an error inside when the completion fails late.
        if S3XML.elements("Error", in: answer).first != nil {
            throw StorageError(.unavailable, "S3 CompleteMultipartUpload failed: \(S3XML.value("Code", in: answer) ?? "error")")
        }
        self.uploadID = nil
    }

    func abort() async {
        buffer.withLock { $0 = [] }
        guard let uploadID else { return }
        self.uploadID = nil
        // Best effort: one left behind is aborted by the sweep.
        _ = try? await store.call.send("DELETE", store.url(key, query: "uploadId=\(S3Call.encode(uploadID, keepSlash: false))"),
                                       operation: "AbortMultipartUpload", accept: [200, 204, 404])
    }

    private func send(_ part: [UInt8]) async throws {
        if uploadID == nil {
            let (_, xml) = try await store.call.send("POST", store.url(key, query: "uploads"), operation: "CreateMultipartUpload")
            guard let id = S3XML.value("UploadId", in: xml) else { throw StorageError(.unavailable, "S3 CreateMultipartUpload gave no upload id") }
            uploadID = id
        }
        let query = "partNumber=\(etags.count + 1)&uploadId=\(S3Call.encode(uploadID!, keepSlash: false))"
        let (headers, _) = try await store.call.send("PUT", store.url(key, query: query), body: part, operation: "UploadPart")
        guard let etag = headers.first(name: "etag") else { throw StorageError(.unavailable, "S3 UploadPart gave no ETag") }
        etags.append(etag)
    }
}

/// One blob being read from a GetObject's streamed body.
final class S3Download: BlobDownload, @unchecked Sendable {
    let size: Int
    private var iterator: HTTPClientResponse.Body.AsyncIterator?
    private var rest = ByteBuffer()

    init(size: Int, body: HTTPClientResponse.Body) {
        self.size = size
        iterator = body.makeAsyncIterator()
    }

    func next(limit: Int) async throws -> [UInt8]? {
        if rest.readableBytes == 0 {
            guard let chunk = try await iterator?.next() else {
                iterator = nil
                return nil
            }
            rest = chunk
        }
        return rest.readBytes(length: min(limit, rest.readableBytes))
    }

    /// Dropping the iterator ends the transfer.
    func close() { iterator = nil }
}

/// Signed S3 calls with retries: one attempt more for a failure worth retrying (5xx, 429, no
/// answer), after a short jittered pause. An error names the operation and S3's error code, never
/// a key's bytes.
struct S3Call {
    let signer: SigV4
    let http: HTTPClient
    static let attempts = 3

    /// Sends a request and collects its answer (XML, at most 1 MiB): (headers, body).
    func send(_ method: String, _ url: String, body: [UInt8] = [], operation: String,
              accept: Set<UInt> = [200, 204]) async throws -> (HTTPHeaders, String) {
        let hash = Hex.encode(SHA256.hash(data: body))
        return try await retrying(operation) {
            let response = try await http.execute(try request(method, url, body: body, payloadHash: hash), timeout: S3BlobStore.timeout)
            let text = String(decoding: try await response.body.collect(upTo: 1 << 20).readableBytesView, as: UTF8.self)
            guard accept.contains(response.status.code) else { throw Self.failure(operation, status: response.status, xml: text) }
            return (response.headers, text)
        }
    }

    /// Sends a GET whose body the caller streams.
    func stream(_ method: String, _ url: String, operation: String) async throws -> HTTPClientResponse {
        let hash = Hex.encode(SHA256.hash(data: [UInt8]()))
        return try await retrying(operation) {
            let response = try await http.execute(try request(method, url, body: [], payloadHash: hash), timeout: S3BlobStore.timeout)
            guard response.status == .ok else {
                let text = String(decoding: try await response.body.collect(upTo: 1 << 20).readableBytesView, as: UTF8.self)
                throw Self.failure(operation, status: response.status, xml: text)
            }
            return response
        }
    }

    /// A failure another attempt may mend.
    private struct Retryable: Error { let error: StorageError }

    /// Runs `attempt` until it succeeds, fails for good, or has been tried ``attempts`` times;
    /// a short jittered pause between attempts.
    private func retrying<T>(_ operation: String, _ attempt: () async throws -> T) async throws -> T {
        var n = 0
        while true {
            n += 1
            do {
                return try await attempt()
            } catch let r as Retryable {
                guard n < Self.attempts else { throw r.error }
            } catch let e as StorageError {
                throw e
            } catch {
                guard n < Self.attempts else {
                    throw StorageError(.unavailable, "S3 \(operation): the object store is unreachable (\(type(of: error)))")
                }
            }
            try await Task.sleep(for: .milliseconds(Int.random(in: 50...(100 << n))))
        }
    }

    private func request(_ method: String, _ url: String, body: [UInt8], payloadHash: String) throws -> HTTPClientRequest {
        let headers = try signer.sign(method: method, url: url, headers: [("x-amz-content-sha256", payloadHash)],
                                      payloadHash: payloadHash, date: Date())
        var request = HTTPClientRequest(url: url)
        request.method = HTTPMethod(rawValue: method)
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if !body.isEmpty || method == "PUT" || method == "POST" {
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        return request
    }

    /// The error of a refused request: retryable for a 5xx or 429 answer.
    static func failure(_ operation: String, status: HTTPResponseStatus, xml: String) -> any Error {
        let code = S3XML.value("Code", in: xml) ?? "HTTP \(status.code)"
        // A missing object is "not found"; a missing bucket (NoSuchBucket, also 404) is the store's fault.
        let missing = status == .notFound && (code == "NoSuchKey" || code == "HTTP 404")
        let error = StorageError(missing ? .notFound : .unavailable, "S3 \(operation): \(code)")
        return status.code >= 500 || status == .tooManyRequests ? Retryable(error: error) : error
    }

    /// A key or query value percent-encoded as S3 expects (RFC 3986 unreserved kept; `/` kept in keys).
    static func encode(_ text: String, keepSlash: Bool = true) -> String {
        var out = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            case UInt8(ascii: "/") where keepSlash:
                out += "/"
            default:
                out += String(format: "%%%02X", byte)
            }
        }
        return out
    }
}

/// The few values read from S3's XML answers: elements found by name, entities decoded.
enum S3XML {
    /// The contents of each `<name>…</name>` element, in order.
    static func elements(_ name: String, in xml: String) -> [Substring] {
        var out: [Substring] = []
        var rest = xml[...]
        while let open = rest.range(of: "<\(name)>"), let close = rest[open.upperBound...].range(of: "</\(name)>") {
            out.append(rest[open.upperBound..<close.lowerBound])
            rest = rest[close.upperBound...]
        }
        return out
    }

    static func value(_ name: String, in xml: some StringProtocol) -> String? {
        elements(name, in: String(xml)).first.map { unescape(String($0)) }
    }

    static func unescape(_ s: String) -> String {
        s.replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&apos;", with: "'")
            .replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&amp;", with: "&")
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    /// An ISO 8601 time (`2026-12-04T18:00:00.000Z`) in milliseconds since 1970.
    static func milliseconds(_ text: String) -> Int64? {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let d = f.date(from: text) { return Int64(d.timeIntervalSince1970 * 1000) }
        f.formatOptions = [.withInternetDateTime]
        return f.date(from: text).map { Int64($0.timeIntervalSince1970 * 1000) }
    }
}
