import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP2
import NIOSSL
import ServiceLifecycle
import Synchronization
import UnixSignals

/// The listener's TLS (`keyward serve --tls-cert FILE --tls-key FILE [--tls-client-ca FILE]`, or
/// `"tls"` in the config file).
public struct TLSSettings: Sendable, Equatable {
    /// Where client certificates are required, when a client CA is given.
    public enum ClientCertificates: String, Sendable, Decodable {
        /// On every connection: a client without one does not complete the handshake.
        case all
        /// On `/admin` routes only: a connection may go without one (app routes), and an admin
        /// request without one is 403 `client_certificate_required`.
        case admin
    }

    public var certificateFile: String
    public var keyFile: String
    public var clientCAFile: String?
    public var clientCertificates = ClientCertificates.all

    public init(certificateFile: String, keyFile: String, clientCAFile: String? = nil, clientCertificates: ClientCertificates = .all) {
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        self.clientCAFile = clientCAFile
        self.clientCertificates = clientCertificates
    }

    /// A server context from the files as they are now: TLS 1.2 or later; with a client CA, a
    /// client certificate is verified against it (required, or only checked if offered).
    func context() throws -> NIOSSLContext {
        var c = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile(certificateFile).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: keyFile, format: .pem)))
        c.minimumTLSVersion = .tlsv12
        c.applicationProtocols = NIOHTTP2SupportedALPNProtocols  // h2, then http/1.1
        // After its own close_notify the server waits this long for the client's before closing
        // (NIOSSL's default is 5 s): an idle pooled client reads nothing, so each of its
        // connections held a stopping server 5 s.
        c.shutdownTimeout = .seconds(1)
        if let clientCAFile {
            c.trustRoots = .file(clientCAFile)
            c.certificateVerification = clientCertificates == .all ? .noHostnameVerification : .optionalVerification
        }
        return try NIOSSLContext(configuration: c)
    }
}

/// The server's TLS context, replaced on SIGHUP: connections accepted afterwards get the new
/// certificate, those already open keep theirs (nothing is dropped).
final class TLSContexts: Sendable {
    let settings: TLSSettings
    private let current: Mutex<NIOSSLContext>

    init(settings: TLSSettings) throws {
        self.settings = settings
        current = Mutex(try settings.context())
    }

    var context: NIOSSLContext { current.withLock { $0 } }

    /// Reads the files again; on failure the previous context stays.
    func reload() throws {
        let fresh = try settings.context()
        current.withLock { $0 = fresh }
    }
}

/// Reloads the certificate, key and client CA on SIGHUP.
struct TLSReloadService: Service, CustomStringConvertible {
    var description: String { "TLSReloadService" }
    let contexts: TLSContexts
    let logger: Logger

    func run() async throws {
        for await _ in await UnixSignalsSequence(trapping: .sighup).cancelOnGracefulShutdown() {
            do {
                try contexts.reload()
                logger.notice("TLS certificate reloaded")
            } catch {
                // NIOSSL's and BoringSSL's reasons name files and formats, never key material.
                logger.error("TLS certificate not reloaded: the previous one stays", metadata: ["error": "\(error)"])
            }
        }
    }
}

/// Admin routes of a listener that takes client certificates on admin routes only: a request
/// whose connection presented none (verified against the client CA during the handshake) is 403.
struct RequireClientCertificate: RouterMiddleware {
    typealias Context = GatewayContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        // An HTTP/2 stream has no TLS handler of its own: its connection (the transport) has it.
        guard let transport = context.transport, (try? await transport.nioSSL_peerCertificate().get()) != nil else {
            throw GatewayError(.forbidden, type: "permission_error", code: "client_certificate_required",
                               "admin routes need a client certificate signed by the gateway's client CA")
        }
        return try await next(request, context)
    }
}
