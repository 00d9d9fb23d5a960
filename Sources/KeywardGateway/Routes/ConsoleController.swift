import HTTPTypes
import Hummingbird
import KeywardConsole
import NIOCore

/// `/console/`: the web console's files, compiled into the binary, with no token (the console
/// signs in with one and calls the API as any client does). Every file is served under a strict
/// Content-Security-Policy: scripts and styles from the console's own files only (no inline
/// script or style, no `eval`), requests to this origin only, and no framing.
struct ConsoleController {
    static let contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        + "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

    static let referrerPolicy = HTTPField.Name("referrer-policy")!

    func addRoutes(to router: Router<GatewayContext>) {
        // One route to Hummingbird, which ignores a trailing slash; without it the page's relative
        // imports would resolve outside /console/.
        router.getAndHead("/console") { request, _ in
            request.uri.path.hasSuffix("/") ? try file("index.html") : Response(status: .movedPermanently, headers: [.location: "/console/"])
        }
        router.getAndHead("/console/:file") { _, context in try file(try context.parameters.require("file")) }
    }

    func file(_ name: String) throws -> Response {
        guard let asset = ConsoleAssets.asset(named: name) else { throw GatewayError.notFound("no console file \(name)") }
        let headers: HTTPFields = [
            .contentType: asset.contentType,
            .contentSecurityPolicy: Self.contentSecurityPolicy,
            .xContentTypeOptions: "nosniff",
            Self.referrerPolicy: "no-referrer",
        ]
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: asset.bytes)))
    }
}
