import Hummingbird
import HTTPTypes
import NIOCore
import NIOHTTPTypes

/// Answers `Expect: 100-continue` (RFC 9110 §10.1.1), which Hummingbird leaves unanswered.
///
/// A client that sends it waits for `100 Continue` before sending its body, or gives up waiting
/// after a while and sends it anyway: curl sends it with every body over 1 MiB and waits a second,
/// so each file upload through Keyward stood still for a second (a 1 GiB upload took 2.4 s, of
/// which 1.0 s waiting). The interim answer goes out when the route first reads the body: a
/// request refused before that (no token, a route that does not exist, an upload too large by its
/// length) gets its final answer without one, and a client such as curl then stops sending. (The
/// connection stays open and Hummingbird reads and drops a body that still comes; a client that
/// neither sends it nor closes waits for the idle timeout.) An HTTP/1.0 request's expectation
/// should be ignored (RFC 9110), but Hummingbird's request does not carry its version; HTTP/1.0
/// clients do not send it.
public struct ExpectContinue<Context: RequestContext>: RouterMiddleware {
    /// The request's channel (an HTTP/1.1 connection or an HTTP/2 stream); nil for a request
    /// that did not come over one.
    let channel: @Sendable (Context) -> (any Channel)?

    public init(channel: @escaping @Sendable (Context) -> (any Channel)?) {
        self.channel = channel
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        // Only `100-continue` is defined; any other expectation is ignored (as most servers do)
        // rather than refused with 417.
        guard request.expectsContinue, let channel = channel(context) else { return try await next(request, context) }
        var request = request
        request.body = RequestBody(asyncSequence: ContinuingBody(body: request.body, channel: channel))
        return try await next(request, context)
    }
}

extension Request {
    /// Whether the client waits for `100 Continue` before it sends the body.
    var expectsContinue: Bool { headers[.expect]?.lowercased() == "100-continue" }
}

/// A request body that sends `100 Continue` on its channel before the first read.
struct ContinuingBody: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let body: RequestBody
    let channel: any Channel

    struct AsyncIterator: AsyncIteratorProtocol {
        var inner: RequestBody.AsyncIterator
        var channel: (any Channel)?

        mutating func next() async throws -> ByteBuffer? {
            if let channel {
                self.channel = nil
                // Written at the pipeline's tail, as the response will be: before it, since the
                // route has not answered yet. Not awaited: the body's first bytes follow it.
                channel.writeAndFlush(HTTPResponsePart.head(HTTPResponse(status: .continue)), promise: nil)
            }
            return try await inner.next()
        }
    }

    func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(inner: body.makeAsyncIterator(), channel: channel)
    }
}
