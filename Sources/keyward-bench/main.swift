import AsyncHTTPClient
import Foundation
import KeywardCrypto
import KeywardKeyStores
import KeywardServer
import NIOCore
import NIOPosix

/// Measures what issue 3 names: local-store unwraps per second on one core, and the time the
/// AWS KMS client adds to a call beyond the HTTP round trip itself.
/// And what issue 5 names: audit append latency and re-key (rewrap) throughput.
/// Usage: keyward-bench [local-unwrap N] [kms-overhead N] [audit-append N] [rewrap N] [store-exchange N]
///        [machine-noise SECONDS]
///        keyward-bench seed DATA-FOLDER TENANT EXCHANGES   (test data; with SQLite, while no gateway runs;
///        KEYWARD_DATABASE_URL and KEYWARD_ROOT_KEY_FILE seed a PostgreSQL database instead)
///        keyward-bench bare-proxy PORT UPSTREAM-URL   (Hummingbird and the upstream client alone, serving
///        POST /v1/chat/completions until stopped: the floor of the gateway's stack)
///        keyward-bench bare-files PORT   (Hummingbird alone, taking uploads in and sending downloads out
///        with nothing done to the bytes: the floor of a file's trip)

func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18 }

func cpuSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6 + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
}

func localUnwrap(_ n: Int) async throws {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("keyward-bench-\(UUID().uuidString)").path
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let store = try LocalKeyStore(folder: folder, rootKey: .file("\(folder).root"))
    defer { try? FileManager.default.removeItem(atPath: "\(folder).root") }
    _ = try await store.createKey(name: "bench")
    let context: EncryptionContext = ["keyward:tenant": "bench", "keyward:record": "r-1", "keyward:kind": "prompt"]
    let (_, wrapped) = try await store.generateDataKey(keyID: "bench", length: 32, context: context)
    for _ in 0..<1000 { _ = try await store.decrypt(keyID: "bench", ciphertext: wrapped.ciphertext, context: context) }
    let clock = ContinuousClock(), cpu0 = cpuSeconds()
    let elapsed = try await clock.measure {
        for _ in 0..<n { _ = try await store.decrypt(keyID: "bench", ciphertext: wrapped.ciphertext, context: context) }
    }
    let cpu = cpuSeconds() - cpu0
    print(String(format: "local-unwrap: %d unwraps in %.3f s on one task: %.0f per second (%.2f µs each; %.0f%% of one core busy)",
                 n, seconds(elapsed), Double(n) / seconds(elapsed), seconds(elapsed) / Double(n) * 1e6, cpu / seconds(elapsed) * 100))
}

func kmsOverhead(_ n: Int) async throws {
    let arn = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    let plaintext = Data(repeating: 7, count: 32).base64EncodedString()
    let blob = Data(repeating: 9, count: 184).base64EncodedString()
    let response = Array(#"{"KeyId":"\#(arn)","Plaintext":"\#(plaintext)","EncryptionAlgorithm":"SYMMETRIC_DEFAULT"}"#.utf8)
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let server = try await CannedKMSServer(group: group, response: response)
    let url = "http://127.0.0.1:\(server.port)/"
    let http = HTTPClient(eventLoopGroupProvider: .singleton)
    let store = AWSKMSKeyStore(client: AWSKMSClient(
        credentials: AWSCredentials(accessKeyID: "AKIDEXAMPLE", secretAccessKey: "secret"),
        configuration: .init(endpoint: url), http: http))
    let context: EncryptionContext = ["keyward:tenant": "bench", "keyward:record": "r-1"]
    let body = Array(#"{"KeyId":"\#(arn)","CiphertextBlob":"\#(blob)","EncryptionContext":{"keyward:record":"r-1","keyward:tenant":"bench"}}"#.utf8)

    func raw() async throws {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/x-amz-json-1.1")
        request.headers.add(name: "X-Amz-Target", value: "TrentService.Decrypt")
        request.body = .bytes(ByteBuffer(bytes: body))
        let r = try await http.execute(request, timeout: .seconds(5))
        _ = try await r.body.collect(upTo: 1 << 20)
    }
    func ours() async throws {
        _ = try await store.decrypt(keyID: arn, ciphertext: Array(Data(base64Encoded: blob)!), context: context)
    }
    // Warm both paths, then alternate rounds so drift affects both alike.
    for _ in 0..<500 { try await raw(); try await ours() }
    let clock = ContinuousClock()
    var rawTotal = Duration.zero, oursTotal = Duration.zero
    let rounds = 10
    for _ in 0..<rounds {
        rawTotal += try await clock.measure { for _ in 0..<(n / rounds) { try await raw() } }
        oursTotal += try await clock.measure { for _ in 0..<(n / rounds) { try await ours() } }
    }
    let rawMean = seconds(rawTotal) / Double(n) * 1e3, oursMean = seconds(oursTotal) / Double(n) * 1e3
    // The client's own work without any I/O: signing, JSON both ways, base64.
    let signer = SigV4(credentials: AWSCredentials(accessKeyID: "AKIDEXAMPLE", secretAccessKey: "secret"), region: "us-east-1", service: "kms")
    let cpu = clock.measure {
        for _ in 0..<n {
            let json = try! JSONSerialization.data(withJSONObject: ["KeyId": arn, "CiphertextBlob": blob, "EncryptionContext": ["keyward:tenant": "bench"]])
            _ = try! signer.sign(method: "POST", url: url, headers: [("Content-Type", "application/x-amz-json-1.1"), ("X-Amz-Target", "TrentService.Decrypt")], body: Array(json), date: Date())
            _ = try! JSONSerialization.jsonObject(with: Data(response))
        }
    }
    print(String(format: "kms-overhead: %d calls each way over one keep-alive connection to a canned loopback server", n))
    print(String(format: "  raw HTTP POST round trip:        %.3f ms per call", rawMean))
    print(String(format: "  AWSKMSClient Decrypt round trip: %.3f ms per call", oursMean))
    print(String(format: "  added by the client:             %.3f ms per call (target ≤ 0.200)", oursMean - rawMean))
    print(String(format: "  of which sign + JSON + base64 without I/O: %.3f ms", seconds(cpu) / Double(n) * 1e3))
    try await http.shutdown()
    try await server.close()
    try await group.shutdownGracefully()
}

let args = Array(CommandLine.arguments.dropFirst())
if args.first == "seed" {
    guard args.count == 4, let n = Int(args[3]) else { print("usage: keyward-bench seed DATA-FOLDER TENANT EXCHANGES"); exit(2) }
    let gateway = try await benchGateway(args[1])
    try await seed(gateway, tenant: args[2], exchanges: n)
    try await gateway.upstreams.shutdown()
    print("seeded \(n) exchanges (\(2 * n) records) for \(args[2])")
    exit(0)
}
if args.first == "bare-files" {
    guard args.count == 2, let port = Int(args[1]) else { print("usage: keyward-bench bare-files PORT"); exit(2) }
    try await bareFiles(port: port)
    exit(0)
}
if args.first == "bare-proxy" {
    guard args.count == 3, let port = Int(args[1]) else { print("usage: keyward-bench bare-proxy PORT UPSTREAM-URL"); exit(2) }
    try await bareProxy(port: port, upstream: args[2])
    exit(0)
}
let tasks = args.isEmpty ? ["local-unwrap", "200000", "kms-overhead", "5000"] : args
var i = 0
while i < tasks.count {
    let n = i + 1 < tasks.count ? Int(tasks[i + 1]) ?? 0 : 0
    switch tasks[i] {
    case "local-unwrap": try await localUnwrap(max(n, 1000))
    case "kms-overhead": try await kmsOverhead(max(n, 100))
    case "remote-unwrap": try await remoteUnwrap(max(n, 100))
    case "audit-append": try await auditAppend(max(n, 1000))
    case "rewrap": try await rewrap(max(n, 1000))
    case "store-exchange": try await storeExchange(max(n, 1000))
    case "open-records": try await openRecords(max(n, 100))
    case "machine-noise": machineNoise(seconds: max(n, 1))
    default: print("unknown benchmark \(tasks[i])")
    }
    i += 2
}
