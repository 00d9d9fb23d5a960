import Foundation
@testable import KeywardHTTP
import NIOCore
import NIOPosix
import Synchronization
import Testing

/// Servers that stall, break off or speak no HTTP. No real server misbehaves on cue, so these are
/// a few lines of our own on a raw socket: each connection gets `script`'s bytes, with pauses.
final class ScriptedServer: @unchecked Sendable {
    /// `hold` stops the script until ``release()``: the test says when the server goes on.
    enum Step: Sendable { case send(String), pause(TimeAmount), hold, close }
    private(set) var channel: (any Channel)!
    var port: Int { channel.localAddress!.port! }
    /// Scripts waiting at a `hold`, and whether ``release()`` came already: the test may read what
    /// was sent before the hold, and release, before the server's loop has reached the hold.
    fileprivate let held = Mutex<(released: Bool, waiting: [@Sendable () -> Void])>((false, []))
    /// For each connection the client closed after sending a request: how long after the
    /// request's head arrived. Timed on the server's event loop, not on a test task's thread.
    fileprivate let hangUps = Mutex<[Duration]>([])

    /// The first hang-up's delay after its request arrived, waiting up to `limit` for it.
    func firstHangUp(within limit: Duration) async throws -> Duration? {
        let end = ContinuousClock.now + limit
        while ContinuousClock.now < end {
            if let first = hangUps.withLock({ $0.first }) { return first }
            try await Task.sleep(for: .milliseconds(20))
        }
        return nil
    }

    /// The loop these servers and the suite's client run on, their own: the shared singleton also
    /// carries every other suite's gateways, and a queue of their work there once held a scheduled
    /// hang-up back 17.5 s (CI, 2026-12-07), which timed the other suites, not the client.
    static let loops = MultiThreadedEventLoopGroup(numberOfThreads: 1)

    init(_ script: [Step]) async throws {
        channel = try await ServerBootstrap(group: Self.loops)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Player(script: script, server: self)) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    func close() async { try? await channel.close() }

    /// Lets every held script go on, and any that reaches a hold later.
    func release() {
        let waiting = held.withLock { h in
            defer { h = (true, []) }
            return h.waiting
        }
        for resume in waiting { resume() }
    }

    /// Plays the script once the request's head has arrived.
    private final class Player: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        let script: [Step]
        /// Weak: a connection may close after its test has ended and released the server.
        weak var server: ScriptedServer?
        var received = ""
        var started = false
        var headArrived = ContinuousClock.now
        init(script: [Step], server: ScriptedServer) {
            self.script = script
            self.server = server
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            received += String(buffer: unwrapInboundIn(data))
            guard !started, received.contains("\r\n\r\n") else { return }
            started = true
            headArrived = .now
            play(script[...], context: context)
        }

        func channelInactive(context: ChannelHandlerContext) {
            if started { server?.hangUps.withLock { $0.append(ContinuousClock.now - headArrived) } }
            context.fireChannelInactive()
        }

        func play(_ steps: ArraySlice<Step>, context: ChannelHandlerContext) {
            guard let step = steps.first else { return }
            let rest = steps.dropFirst()
            switch step {
            case .send(let text):
                context.writeAndFlush(NIOAny(ByteBuffer(string: text)), promise: nil)
                play(rest, context: context)
            case .pause(let t):
                let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                context.eventLoop.scheduleTask(in: t) { bound.value.0.play(rest, context: bound.value.1) }
            case .hold:
                let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                let loop = context.eventLoop
                let resume: @Sendable () -> Void = { loop.execute { bound.value.0.play(rest, context: bound.value.1) } }
                guard let server else { return }
                let now = server.held.withLock { h in
                    if !h.released { h.waiting.append(resume) }
                    return h.released
                }
                if now { resume() }
            case .close:
                context.close(promise: nil)
            }
        }
    }
}

@Suite struct MisbehavingServerTests {
    let client = PooledHTTPClient(group: ScriptedServer.loops)

    func request(_ server: ScriptedServer, deadline: TimeAmount = .seconds(5), readTimeout: TimeAmount = .seconds(5)) async throws -> PooledHTTPClient.Response {
        try await client.execute(.POST, try HTTPEndpoint(url: "http://127.0.0.1:\(server.port)/v1"), target: "/chat/completions",
                                 body: ByteBuffer(string: "{}"), deadline: .now() + deadline, readTimeout: readTimeout)
    }

    @Test func noHeadBeforeTheDeadlineFailsInTime() async throws {
        let server = try await ScriptedServer([.pause(.seconds(30))])
        await #expect(throws: HTTPClientError(.deadlineExceeded, "")) { _ = try await request(server, deadline: .milliseconds(300)) }
        // The client hung up well before the server would have answered (30 s). Timed where the
        // server saw it, on the suite's own loop; the other suites still load both cores (on the
        // shared loop CI measured 3.4 s, 7.0 s and 17.5 s), so the bound is half the server's
        // pause: a client that ignored its deadline hangs up at 30 s or never.
        let hangUp = try #require(try await server.firstHangUp(within: .seconds(20)))
        #expect(hangUp < .seconds(15), "hung up \(hangUp) after the request arrived")
        await server.close()
    }

    @Test func aBodyThatStallsTimesOutAndOneThatBreaksOffFails() async throws {
        let stall = try await ScriptedServer([.send("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789"), .pause(.seconds(30))])
        let r = try await request(stall, readTimeout: .milliseconds(300))
        #expect(r.status == .ok)
        await #expect(throws: HTTPClientError(.readTimeout, "")) { _ = try await r.body.collect(upTo: 1000) }
        await stall.close()

        let cut = try await ScriptedServer([.send("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789"), .close])
        let r2 = try await request(cut)
        await #expect(throws: HTTPClientError(.connectionClosed, "")) { _ = try await r2.body.collect(upTo: 1000) }
        await cut.close()
    }

    @Test func aStreamedBodyArrivesPartByPartAsSent() async throws {
        // The server sends the second part only once the test has read the first: a client that
        // held parts back would never see the first, and the read below would time out. The
        // timeout is long because the read timer runs while this task waits for a thread: with
        // every suite running at once on 2 cores, the crypto suites' batches kept it waiting past
        // 10 s (twice in full runs), and the server, held until this task reads, sent nothing.
        let server = try await ScriptedServer([
            .send("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"),
            .send("6\r\ndata 1\r\n"), .hold, .send("6\r\ndata 2\r\n0\r\n\r\n"),
        ])
        let r = try await request(server, readTimeout: .seconds(60))
        var iterator = r.body.makeAsyncIterator()
        #expect(try await iterator.next().map { String(buffer: $0) } == "data 1")
        server.release()
        #expect(try await iterator.next().map { String(buffer: $0) } == "data 2")
        #expect(try await iterator.next() == nil)
        await server.close()
    }

    @Test func aBodyEndedByCloseIsCompleteAndInformationalHeadsAreSkipped() async throws {
        let server = try await ScriptedServer([
            .send("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it"), .close,
        ])
        let r = try await request(server)
        #expect(r.status == .ok)
        #expect(String(buffer: try await r.body.collect(upTo: 100)) == "all of it")
        await server.close()
    }

    @Test func bytesThatAreNotHTTPAreAProtocolError() async throws {
        let server = try await ScriptedServer([.send("SSH-2.0-OpenSSH\r\n\r\n"), .pause(.seconds(5))])
        await #expect(throws: HTTPClientError(.protocolError, "")) { _ = try await request(server) }
        await server.close()
    }
}
