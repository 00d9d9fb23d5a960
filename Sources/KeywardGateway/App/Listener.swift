import Hummingbird
import HummingbirdCore
import HummingbirdHTTP2
import Logging
import NIOCore
import NIOHTTP2
import NIOSSL
import Synchronization

/// Limits of the listener against slow or greedy clients (`"listener"` in the config file).
public struct ListenerConfiguration: Sendable, Equatable {
    /// A connection without a complete request head for this long (a slowloris trickling its
    /// headers, or an idle keep-alive connection) is closed.
    public var idleTimeoutSeconds = 30.0
    /// Largest request head (all header lines together), and most header lines, accepted: past
    /// either the request is refused (400) and its connection closed.
    public var maxHeaderBytes = 64 << 10
    public var maxHeaderCount = 200
    /// Connections one client address may hold open at once; past it, a new one is closed at
    /// once. Behind a load balancer, every client shares its address: raise it, or 0 for none.
    public var maxConnectionsPerAddress = 512

    public init() {}

    /// The listener's server: HTTP/1.1, or with TLS, HTTP/2 beside it as the client chooses by
    /// ALPN. Either way a connection is counted against its address before anything else is read.
    ///
    /// HTTP/2 connections keep swift-nio-http2's own limits on a stream's header block (16 KiB,
    /// decompressed) and on concurrent streams (100): Hummingbird's HTTP/2 channel takes no others.
    func server(tls: TLSContexts?, metrics: GatewayMetrics) -> HTTPServerBuilder {
        let counts = maxConnectionsPerAddress > 0 ? ConnectionCounts(limit: maxConnectionsPerAddress) : nil
        let idle = TimeAmount.nanoseconds(Int64(idleTimeoutSeconds * 1e9))
        let http1 = HTTP1Channel.Configuration(
            idleTimeout: idle,
            httpDecoderConfiguration: .init(maxHeaderFieldSize: maxHeaderBytes, maxHeaderListSize: maxHeaderBytes,
                                            maxHeaderFieldCount: maxHeaderCount))
        // The connection is idle when it has no open stream; a stream, until its request head is in.
        let http2 = HTTP2ChannelConfiguration(idleTimeout: .nanoseconds(idle.nanoseconds), streamConfiguration: .init(idleTimeout: idle))
        return HTTPServerBuilder { responder in
            ListenerChannel(http1: HTTP1Channel(responder: responder, configuration: http1),
                            http2: tls.map { _ in HTTP2Channel(responder: responder, configuration: http2) },
                            tls: tls, counts: counts, metrics: metrics, idleTimeout: idle, pingTimeout: min(idle, .seconds(2)))
        }
    }
}

/// A connection of the listener: counted against its address, then TLS with the context current
/// when it is accepted (if the listener speaks TLS), then HTTP/2 if ALPN chose it, else HTTP/1.1.
struct ListenerChannel: ServerChildChannel, HTTPChannelHandler {
    struct Value: ServerChildChannelValue {
        let negotiated: EventLoopFuture<NIONegotiatedHTTPVersion<HTTP1Channel.Value, HTTP2Channel.Value>>
        let channel: any Channel
    }

    let http1: HTTP1Channel
    /// Nil without TLS: HTTP/2 is offered by ALPN only.
    let http2: HTTP2Channel?
    let tls: TLSContexts?
    let counts: ConnectionCounts?
    let metrics: GatewayMetrics
    /// How long a TLS client has to complete its handshake, and an HTTP/2 connection being closed
    /// to write out what it has queued.
    let idleTimeout: TimeAmount
    /// How long an HTTP/2 client has to answer the server's PING: a live client that reads its
    /// connection answers within a round trip. Idle pooled connections of clients that read only
    /// while a request is in flight (httpx) never do: they are closed after this, also when the
    /// server stops.
    let pingTimeout: TimeAmount

    var responder: HTTPChannelHandler.Responder { http1.responder }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            if let counts { try channel.pipeline.syncOperations.addHandler(ConnectionLimitHandler(counts: counts, metrics: metrics)) }
            if let tls {
                try channel.pipeline.syncOperations.addHandlers(HandshakeDeadline(timeout: idleTimeout),
                                                                NIOSSLServerHandler(context: tls.context))
            }
        }.flatMap {
            guard let http2 else {
                return http1.setup(channel: channel, logger: logger).map {
                    Value(negotiated: channel.eventLoop.makeSucceededFuture(.http1_1($0)), channel: channel)
                }
            }
            return channel.configureHTTP2AsyncSecureUpgrade { channel in
                http1.setup(channel: channel, logger: logger)
            } http2ConnectionInitializer: { channel in
                http2.setup(channel: channel, logger: logger).flatMapThrowing { value in
                    let frames = try channel.pipeline.syncOperations.handler(type: NIOHTTP2Handler.self)
                    try channel.pipeline.syncOperations.addHandler(HTTP2ConnectionGuard(timeout: pingTimeout, drainTimeout: idleTimeout, logger: logger),
                                                                   position: .after(frames))
                    return value
                }
            }.map { negotiated in
                // Either protocol's own timers watch the connection from here on.
                negotiated.whenComplete { _ in
                    if let deadline = try? channel.pipeline.syncOperations.handler(type: HandshakeDeadline.self) {
                        channel.pipeline.syncOperations.removeHandler(deadline, promise: nil)
                    }
                }
                return Value(negotiated: negotiated, channel: channel)
            }
        }
    }

    func handle(value: Value, logger: Logger) async {
        do {
            switch try await value.negotiated.get() {
            case .http1_1(let connection): await http1.handle(value: connection, logger: logger)
            case .http2(let connection): await http2?.handle(value: connection, logger: logger)
            }
        } catch {
            // A failed handshake or an unknown ALPN protocol: the connection is already closed.
            logger.debug("connection not set up", metadata: ["error": "\(error)"])
        }
    }
}

/// Guards an HTTP/2 connection where Hummingbird's connection manager does not:
/// - Hummingbird sends GOAWAY and a PING to a connection that was idle or when the server stops,
///   and closes it only once that PING is answered. A client that never answers (gone, a
///   slowloris, an idle pooled client that reads nothing) would hold it for ever, so while that
///   PING is unanswered and no stream is open, the connection is closed after `timeout`. Open
///   streams are waited for, as HTTP/1.1 waits for requests in progress; only an answer carrying
///   the PING's own data counts.
/// - swift-nio-http2 reports a stream closed when its last frame is encoded, before it is written,
///   and Hummingbird closes the connection right then, which drops what is still queued: a
///   stopping server cut the end off its last answers. So a close first sends a PING of its own
///   and waits until that is written (writes complete in order: all before it are out too), for at
///   most `drainTimeout`.
final class HTTP2ConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTP2Frame
    typealias InboundOut = HTTP2Frame
    typealias OutboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame
    private let timeout: TimeAmount
    private let drainTimeout: TimeAmount
    private var unanswered: HTTP2PingData?
    private var openStreams = Set<HTTP2StreamID>()
    private var deadline: Scheduled<Void>?
    private var drain: Scheduled<Void>?
    private var closing = false
    private let logger: Logger

    init(timeout: TimeAmount, drainTimeout: TimeAmount, logger: Logger) {
        self.timeout = timeout
        self.drainTimeout = drainTimeout
        self.logger = logger
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("HTTP/2 connection error", metadata: ["error": "\(error)"])
        context.fireErrorCaught(error)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .ping(let ping, ack: false) = unwrapOutboundIn(data).payload {
            unanswered = ping
            update(context)
        }
        context.write(data, promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .ping(let ping, ack: true) = unwrapInboundIn(data).payload, ping == unanswered {
            unanswered = nil
            update(context)
        }
        context.fireChannelRead(data)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let created = event as? NIOHTTP2StreamCreatedEvent {
            openStreams.insert(created.streamID)
            update(context)
        } else if let closed = event as? StreamClosedEvent {
            openStreams.remove(closed.streamID)
            update(context)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard mode == .all, !closing else {
            context.close(mode: mode, promise: promise)
            return
        }
        closing = true
        let this = NIOLoopBound(self, eventLoop: context.eventLoop)
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        // Armed first: the write below may complete before it returns.
        drain = context.eventLoop.scheduleTask(in: drainTimeout) { this.value.finishClose(loopBound.value, promise: promise) }
        let written = context.eventLoop.makePromise(of: Void.self)
        written.futureResult.whenComplete { _ in this.value.finishClose(loopBound.value, promise: promise) }
        // Written from this handler's context, so it does not pass this handler's own write().
        context.writeAndFlush(wrapOutboundOut(HTTP2Frame(streamID: .rootStream, payload: .ping(HTTP2PingData(), ack: false))),
                              promise: written)
    }

    private func finishClose(_ context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
        guard let drain else { return }  // closed already
        drain.cancel()
        self.drain = nil
        context.close(mode: .all, promise: promise)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
        drain?.cancel()
    }

    /// The deadline runs exactly while a PING is unanswered and no stream is open.
    private func update(_ context: ChannelHandlerContext) {
        if unanswered != nil && openStreams.isEmpty {
            guard deadline == nil else { return }
            let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
            deadline = context.eventLoop.scheduleTask(in: timeout) { loopBound.value.close(promise: nil) }
        } else {
            deadline?.cancel()
            deadline = nil
        }
    }
}

/// Closes a TLS connection that has not completed its handshake within `timeout`, or when the
/// server stops before it has: until the handshake chose HTTP/1.1 or HTTP/2, no HTTP idle timer
/// watches the connection (a client that connects and sends nothing held it, and a stopping
/// server, for ever). Removed once the protocol is chosen.
final class HandshakeDeadline: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    private let timeout: TimeAmount
    private var deadline: Scheduled<Void>?

    init(timeout: TimeAmount) { self.timeout = timeout }

    func handlerAdded(context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        deadline = context.eventLoop.scheduleTask(in: timeout) { loopBound.value.close(promise: nil) }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
    }
}

/// Connections open per client address, shared by every connection's handler.
final class ConnectionCounts: Sendable {
    private let counts = Mutex<[String: Int]>([:])
    let limit: Int

    init(limit: Int) { self.limit = limit }

    /// Counts a new connection of `address` in; false (not counted) past the limit.
    func open(_ address: String) -> Bool {
        counts.withLock { counts in
            let n = counts[address, default: 0]
            guard n < limit else { return false }
            counts[address] = n + 1
            return true
        }
    }

    func close(_ address: String) {
        counts.withLock { counts in
            let n = counts[address, default: 1] - 1
            counts[address] = n > 0 ? n : nil
        }
    }
}

/// Counts its connection in when it becomes active, closing it at once past the limit (before a
/// TLS handshake or a byte of HTTP), and out when it ends.
final class ConnectionLimitHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    private let counts: ConnectionCounts
    private let metrics: GatewayMetrics
    private var address: String?
    private var refused = false

    init(counts: ConnectionCounts, metrics: GatewayMetrics) {
        self.counts = counts
        self.metrics = metrics
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { admit(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        admit(context)
        if !refused { context.fireChannelActive() }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !refused else { return }
        context.fireChannelRead(data)
    }

    func channelInactive(context: ChannelHandlerContext) {
        release()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        release()
    }

    private func admit(_ context: ChannelHandlerContext) {
        guard address == nil, !refused else { return }
        let ip = context.channel.remoteAddress?.ipAddress ?? "unknown"
        if counts.open(ip) {
            address = ip
        } else {
            refused = true
            metrics.connectionRefused()
            context.close(promise: nil)
        }
    }

    private func release() {
        if let address { counts.close(address) }
        address = nil
    }
}
