import Hummingbird
import HummingbirdCore
import NIOCore
import NIOHTTPTypes
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

    /// Hummingbird's HTTP/1.1 channel with these limits.
    func http1(metrics: GatewayMetrics) -> HTTP1Channel.Configuration {
        let counts = maxConnectionsPerAddress > 0 ? ConnectionCounts(limit: maxConnectionsPerAddress) : nil
        return HTTP1Channel.Configuration(
            additionalChannelHandlers: counts.map { [ConnectionLimitHandler(counts: $0, metrics: metrics)] } ?? [],
            idleTimeout: .nanoseconds(Int64(idleTimeoutSeconds * 1e9)),
            httpDecoderConfiguration: .init(maxHeaderFieldSize: maxHeaderBytes, maxHeaderListSize: maxHeaderBytes,
                                            maxHeaderFieldCount: maxHeaderCount))
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

/// Counts its connection in when it becomes active, closing it at once past the limit, and out
/// when it ends.
final class ConnectionLimitHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
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
