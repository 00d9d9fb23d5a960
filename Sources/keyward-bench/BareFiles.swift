import Hummingbird
import KeywardGateway
import NIOCore
import NIOPosix

/// The floor of a file's trip through the gateway's stack, for bench-files' reference rows:
/// Hummingbird set up as `keyward serve` sets it up (tasks on the event loops, 1 MiB reads while
/// an upload streams in), moving the same bytes with no parsing, no encryption and no storage.
/// `POST /v1/files` reads the body and drops it; `GET /v1/files/bare/content?bytes=N` sends N
/// bytes, 1 MiB at a time. Whatever this costs, an upload or a download through Keyward costs too.
func bareFiles(port: Int) async throws {
    NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
    struct Context: RequestContext {
        var coreContext: CoreRequestContextStorage
        let channel: any Channel
        init(source: ApplicationRequestContextSource) {
            coreContext = .init(source: source)
            channel = source.channel
        }
    }
    let router = Router(context: Context.self)
    // As `keyward serve` does: curl sends `Expect: 100-continue` with an upload and waits a second for it.
    router.middlewares.add(ExpectContinue { $0.channel })
    router.post("/v1/files") { request, context -> Response in
        try await context.channel.setOption(ChannelOptions.recvAllocator,
                                            value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 1 << 20, maximum: 1 << 20)).get()
        var bytes = 0
        for try await chunk in request.body { bytes += chunk.readableBytes }
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: "{\"bytes\": \(bytes)}")))
    }
    let block = ByteBuffer(repeating: 0x5A, count: 1 << 20)
    router.get("/v1/files/bare/content") { request, _ -> Response in
        let total = request.uri.queryParameters.get("bytes", as: Int.self) ?? 0
        return Response(status: .ok, headers: [.contentType: "application/octet-stream"], body: ResponseBody { writer in
            var left = total
            while left > 0 {
                try await writer.write(block.getSlice(at: 0, length: min(left, block.readableBytes))!)
                left -= block.readableBytes
            }
            try await writer.finish(nil)
        })
    }
    let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port), serverName: nil))
    try await app.runService()
}
