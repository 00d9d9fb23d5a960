import ArgumentParser
import CKeywardSystem
import Foundation
import KeywardCrypto
import KeywardErrors
import KeywardGateway
import KeywardServer
import Logging
import NIOCore
import NIOPosix
import OTel
import ServiceLifecycle

/// `keyward serve`: the OpenAI-compatible gateway.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the gateway: OpenAI/Anthropic APIs in front of your providers, every stored byte under your key.",
        discussion: """
            Without a config file, KEYWARD_UPSTREAM_URL and KEYWARD_UPSTREAM_API_KEY define one OpenAI-compatible \
            upstream for every model; without any upstream, the built-in keyward/echo model answers. \
            KEYWARD_ADMIN_TOKEN sets the admin token on first start, otherwise one is printed once. \
            KEYWARD_LOG_LEVEL sets the log level (default info).
            """)

    @Option(help: "The data folder: database, local key store and its root key.") var data: String?
    @Option(help: "HOST:PORT to listen on (default 127.0.0.1:8080).") var listen: String?
    @Option(help: "A JSON config file with upstreams and limits.") var config: String?
    @Option(help: "A PostgreSQL address shared by several replicas (postgres://user:password@host:5432/db; KEYWARD_DATABASE_URL). Default: SQLite in the data folder.")
    var database: String?
    @Option(name: .customLong("root-key-file"), help: "The local key store's root key (KEYWARD_ROOT_KEY_FILE); with --database, the same file on every replica.")
    var rootKeyFile: String?
    @Option(name: .customLong("tls-cert"), help: "Serve HTTPS: the certificate chain (PEM); reloaded with the key on SIGHUP.") var tlsCert: String?
    @Option(name: .customLong("tls-key"), help: "The certificate's private key (PEM).") var tlsKey: String?
    @Option(name: .customLong("tls-client-ca"), help: "Require client certificates signed by this CA (PEM): on every connection, or on /admin only with \"tls\": {\"client_certificates\": \"admin\"} in the config.")
    var tlsClientCA: String?

    func run() async throws {
        // Tasks run on the NIO event loops that also serve the sockets: no hop between Swift's
        // cooperative pool and the loops on every request (measured: the largest per-request cost).
        NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
        // SIGHUP reloads the TLS files once the server runs; before that (migrations, a slow
        // database) it must not end the process, as its default action would.
        signal(SIGHUP, SIG_IGN)
        if kw_disable_core_dumps() != 0 {
            throw CLIError(exitCode: 1, description: "cannot disable core dumps (errno \(errno)); refusing to hold plaintext in a dumpable process")
        }
        let level = ProcessInfo.processInfo.environment["KEYWARD_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .info
        LoggingSystem.bootstrap { label in LineLogHandler(label: label, level: level) }
        let logger = Logger(label: "keyward")
        let configuration: GatewayConfiguration
        do {
            configuration = try GatewayConfiguration.load(dataFolder: data, listen: listen, configFile: config, database: database,
                                                          rootKeyFile: rootKeyFile, tlsCertificate: tlsCert, tlsKey: tlsKey, tlsClientCA: tlsClientCA)
        } catch let e as GatewayError {
            throw CLIError(exitCode: 2, description: e.message)
        }
        let gateway: Gateway
        do { gateway = try Gateway(configuration: configuration, logger: logger) } catch let e as any CodedError {
            throw CLIError(exitCode: 1, description: "cannot start: \(e)")
        }
        // One service group: the storage's own services first (a database's pool and monitor), so
        // that they start before the gateway prepares and stop after it has drained.
        var services = gateway.storageServices + [GatewayProcess(gateway: gateway, configuration: configuration, logger: logger)]
        if configuration.tracing {
            // Traces only (logs and metrics keep their own backends), configured by the standard
            // OTEL_* variables; first in the group, so that it stops last and flushes every span.
            var otel = OTel.Configuration.default
            otel.serviceName = "keyward"
            otel.logs.enabled = false
            otel.metrics.enabled = false
            // Its diagnostics without metadata: it would log a request's headers (a bearer token
            // among them) when a traceparent does not parse.
            otel.diagnosticLogger = .custom(Logger(label: "keyward.otel") { MessageOnlyLogHandler(label: $0, level: level) })
            do { services.insert(try OTel.bootstrap(configuration: otel), at: 0) } catch {
                // Not the error itself: the configuration it describes may hold the collector's
                // credentials (OTEL_EXPORTER_OTLP_HEADERS).
                throw CLIError(exitCode: 2, description: "invalid OpenTelemetry configuration (\(type(of: error))): check the OTEL_* variables")
            }
        }
        let group = ServiceGroup(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        try await group.run()
        logger.notice("stopped")
    }
}

/// `keyward serve`'s gateway as a service: prepared once its storage runs (migrations, the first
/// admin token), then serving until the group shuts it down (draining in-flight requests).
struct GatewayProcess: Service {
    let gateway: Gateway
    let configuration: GatewayConfiguration
    let logger: Logger

    func run() async throws {
        let token: Secret?
        do { token = try await gateway.prepare() } catch let e as any CodedError {
            // A wrong root key, an unreachable database: say which, and start nothing.
            try? await gateway.upstreams.shutdown()
            throw CLIError(exitCode: 1, description: "cannot start: \(e)")
        }
        if let token {
            // Shown once, on standard output only; the log never carries it.
            print("Admin token (shown once, store it now): ", terminator: "")
            fflush(nil)
            token.withUnsafeBytes { _ = write(STDOUT_FILENO, $0.baseAddress, $0.count) }  // no String copy of it
            print("")
            fflush(nil)  // all streams: standard output may be a file
        }
        let upstreams = configuration.upstreams.map { "\($0.name) (\($0.kind.rawValue))" }.joined(separator: ", ")
        logger.notice("starting", metadata: [
            "data": "\(configuration.dataFolder)", "database": "\(gateway.databaseDescription)", "upstreams": "\(upstreams.isEmpty ? "none: keyward/echo only" : upstreams)",
        ])
        let (logger, configuration) = (logger, configuration)
        let app = gateway.application { port in
            logger.notice("listening", metadata: ["address": "\(configuration.tls == nil ? "http" : "https")://\(configuration.host):\(port)"])
        }
        try await app.run()
    }
}
