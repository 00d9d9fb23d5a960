import KeywardBlockingIO
import Crypto
import Foundation
@testable import KeywardHTTP
import KeywardTesting
import NIOCore
import NIOHTTP1
import NIOPosix
import Testing

/// The upstream client against nginx (the real peer: keep-alive, its own connection limits,
/// static files, TLS with a certificate from a test CA).
/// nginx with three servers (one per test), and the files it serves (made once).
final class NginxFixture: Sendable {
    let port = Loopback.freePort()
    let tlsPort = Loopback.freePort()
    /// A server that allows two requests per connection.
    let shortPort = Loopback.freePort()
    let nginx: NginxPeer
    let files: Files
    var large: [UInt8] { files.large }

    /// The certificates and the large file, made once for the suite.
    final class Files: Sendable {
        let folder: TemporaryDirectory
        let certificates: TestCertificates
        /// 8 MiB of random bytes, served as a static file.
        let large: [UInt8]
        var path: String { folder.path }

        init() throws {
            folder = try TemporaryDirectory(prefix: "keyward-http")
            certificates = try TestCertificates(in: folder)
            large = Array(try FileHandle(forReadingFrom: URL(fileURLWithPath: "/dev/urandom")).read(upToCount: 8 << 20) ?? Data())
            try Data(large).write(to: URL(fileURLWithPath: folder.file("large.bin")))
        }

        static let shared = Result { try Files() }
    }

    init() throws {
        files = try Files.shared.get()
        let certificates = files.certificates
        let locations = """
                location = /who { return 200 "$connection $connection_requests"; }
                location = /length { return 200 "$request_method $content_length"; }
                location = /missing { add_header x-keyward-test yes always; return 404 '{"error":"none"}'; }
                location = /large.bin { root \(files.path); }
            """
        nginx = try NginxPeer(servers: """
            server {
                listen 127.0.0.1:\(port);
                keepalive_requests 1000;
                \(locations)
            }
            server {
                listen 127.0.0.1:\(shortPort);
                keepalive_requests 2;
                \(locations)
            }
            server {
                listen 127.0.0.1:\(tlsPort) ssl;
                ssl_certificate \(certificates.certificateFile);
                ssl_certificate_key \(certificates.keyFile);
                \(locations)
            }
            """, ports: [port, shortPort, tlsPort])
    }
}

/// The upstream client against nginx (the real peer: keep-alive, its own connection limits,
/// static files, TLS with a certificate from a test CA).
@Suite(.serialized) final class PooledHTTPClientTests {
    let fixture: NginxFixture
    var port: Int { fixture.port }
    var tlsPort: Int { fixture.tlsPort }
    var shortPort: Int { fixture.shortPort }
    var files: TemporaryDirectory { fixture.files.folder }
    var certificates: TestCertificates { fixture.files.certificates }
    var large: [UInt8] { fixture.large }
    /// A client per test, so that each starts with no pooled connection.
    let client = PooledHTTPClient()

    // Making certificates and starting nginx block: off the threads the other tests' tasks share.
    init() async throws { fixture = try await BlockingIO.run { try NginxFixture() } }

    deinit {
        let c = client
        Task { await c.shutdown() }
    }

    func get(_ endpoint: HTTPEndpoint, _ path: String) async throws -> (PooledHTTPClient.Response, String) {
        try await Self.get(client, endpoint, path)
    }

    static func get(_ client: PooledHTTPClient, _ endpoint: HTTPEndpoint, _ path: String) async throws -> (PooledHTTPClient.Response, String) {
        let r = try await client.execute(.GET, endpoint, target: path, deadline: .now() + .seconds(10), readTimeout: .seconds(10))
        return (r, String(buffer: try await r.body.collect(upTo: 1 << 20)))
    }

    @Test func sequentialRequestsShareOneKeepAliveConnection() async throws {
        let endpoint = try HTTPEndpoint(url: "http://127.0.0.1:\(port)")
        var seen: [String] = []
        for _ in 0..<5 { seen.append(try await get(endpoint, "/who").1) }
        let connection = seen[0].split(separator: " ")[0]
        #expect(seen == (1...5).map { "\(connection) \($0)" })
    }

    @Test func aServerThatEndsTheConnectionCostsNoRequest() async throws {
        // nginx answers the last request it allows on a connection with "Connection: close".
        let endpoint = try HTTPEndpoint(url: "http://127.0.0.1:\(shortPort)")
        var seen: [Substring] = []
        for _ in 0..<6 { seen.append(try await get(endpoint, "/who").1.split(separator: " ")[1]) }
        #expect(seen == ["1", "2", "1", "2", "1", "2"])
        // A request that asks for the close itself gets it too.
        for _ in 0..<2 {
            let r = try await client.execute(.GET, endpoint, target: "/who", headers: [("connection", "close")],
                                             deadline: .now() + .seconds(5), readTimeout: .seconds(5))
            #expect(String(buffer: try await r.body.collect(upTo: 1024)).hasSuffix(" 1"))
        }
    }

    @Test func concurrentRequestsEachGetAConnectionAndAllAreReusedAfterwards() async throws {
        let endpoint = try HTTPEndpoint(url: "http://127.0.0.1:\(port)")
        let first = try await withThrowingTaskGroup(of: String.self) { group in
            let client = self.client
            for _ in 0..<16 { group.addTask { try await Self.get(client, endpoint, "/who").1 } }
            return try await group.reduce(into: [String]()) { $0.append($1) }
        }
        #expect(first.count == 16)
        let before = Set(first.map { $0.split(separator: " ")[0] })
        for _ in 0..<16 {
            let again = try await get(endpoint, "/who").1
            #expect(before.contains(again.split(separator: " ")[0]), "a request opened a new connection while idle ones waited")
        }
    }

    @Test func statusHeadersAndBodyComeThroughAndTheRequestBodyIsSent() async throws {
        let endpoint = try HTTPEndpoint(url: "http://127.0.0.1:\(port)/")
        let (missing, text) = try await get(endpoint, "/missing")
        #expect(missing.status == .notFound)
        #expect(missing.headers.first(name: "x-keyward-test") == "yes")
        #expect(text == #"{"error":"none"}"#)
        let body = ByteBuffer(repeating: 0x61, count: 12_345)
        let r = try await client.execute(.POST, endpoint, target: "/length", headers: [("content-type", "text/plain")], body: body,
                                         deadline: .now() + .seconds(5), readTimeout: .seconds(5))
        #expect(String(buffer: try await r.body.collect(upTo: 1024)) == "POST 12345")
    }

    @Test func aLargeBodyReadSlowlyArrivesWholeAndTooLargeIsRefused() async throws {
        let endpoint = try HTTPEndpoint(url: "http://127.0.0.1:\(port)")
        let r = try await client.execute(.GET, endpoint, target: "/large.bin", deadline: .now() + .seconds(10), readTimeout: .seconds(10))
        var hash = SHA256()
        var parts = 0, total = 0
        for try await part in r.body {
            parts += 1
            total += part.readableBytes
            part.withUnsafeReadableBytes { hash.update(bufferPointer: $0) }
            if parts % 16 == 0 { try await Task.sleep(for: .milliseconds(2)) }  // a slow reader: the connection must wait for it
        }
        #expect(total == large.count)
        #expect(Array(hash.finalize()) == Array(SHA256.hash(data: large)))
        await #expect(throws: HTTPClientError(.bodyTooLarge, "")) {
            let r = try await self.client.execute(.GET, endpoint, target: "/large.bin", deadline: .now() + .seconds(10), readTimeout: .seconds(10))
            _ = try await r.body.collect(upTo: 1 << 20)
        }
        // The connection that carried the refused body was closed, not returned half-read.
        #expect(try await get(endpoint, "/who").1.hasSuffix(" 1"))
    }

    @Test func aBodyDroppedHalfReadClosesItsConnection() async throws {
        let endpoint = try HTTPEndpoint(url: "http://127.0.0.1:\(port)")
        let used = try await get(endpoint, "/who").1.split(separator: " ")[0]
        do {
            let r = try await client.execute(.GET, endpoint, target: "/large.bin", deadline: .now() + .seconds(10), readTimeout: .seconds(10))
            var iterator = r.body.makeAsyncIterator()
            _ = try await iterator.next()
        }
        try await Task.sleep(for: .milliseconds(50))
        let next = try await get(endpoint, "/who").1
        #expect(next.split(separator: " ")[0] != used, "the half-read connection was reused")
        #expect(next.hasSuffix(" 1"))
    }

    @Test func tlsVerifiesTheServerAgainstTheGivenCA() async throws {
        let trusted = try HTTPEndpoint(url: "https://localhost:\(tlsPort)", caFile: certificates.caFile)
        let (r, text) = try await get(trusted, "/who")
        #expect(r.status == .ok)
        #expect(text.hasSuffix(" 1"))
        #expect(try await get(trusted, "/who").1.hasSuffix(" 2"), "TLS connections are kept alive too")
        // The IP address is in the certificate as well.
        #expect(try await get(try HTTPEndpoint(url: "https://127.0.0.1:\(tlsPort)", caFile: certificates.caFile), "/who").0.status == .ok)
        // Without the CA, the system roots do not trust the test certificate.
        await #expect(throws: HTTPClientError(.connectFailed, "")) {
            _ = try await self.get(try HTTPEndpoint(url: "https://localhost:\(self.tlsPort)"), "/who")
        }
        // nginx answers plain HTTP on its TLS port with a 400 of its own.
        #expect(try await get(try HTTPEndpoint(url: "http://127.0.0.1:\(tlsPort)"), "/who").0.status == .badRequest)
        #expect(throws: HTTPClientError(.tlsConfiguration, "")) {
            _ = try HTTPEndpoint(url: "https://localhost:1", caFile: self.files.file("no-such-ca.pem"))
        }
    }

    @Test func endpointsParseOriginAndPrefix() throws {
        let e = try HTTPEndpoint(url: "https://Example.com/openai/v1/?api-version=1")
        #expect(e.host == "example.com" || e.host == "Example.com")
        #expect(e.port == 443)
        #expect(e.hostHeader.lowercased() == "example.com")
        #expect(e.targetPrefix == "/openai/v1?api-version=1")
        #expect(try HTTPEndpoint(url: "http://[::1]:8080").hostHeader == "[::1]:8080")
        #expect("\(try HTTPEndpoint(url: "http://h:81/secret-path?key=k"))" == "http://h:81")
        for bad in ["ftp://h", "http://", "h:80", "http://u:p@h/", "http://h/#x"] {
            #expect(throws: HTTPClientError(.invalidURL, ""), "\(bad)") { _ = try HTTPEndpoint(url: bad) }
        }
    }

    @Test func refusedConnectionsAndShutdownAreReported() async throws {
        let nobody = try HTTPEndpoint(url: "http://127.0.0.1:\(Loopback.freePort())")
        await #expect(throws: HTTPClientError(.connectFailed, "")) { _ = try await self.get(nobody, "/") }
        let other = PooledHTTPClient()
        await other.shutdown()
        await #expect(throws: HTTPClientError(.shutDown, "")) {
            _ = try await other.execute(.GET, nobody, target: "/", deadline: .now() + .seconds(1), readTimeout: .seconds(1))
        }
    }
}
