import Hummingbird

/// The request context of every route: Hummingbird's core, and the principal that the route
/// group's ``Authenticate`` middleware verified (nil on unauthenticated routes).
public struct GatewayContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    var principal: Principal?
    public init(source: ApplicationRequestContextSource) { coreContext = .init(source: source) }
}
