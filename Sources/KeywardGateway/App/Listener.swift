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
        let idle = Duration.nanoseconds(Int64(idleTimeoutSeconds * 1e9))
        let http1 = HTTP1Channel.Configuration(
            idleTimeout: .nanoseconds(Int64(idleTimeoutSeconds * 1e9)),
            httpDecoderConfiguration: .init(maxHeaderFieldSize: maxHeaderBytes, maxHeaderListSize: maxHeaderBytes,
                                            maxHeaderFieldCount: maxHeaderCount))
        // The connection is idle when it has no open stream; a stream, until its request head is in.
        let http2 = HTTP2ChannelConfiguration(idleTimeout: idle, streamConfiguration: .init(idleTimeout: .nanoseconds(Int64(idleTimeoutSeconds * 1e9))))
        return HTTPServerBuilder { responder in
            ListenerChannel(http1: HTTP1Channel(responder: responder, configuration: http1),
                            http2: tls.map { _ in HTTP2Channel(responder: responder, configuration: http2) },
                            tls: tls, counts: counts, metrics: metrics, pingTimeout: .nanoseconds(Int64(min(idleTimeoutSeconds, 2) * 1e9)))
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
    /// How long an HTTP/2 client has to answer the server's PING: a live client that reads its
    /// connection answers within a round trip. Idle pooled connections of clients that read only
    /// while a request is in flight (httpx) never do: they are closed after this, also when the
    /// server stops.
    let pingTimeout: TimeAmount

    var responder: HTTPChannelHandler.Responder { http1.responder }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            if let counts { try channel.pipeline.syncOperations.addHandler(ConnectionLimitHandler(counts: counts, metrics: metrics)) }
            if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls.context)) }
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
                    try channel.pipeline.syncOperations.addHandler(UnansweredPingClose(timeout: pingTimeout), position: .after(frames))
                    return value
                }
            }.map { Value(negotiated: $0, channel: channel) }
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

/// Closes an HTTP/2 connection whose client leaves the server's PING unanswered for `timeout`.
/// Hummingbird sends GOAWAY and a PING to an idle connection, and closes it only once the PING is
/// answered: a client that never answers (gone, or a slowloris) would hold it for ever.
final class UnansweredPingClose: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTP2Frame
    typealias InboundOut = HTTP2Frame
    typealias OutboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame
    private let timeout: TimeAmount
    private var deadline: Scheduled<Void>?

    init(timeout: TimeAmount) { self.timeout = timeout }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .ping(_, ack: false) = unwrapOutboundIn(data).payload, deadline == nil {
            let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
            deadline = context.eventLoop.scheduleTask(in: timeout) { loopBound.value.close(promise: nil) }
        }
        context.write(data, promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .ping(_, ack: true) = unwrapInboundIn(data).payload {
            deadline?.cancel()
            deadline = nil
        }
        context.fireChannelRead(data)
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
