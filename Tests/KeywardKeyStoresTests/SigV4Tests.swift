import KeywardBlockingIO
import Crypto
import Foundation
@testable import KeywardKeyStores
import KeywardTesting
import Testing

/// Our SigV4 signatures must equal botocore's, byte for byte, over a corpus of awkward requests.
/// botocore is the oracle (a real peer); the test runs it as a subprocess.
@Suite struct SigV4Tests {
    struct Case: Codable, Sendable {
        var method: String
        var url: String
        var headers: [[String]]
        var body: String  // base64
        var access_key = "AKIDEXAMPLE"
        var secret_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
        var token: String?
        var region = "us-east-1"
        var service = "kms"
        var epoch: Double = 1_440_938_160  // 2015-08-30T12:36:00Z, AWS's example date
    }

    static func corpus() -> [Case] {
        let json = "application/x-amz-json-1.1"
        var cases: [Case] = [
            Case(method: "POST", url: "https://kms.us-east-1.amazonaws.com/", headers: [["Content-Type", json], ["X-Amz-Target", "TrentService.Decrypt"]], body: Data(#"{"KeyId":"k"}"#.utf8).base64EncodedString()),
            Case(method: "GET", url: "https://example.amazonaws.com/", headers: [], body: ""),
            Case(method: "GET", url: "https://example.amazonaws.com/?Param2=value2&Param1=value1", headers: [], body: ""),
            Case(method: "GET", url: "https://example.amazonaws.com/?a=2&a=1&b=&c", headers: [], body: ""),
            Case(method: "GET", url: "https://example.amazonaws.com/?q=%E2%9C%93%20x&s=a%2Fb", headers: [], body: ""),
            Case(method: "GET", url: "https://example.amazonaws.com/path/./to/../file//x/", headers: [], body: ""),
            Case(method: "GET", url: "https://example.amazonaws.com/%E2%9C%93/space%20here/tilde~", headers: [], body: ""),
            Case(method: "PUT", url: "http://127.0.0.1:5000/bucket/key", headers: [["Content-Type", "text/plain"]], body: Data("x".utf8).base64EncodedString()),
            Case(method: "POST", url: "http://localhost:80/", headers: [], body: ""),
            Case(method: "POST", url: "https://KMS.EU-WEST-1.amazonaws.com:443/", headers: [], body: ""),
            Case(method: "POST", url: "https://kms.eu-west-1.amazonaws.com:8443/", headers: [], body: ""),
            Case(method: "GET", url: "https://example.amazonaws.com/", headers: [["My-Header1", "  value1   with    spaces "], ["my-header1", "value2"], ["X-Tab", "a\tb"]], body: ""),
            Case(method: "GET", url: "https://example.amazonaws.com/", headers: [["User-Agent", "ignored/1.0"], ["X-Amzn-Trace-Id", "Root=1"], ["Expect", "100-continue"]], body: ""),
            Case(method: "POST", url: "https://example.amazonaws.com/", headers: [["X-Unicode", "Zürich ∑ 東京"]], body: Data("ünïcödé body".utf8).base64EncodedString()),
            Case(method: "POST", url: "https://example.amazonaws.com/", headers: [["Authorization", "stale"], ["X-Amz-Date", "19990101T000000Z"]], body: ""),
        ]
        var withToken = cases[0]
        withToken.token = "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGd"
        cases.append(withToken)
        var otherRegion = cases[0]
        otherRegion.region = "ap-southeast-2"
        otherRegion.epoch = 1_999_999_999.5
        cases.append(otherRegion)
        var large = cases[0]
        large.body = Data((0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) }).base64EncodedString()
        cases.append(large)
        // S3, as the blob store sends it: path-style and virtual-hosted, multipart queries, the
        // payload's hash in x-amz-content-sha256, a path that KMS-style signing would normalise.
        func s3(_ method: String, _ url: String, _ body: [UInt8] = []) -> Case {
            let hash = SigV4.hex(SHA256.hash(data: body))
            return Case(method: method, url: url, headers: [["x-amz-content-sha256", hash]], body: Data(body).base64EncodedString(),
                        service: "s3")
        }
        cases += [
            s3("PUT", "http://127.0.0.1:5000/keyward-blobs/kw/files/acme/file-0VcrFzmk", Array("frames".utf8)),
            s3("POST", "http://127.0.0.1:5000/keyward-blobs/kw/files/acme/file-1?uploads"),
            s3("PUT", "http://127.0.0.1:5000/keyward-blobs/kw/files/acme/file-1?partNumber=2&uploadId=a%2Bb~c", Array(repeating: 7, count: 70_000)),
            s3("POST", "http://127.0.0.1:5000/keyward-blobs/kw/files/acme/file-1?uploadId=abc",
               Array("<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>&quot;e&quot;</ETag></Part></CompleteMultipartUpload>".utf8)),
            s3("GET", "http://127.0.0.1:5000/keyward-blobs?list-type=2&prefix=kw%2Ffiles%2F&continuation-token=x%3D%3D"),
            s3("GET", "http://127.0.0.1:5000/keyward-blobs?prefix=kw%2F&uploads"),
            s3("DELETE", "https://keyward-blobs.s3.eu-west-1.amazonaws.com/files/acme/file-1?uploadId=u1"),
            s3("GET", "https://keyward-blobs.s3.eu-west-1.amazonaws.com/a//b/./c/%7Ed"),
        ]
        return cases
    }

    static func botocoreSignatures(_ cases: [Case]) throws -> [[String: String]] {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../tests/sigv4/botocore_sign.py").standardized.path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script]
        let input = Pipe(), output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        try process.run()
        let data = try JSONEncoder().encode(cases)
        // Write from another thread: the oracle reads all before it writes, but pipes are small.
        let writer = Thread { input.fileHandleForWriting.write(data); try? input.fileHandleForWriting.close() }
        writer.start()
        let result = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw KeyStoreError(.invalidArgument, "botocore oracle failed (is botocore installed? scripts/test installs it)")
        }
        return try JSONDecoder().decode([[String: String]].self, from: result)
    }

    @Test func signaturesEqualBotocores() async throws {
        let cases = Self.corpus()
        // Python and botocore take a second to start: wait for them off the shared test threads.
        let expected = try await BlockingIO.run { try Self.botocoreSignatures(cases) }
        #expect(expected.count == cases.count)
        for (c, want) in zip(cases, expected) {
            let signer = SigV4(credentials: AWSCredentials(accessKeyID: c.access_key, secretAccessKey: c.secret_key, sessionToken: c.token),
                               region: c.region, service: c.service)
            let body = Array(Data(base64Encoded: c.body)!), sent = c.headers.map { ($0[0], $0[1]) }, date = Date(timeIntervalSince1970: c.epoch)
            let headers = c.service == "s3"
                ? try signer.sign(method: c.method, url: c.url, headers: sent, payloadHash: SigV4.hex(SHA256.hash(data: body)), date: date)
                : try signer.sign(method: c.method, url: c.url, headers: sent, body: body, date: date)
            let got = Dictionary(headers.filter { ["Authorization", "X-Amz-Date", "X-Amz-Security-Token"].contains($0.0) }, uniquingKeysWith: { $1 })
            #expect(got == want, "\(c.method) \(c.url) \(c.headers)")
        }
    }

    /// AWS's published example (IAM ListUsers, SigV4 documentation): a fixed signature.
    @Test func awsDocumentationExample() throws {
        let signer = SigV4(credentials: AWSCredentials(accessKeyID: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
                           region: "us-east-1", service: "iam")
        let headers = try signer.sign(
            method: "GET", url: "https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08",
            headers: [("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")], body: [],
            date: Date(timeIntervalSince1970: 1_440_938_160))
        let authorization = headers.first { $0.0 == "Authorization" }?.1
        #expect(authorization == "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7")
    }

    @Test func credentialsNeverPrintTheSecret() {
        let c = AWSCredentials(accessKeyID: "AKID", secretAccessKey: "s3cr3t", sessionToken: "t0k3n")
        var dumped = ""
        dump(c, to: &dumped)
        var signerDump = ""
        dump(SigV4(credentials: c, region: "r", service: "kms"), to: &signerDump)
        for text in ["\(c)", String(reflecting: c), dumped, signerDump] {
            #expect(!text.contains("s3cr3t") && !text.contains("t0k3n"))
        }
    }

    @Test func sharedCredentialsFile() throws {
        let ini = "[default]\naws_access_key_id = A1\naws_secret_access_key = S1\n\n[other]\n# comment\naws_access_key_id=A2\naws_secret_access_key=S2\naws_session_token = T2\n"
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("creds-\(UUID().uuidString)").path
        try ini.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let other = try AWSCredentials.fromEnvironment(["AWS_SHARED_CREDENTIALS_FILE": path, "AWS_PROFILE": "other"])
        #expect(other.accessKeyID == "A2" && other.secretAccessKey.exposed() == "S2" && other.sessionToken?.exposed() == "T2")
        #expect(try AWSCredentials.fromEnvironment(["AWS_SHARED_CREDENTIALS_FILE": path]).accessKeyID == "A1")
        let env = try AWSCredentials.fromEnvironment(["AWS_ACCESS_KEY_ID": "E", "AWS_SECRET_ACCESS_KEY": "F", "AWS_SHARED_CREDENTIALS_FILE": path])
        #expect(env.accessKeyID == "E")
        #expect(throws: KeyStoreError.self) { try AWSCredentials.fromEnvironment(["AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"]) }
    }
}
