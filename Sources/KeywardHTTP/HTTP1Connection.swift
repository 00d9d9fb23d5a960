import NIOCore
import NIOHTTP1
import NIOSSL

/// One request on its way: what to write, when to give up, and the continuation the response
/// head resumes. Touched only on the event loop of the connection that carries it.
final class HTTPExchange: @unchecked Sendable {
    let head: HTTPRequestHead
    let body: ByteBuffer?
    let deadline: NIODeadline
    let readTimeout: TimeAmount
    private var continuation: CheckedContinuation<PooledHTTPClient.Response, any Error>?

    init(head: HTTPRequestHead, body: ByteBuffer?, deadline: NIODeadline, readTimeout: TimeAmount,
         continuation: CheckedContinuation<PooledHTTPClient.Response, any Error>) {
        self.head = head
        self.body = body
        self.deadline = deadline
        self.readTimeout = readTimeout
        self.continuation = continuation
    }

    var isPending: Bool { continuation != nil }

    func succeed(_ response: PooledHTTPClient.Response) {
        continuation?.resume(returning: response)
        continuation = nil
    }

    func fail(_ error: HTTPClientError) {
        continuation?.resume(throwing: error)
        continuation = nil
    }
}

/// An HTTP/1.1 connection to one endpoint, carrying one exchange at a time, kept open between
/// exchanges when both sides allow it. Confined to its channel's event loop.
final class HTTP1Connection: ChannelDuplexHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    private enum State {
        case idle
        case awaitingHead(HTTPExchange)
        case streaming(HTTPExchange, HTTPResponseBody, keepAlive: Bool)
        case closed
    }

    private var state = State.idle
    private var context: ChannelHandlerContext?
    let endpoint: HTTPEndpoint
    private let configuration: PooledHTTPClient.Configuration
    /// Tells the pool when this connection is free again or gone.
    private let pool: LoopPool
    /// Counts exchanges, so that a late call about an earlier one (a dropped body) is ignored.
    private var number = 0
    private var requestWritten = false
    /// A 1xx head was read: its end belongs to it, not to the response.
    private var inInformational = false
    /// Back-pressure: reading stops while the consumer is behind.
    private var readPaused = false
    private var readPending = false
    private var lastRead = NIODeadline.now()
    private var timer: Scheduled<Void>?
    /// When the pool last got this connection back.
    var idleSince = NIODeadline.now()

    init(endpoint: HTTPEndpoint, configuration: PooledHTTPClient.Configuration, pool: LoopPool) {
        self.endpoint = endpoint
        self.configuration = configuration
        self.pool = pool
    }

    var isClosed: Bool { if case .closed = state { true } else { false } }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    /// Writes the exchange's request; its response head resumes the exchange.
    func run(_ exchange: HTTPExchange) {
        guard case .idle = state, let context else {
            exchange.fail(HTTPClientError(.connectionClosed, "the connection to \(endpoint) closed before the request was sent"))
            return
        }
        number += 1
        state = .awaitingHead(exchange)
        requestWritten = false
        arm(at: exchange.deadline)
        context.write(wrapOutboundOut(.head(exchange.head)), promise: nil)
        if let body = exchange.body { context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil) }
        let n = number
        let promise = context.eventLoop.makePromise(of: Void.self)
        promise.futureResult.whenComplete { [self] result in
            guard n == number else { return }
            switch result {
            case .success: requestWritten = true
            case .failure: close(HTTPClientError(.connectionClosed, "the request could not be sent to \(endpoint)"))
            }
        }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        lastRead = .now()
        switch (unwrapInboundIn(data), state) {
        case (.head(let head), .awaitingHead(let exchange)):
            if head.status.code < 200 && head.status != .switchingProtocols {
                inInformational = true  // 100 Continue, 103 Early Hints: the real head follows
                return
            }
            let n = number
            let loop = context.eventLoop
            let me = NIOLoopBound(self, eventLoop: loop)
            let body = HTTPResponseBody(
                highWatermark: configuration.bodyHighWatermark, lowWatermark: configuration.bodyLowWatermark,
                demand: { loop.execute { me.value.resumeReading(n) } },
                abandon: { loop.execute { me.value.abandoned(n) } })
            state = .streaming(exchange, body, keepAlive: head.isKeepAlive)
            timer?.cancel()
            timer = nil
            exchange.succeed(PooledHTTPClient.Response(status: head.status, headers: head.headers, body: body))
        case (.body(let part), .streaming(_, let body, _)):
            if !body.yield(part) { readPaused = true }
        case (.end, _) where inInformational:
            inInformational = false
        case (.end, .streaming(_, let body, let keepAlive)):
            timer?.cancel()
            timer = nil
            body.finish(.success(()))
            guard keepAlive && requestWritten else {
                close(nil)
                return
            }
            state = .idle
            // An idle connection keeps reading, so that the server's close is seen at once.
            readPaused = false
            if readPending {
                readPending = false
                context.read()
            }
            pool.release(self)
        default:
            close(HTTPClientError(.protocolError, "\(endpoint) sent a response part out of order"))
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // A body still arriving after this read: watch for it to stall.
        if case .streaming(let exchange, _, _) = state, timer == nil {
            arm(at: .now() + exchange.readTimeout)
        }
        context.fireChannelReadComplete()
    }

    func read(context: ChannelHandlerContext) {
        if readPaused { readPending = true } else { context.read() }
    }

    private func resumeReading(_ n: Int) {
        guard n == number, readPaused else { return }
        readPaused = false
        if readPending {
            readPending = false
            context?.read()
        }
    }

    /// The body of exchange `n` was dropped before its end: the rest of it cannot be skipped
    /// cheaply, so the connection goes.
    private func abandoned(_ n: Int) {
        guard n == number, case .streaming = state else { return }
        close(nil)
    }

    private func arm(at deadline: NIODeadline) {
        timer?.cancel()
        let n = number
        timer = context?.eventLoop.scheduleTask(deadline: deadline) { [self] in
            guard n == number else { return }
            timer = nil
            timedOut()
        }
    }

    private func timedOut() {
        switch state {
        case .awaitingHead:
            close(HTTPClientError(.deadlineExceeded, "\(endpoint) sent no response in time"))
        case .streaming(let exchange, _, _):
            // A consumer that stopped reading is not the server's fault.
            let quietSince = readPaused ? NIODeadline.now() : lastRead
            let due = quietSince + exchange.readTimeout
            if due > .now() { arm(at: due) } else {
                close(HTTPClientError(.readTimeout, "\(endpoint) stopped sending the response body"))
            }
        case .idle, .closed:
            break
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        let reason: HTTPClientError
        switch error {
        case is NIOSSLError, is BoringSSLError:
            reason = HTTPClientError(.connectFailed, "TLS with \(endpoint) failed (\(error))")
        case HTTPParserError.invalidEOFState:
            reason = HTTPClientError(.connectionClosed, "\(endpoint) closed the connection before the response was complete")
        case is HTTPParserError:
            reason = HTTPClientError(.protocolError, "\(endpoint) did not answer in HTTP/1.1")
        default:
            reason = HTTPClientError(.connectionClosed, "the connection to \(endpoint) failed")
        }
        close(reason)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !isClosed {
            fail(HTTPClientError(.connectionClosed, "\(endpoint) closed the connection before the response was complete"))
            state = .closed
            pool.remove(self)
        }
        context.fireChannelInactive()
    }

    /// Fails whatever is in flight with `error`.
    private func fail(_ error: HTTPClientError) {
        timer?.cancel()
        timer = nil
        switch state {
        case .awaitingHead(let exchange): exchange.fail(error)
        case .streaming(_, let body, _): body.finish(.failure(error))
        case .idle, .closed: break
        }
    }

    /// Closes the connection, failing what is in flight with `error` (or as closed).
    func close(_ error: HTTPClientError?) {
        guard !isClosed else { return }
        fail(error ?? HTTPClientError(.connectionClosed, "the connection to \(endpoint) was closed"))
        state = .closed
        pool.remove(self)
        context?.close(promise: nil)
    }
}
