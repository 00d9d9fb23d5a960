import Hummingbird
import KeywardHTTP
import NIOCore
import NIOPosix

/// The floor of the gateway's own stack, for bench-gateway's reference rows: Hummingbird 2 and
/// the upstream client that `keyward serve` uses, set up as `serve` sets them up (tasks on the
/// event loops), with nothing of Keyward's between them: no token, no key, no storage, no log
/// line, no metrics. Whatever this adds to a request, every request through Keyward pays too.
func bareProxy(port: Int, upstream: String) async throws {
    NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
    let endpoint = try HTTPEndpoint(url: upstream)
    let client = PooledHTTPClient()
    @Sendable func forward(_ body: ByteBuffer) async throws -> ByteBuffer {
        let response = try await client.execute(.POST, endpoint, target: "/chat/completions", headers: [("content-type", "application/json")],
                                                body: body, deadline: .now() + .seconds(30), readTimeout: .seconds(30))
        return try await response.body.collect(upTo: 64 << 20)
    }
    let router = Router()
    router.post("/v1/chat/completions") { request, _ -> Response in
        let answer = try await forward(try await request.body.collect(upTo: 8 << 20))
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: answer))
    }
    // The upstream's answer, asked for once, then served without the upstream leg: the server's
    // share of the floor.
    let canned = try await forward(ByteBuffer(string: "{}"))
    router.post("/v1/canned") { request, _ -> Response in
        _ = try await request.body.collect(upTo: 8 << 20)
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: canned))
    }
    let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port), serverName: nil))
    try await app.runService()
}
