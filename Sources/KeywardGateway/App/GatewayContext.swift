import Hummingbird
import Logging
import NIOCore

/// The request context of every route: Hummingbird's core, when the request began, and the
/// principal that the route group's ``Authenticate`` middleware verified (nil on routes without a token).
public struct GatewayContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    var principal: Principal?
    /// When the gateway began the request (set by ``GatewayMiddleware``, before authentication),
    /// for the time Keyward adds to it.
    var started: ContinuousClock.Instant = .now
    /// The request's connection (a file upload reads it in larger pieces); nil for a request the
    /// gateway makes of itself (a batch's line).
    let channel: (any Channel)?
    /// ``channel`` when it is a connection of its own (HTTP/1.1); nil for an HTTP/2 stream,
    /// whose connection's options are shared with other streams (and swift-nio-http2 traps on
    /// the ones a stream lacks). A connection's parent is the listening socket, which has none.
    var connection: (any Channel)? {
        guard let channel, channel.parent?.parent == nil else { return nil }
        return channel
    }

    /// The connection the request's bytes travel on, TLS and all: ``channel`` itself, or an
    /// HTTP/2 stream's parent.
    var transport: (any Channel)? { connection ?? channel?.parent }

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }

    /// The context of a request the gateway sends through its own routes for `principal`.
    init(principal: Principal, logger: Logger) {
        struct Source: RequestContextSource { let logger: Logger }
        coreContext = .init(source: Source(logger: logger))
        channel = nil
        self.principal = principal
    }
}
