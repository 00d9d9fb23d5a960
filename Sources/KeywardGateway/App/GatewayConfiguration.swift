import Foundation
import KeywardCrypto
import KeywardHTTP
import KeywardKeyStores
import KeywardStorage

/// Where file blobs are kept.
public enum BlobsConfiguration: Sendable, Equatable {
    /// `blobs/` in the data folder (one process).
    case folder
    /// An S3-compatible object store (several replicas), with credentials from the usual AWS
    /// variables or shared credentials file; `endpoint` (default `AWS_ENDPOINT_URL_S3`) for MinIO,
    /// Ceph RGW or a test server, addressed path-style.
    case s3(bucket: String, prefix: String, region: String, endpoint: String?)
}

/// Everything `keyward serve` needs, from flags, the environment and an optional JSON config file.
public struct GatewayConfiguration: Sendable {
    public var dataFolder: String
    public var host: String
    public var port: Int
    public var upstreams: [UpstreamConfiguration]
    /// Largest request body accepted, checked while it streams in.
    public var bodyLimit: Int
    /// Where file blobs are kept (`"blobs"` in the config file; the data folder by default).
    public var blobs = BlobsConfiguration.folder
    /// Largest file an upload may hold (`files.max_bytes`; OpenAI's 512 MiB by default), checked
    /// while it streams in.
    public var fileSizeLimit = 512 << 20
    /// How batches run (`"batches"` in the config file).
    public var batches = BatchesConfiguration()
    /// Each tenant's requests and model tokens per minute, unless the tenant has its own
    /// (`"rate_limits"`); none by default.
    public var rateLimits = RateLimits()
    /// The listener's limits against slow or greedy clients (`"listener"`).
    public var listener = ListenerConfiguration()
    /// The listener's TLS, if it speaks TLS (`--tls-cert`, `--tls-key`, `--tls-client-ca`, or `"tls"`).
    public var tls: TLSSettings?
    /// Whether the config file named `tls.client_certificates` (which needs a client CA).
    private var tlsAsksForClientCertificates = false
    /// Whether requests, key-store calls, upstream calls and storage writes are traced (the
    /// OpenTelemetry exporter is then set up by `keyward serve`); off, no span is made.
    public var tracing = false
    public var cacheLimits: CacheLimits
    /// How often the purge service deletes expired records.
    public var purgeIntervalSeconds: Double
    /// The admin token to install on first start (`KEYWARD_ADMIN_TOKEN`).
    public var initialAdminToken: Secret?
    /// The root key file of the local key store (default: in the data folder).
    public var rootKeyFile: String?
    /// A PostgreSQL address (`--database`, `KEYWARD_DATABASE_URL`) shared by several replicas;
    /// nil keeps everything in the data folder's SQLite database. It may hold a password.
    public var databaseURL: Secret?
    /// The key that wraps the audit signing key.
    public var auditKey = "local:keyward-audit"
    /// Sign the audit chain's head after this many events.
    public var auditCheckpointEvery: Int64 = 1000
    /// Anomaly detection and alert delivery.
    public var alerts = AlertCenter.Configuration()
    /// The KMIP server for `kmip:` keys (`"kmip"` in the config file); nil: `KEYWARD_KMIP_*`.
    public var kmip: KMIPConfiguration?

    public init(dataFolder: String = "keyward-data", host: String = "127.0.0.1", port: Int = 8080,
                upstreams: [UpstreamConfiguration] = [], bodyLimit: Int = 8 << 20,
                cacheLimits: CacheLimits = CacheLimits(maxAge: 60, maxMessages: 100_000, maxBytes: 1 << 32),
                purgeIntervalSeconds: Double = 3600, initialAdminToken: Secret? = nil, rootKeyFile: String? = nil) {
        self.dataFolder = dataFolder
        self.host = host
        self.port = port
        self.upstreams = upstreams
        self.bodyLimit = bodyLimit
        self.cacheLimits = cacheLimits
        self.purgeIntervalSeconds = purgeIntervalSeconds
        self.initialAdminToken = initialAdminToken
        self.rootKeyFile = rootKeyFile
    }

    /// The upstream serving `model`, first match in configuration order.
    func upstream(for model: String) -> UpstreamConfiguration? {
        upstreams.first { $0.serves(model) }
    }

    /// Reads the config file (if any), then the quick-start environment:
    /// `KEYWARD_UPSTREAM_URL` and `KEYWARD_UPSTREAM_API_KEY` add a pass-through OpenAI-compatible
    /// upstream for every model no configured upstream claims.
    public static func load(dataFolder: String?, listen: String?, configFile: String?, database: String? = nil,
                            rootKeyFile: String? = nil, tlsCertificate: String? = nil, tlsKey: String? = nil, tlsClientCA: String? = nil,
                            environment: [String: String] = ProcessInfo.processInfo.environment) throws -> GatewayConfiguration {
        var c = GatewayConfiguration()
        if let path = configFile {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw GatewayError.config("cannot read the config file \(path)")
            }
            let file: ConfigFile
            do { file = try JSONDecoder().decode(ConfigFile.self, from: data) } catch {
                throw GatewayError.config("the config file \(path) is not valid: \(error)")
            }
            try c.apply(file, environment: environment)
        }
        // Traces are exported only where the standard OpenTelemetry variables name a collector.
        let collector = environment["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] ?? environment["OTEL_EXPORTER_OTLP_ENDPOINT"] ?? ""
        c.tracing = !collector.isEmpty && environment["OTEL_TRACES_EXPORTER"] != "none"
        if let url = environment["KEYWARD_UPSTREAM_URL"], !url.isEmpty {
            c.upstreams.append(try UpstreamConfiguration(
                name: "default", kind: .openAICompatible, url: url,
                apiKey: environment["KEYWARD_UPSTREAM_API_KEY"].map(Secret.init), models: ["*"],
                caFile: environment["KEYWARD_UPSTREAM_CA_FILE"].flatMap { $0.isEmpty ? nil : $0 }))
        }
        if let dataFolder { c.dataFolder = dataFolder }
        if let listen {
            guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]), (0...65535).contains(port) else {
                throw GatewayError.config("--listen takes HOST:PORT, e.g. 127.0.0.1:8080")
            }
            c.host = String(listen[..<colon])
            c.port = port
        }
        if let token = environment["KEYWARD_ADMIN_TOKEN"], !token.isEmpty { c.initialAdminToken = Secret(token) }
        if let root = rootKeyFile ?? environment["KEYWARD_ROOT_KEY_FILE"], !root.isEmpty { c.rootKeyFile = root }
        if let url = database ?? environment["KEYWARD_DATABASE_URL"], !url.isEmpty {
            c.databaseURL = Secret(url)
            // Every replica must open the same local keys: the root key cannot default to a file
            // in this replica's own folder.
            guard c.rootKeyFile != nil || !(environment["KEYWARD_ROOT_PASSPHRASE"] ?? "").isEmpty else {
                throw GatewayError.config("with a database, give every replica the same root key: --root-key-file FILE (or KEYWARD_ROOT_KEY_FILE)")
            }
        }
        // The command line's TLS files win over the config file's.
        if tlsCertificate != nil || tlsKey != nil || tlsClientCA != nil || c.tls != nil {
            var t = c.tls ?? TLSSettings(certificateFile: "", keyFile: "")
            if let tlsCertificate { t.certificateFile = tlsCertificate }
            if let tlsKey { t.keyFile = tlsKey }
            if let tlsClientCA { t.clientCAFile = tlsClientCA }
            guard !t.certificateFile.isEmpty, !t.keyFile.isEmpty else {
                throw GatewayError.config("TLS needs a certificate and its key: --tls-cert FILE --tls-key FILE (or tls.cert_file and tls.key_file)")
            }
            // Asked for client certificates without saying whose: refused, not silently none.
            guard t.clientCAFile != nil || !c.tlsAsksForClientCertificates else {
                throw GatewayError.config("tls.client_certificates needs the CA that signs them: --tls-client-ca FILE (or tls.client_ca_file)")
            }
            c.tls = t
        }
        return c
    }

    private mutating func apply(_ file: ConfigFile, environment: [String: String]) throws {
        for u in file.upstreams ?? [] {
            guard let kind = UpstreamConfiguration.Kind(rawValue: u.type) else {
                throw GatewayError.config("upstream \(u.name): type must be openai-compatible or anthropic")
            }
            var key: Secret?
            if let name = u.api_key_env {
                guard let value = environment[name], !value.isEmpty else {
                    throw GatewayError.config("upstream \(u.name): environment variable \(name) is not set")
                }
                key = Secret(value)
            }
            guard (u.timeout_seconds ?? 1) > 0 else { throw GatewayError.config("upstream \(u.name): timeout_seconds must be positive") }
            var api = UpstreamConfiguration.API.chat
            if let name = u.api {
                guard kind == .openAICompatible, let a = UpstreamConfiguration.API(rawValue: name) else {
                    throw GatewayError.config("upstream \(u.name): api must be chat or responses, on an openai-compatible upstream")
                }
                api = a
            }
            upstreams.append(try UpstreamConfiguration(name: u.name, kind: kind, url: u.url, apiKey: key, models: u.models ?? ["*"],
                                                       timeoutSeconds: u.timeout_seconds ?? 600, caFile: u.ca_file, api: api))
        }
        if let limit = file.body_limit { bodyLimit = limit }
        if let b = file.blobs {
            switch b.type {
            case "folder":
                blobs = .folder
            case "s3":
                guard let bucket = b.bucket, !bucket.isEmpty else { throw GatewayError.config("blobs: an s3 store names its bucket") }
                guard let region = b.region ?? environment["AWS_REGION"] ?? environment["AWS_DEFAULT_REGION"] else {
                    throw GatewayError.config("blobs: an s3 store names its region (or set AWS_REGION)")
                }
                blobs = .s3(bucket: bucket, prefix: b.prefix ?? "", region: region,
                            endpoint: b.endpoint ?? environment["AWS_ENDPOINT_URL_S3"] ?? environment["AWS_ENDPOINT_URL"])
            default:
                throw GatewayError.config("blobs.type must be folder or s3")
            }
        }
        if let limit = file.files?.max_bytes {
            guard limit > 0 else { throw GatewayError.config("files.max_bytes must be positive") }
            fileSizeLimit = limit
        }
        if let t = file.tls {
            tlsAsksForClientCertificates = t.client_certificates != nil
            tls = TLSSettings(certificateFile: t.cert_file ?? "", keyFile: t.key_file ?? "", clientCAFile: t.client_ca_file,
                              clientCertificates: t.client_certificates ?? .all)
        }
        if let r = file.rate_limits {
            guard r.isValid else { throw GatewayError.config("rate_limits: each limit must be from 1 to \(RateLimits.maximum), or left out") }
            rateLimits = r
        }
        if let l = file.listener {
            if let v = l.idle_timeout_seconds { listener.idleTimeoutSeconds = v }
            if let v = l.max_header_bytes { listener.maxHeaderBytes = v }
            if let v = l.max_header_count { listener.maxHeaderCount = v }
            if let v = l.max_connections_per_address { listener.maxConnectionsPerAddress = v }
            let c = listener
            guard c.idleTimeoutSeconds > 0, c.idleTimeoutSeconds <= 86_400, c.maxHeaderBytes >= 1024, c.maxHeaderCount >= 16, c.maxConnectionsPerAddress >= 0 else {
                throw GatewayError.config("listener: idle_timeout_seconds must be from 0 to 86400 (excluded 0), max_header_bytes at least 1024, max_header_count at least 16, max_connections_per_address 0 (none) or more")
            }
        }
        if let b = file.batches {
            if let v = b.concurrency { batches.concurrency = v }
            if let v = b.upstream_concurrency { batches.upstreamConcurrency = v }
            if let v = b.running { batches.running = v }
            if let v = b.max_attempts { batches.maxAttempts = v }
            if let v = b.retry_base_seconds { batches.retryBaseSeconds = v }
            if let v = b.lease_seconds { batches.leaseSeconds = v }
            let c = batches
            guard c.concurrency > 0, c.upstreamConcurrency > 0, c.running > 0, c.maxAttempts > 0, c.retryBaseSeconds >= 0,
                  c.leaseSeconds >= 1 else {
                throw GatewayError.config("batches: concurrency, upstream_concurrency, running and max_attempts must be positive, lease_seconds at least 1")
            }
        }
        if let cache = file.data_key_cache {
            cacheLimits = CacheLimits(maxAge: cache.max_age_seconds ?? cacheLimits.maxAge,
                                      maxMessages: cache.max_messages ?? cacheLimits.maxMessages,
                                      maxBytes: cache.max_bytes ?? cacheLimits.maxBytes)
        }
        if let interval = file.purge_interval_seconds { purgeIntervalSeconds = interval }
        if let audit = file.audit {
            if let key = audit.key {
                // The audit key is named in audit events and logs.
                guard KeyReference(parsing: key)?.holdsSecret != true else { throw GatewayError.config("audit.key: " + KeyStores.pinValueRefused) }
                auditKey = key
            }
            if let every = audit.checkpoint_every {
                guard every > 0 else { throw GatewayError.config("audit.checkpoint_every must be positive") }
                auditCheckpointEvery = every
            }
        }
        if let k = file.kmip {
            do {
                kmip = try KMIPConfiguration(server: k.server, caFile: k.ca_file, certificateFile: k.cert_file, keyFile: k.key_file,
                                             timeoutMilliseconds: k.timeout_ms)
            } catch let e as KeyStoreError {
                throw GatewayError.config("kmip: \(e.reason)")
            }
        }
        if let a = file.alerts {
            var d = alerts.detector
            if let v = a.window_seconds { d.window = v }
            if let v = a.ceiling { d.ceiling = v }
            if let v = a.ratio { d.ratio = v }
            if let v = a.baseline_windows { d.baselineWindows = v }
            if let v = a.minimum { d.minimum = v }
            guard d.window > 0, d.ceiling > 0, d.ratio > 0, d.baselineWindows > 0, d.minimum > 0 else {
                throw GatewayError.config("alerts: window_seconds, ceiling, ratio, baseline_windows and minimum must be positive")
            }
            if let url = a.webhook {
                do { _ = try HTTPEndpoint(url: url) } catch let e as HTTPClientError {
                    throw GatewayError.config("alerts.webhook: \(e.reason)")
                }
            }
            alerts = AlertCenter.Configuration(detector: d, webhook: a.webhook, suspendToken: a.suspend_token ?? false)
        }
    }

    /// The config file's shape. API keys are named by environment variable, never written in it.
    private struct ConfigFile: Decodable {
        struct Upstream: Decodable {
            var name: String
            var type: String
            var url: String
            var api_key_env: String?
            var models: [String]?
            var timeout_seconds: Double?
            /// PEM certificates to trust for an https url, besides the system's roots.
            var ca_file: String?
            /// `chat` (default) or `responses`: the API an openai-compatible upstream speaks.
            var api: String?
        }
        struct Cache: Decodable {
            var max_age_seconds: Double?
            var max_messages: UInt64?
            var max_bytes: UInt64?
        }
        var upstreams: [Upstream]?
        var body_limit: Int?
        struct Files: Decodable {
            var max_bytes: Int?
        }
        struct Blobs: Decodable {
            var type: String
            var bucket: String?
            var prefix: String?
            var region: String?
            var endpoint: String?
        }
        var blobs: Blobs?
        var files: Files?
        struct Batches: Decodable {
            var concurrency: Int?
            var upstream_concurrency: Int?
            var running: Int?
            var max_attempts: Int?
            var retry_base_seconds: Double?
            var lease_seconds: Double?
        }
        var batches: Batches?
        struct Listener: Decodable {
            var idle_timeout_seconds: Double?
            var max_header_bytes: Int?
            var max_header_count: Int?
            var max_connections_per_address: Int?
        }
        var listener: Listener?
        var rate_limits: RateLimits?
        struct TLS: Decodable {
            var cert_file: String?
            var key_file: String?
            var client_ca_file: String?
            var client_certificates: TLSSettings.ClientCertificates?
        }
        var tls: TLS?
        var data_key_cache: Cache?
        var purge_interval_seconds: Double?
        struct Audit: Decodable {
            var key: String?
            var checkpoint_every: Int64?
        }
        struct Alerts: Decodable {
            var window_seconds: Double?
            var ceiling: Int?
            var ratio: Double?
            var baseline_windows: Int?
            var minimum: Int?
            var webhook: String?
            var suspend_token: Bool?
        }
        var audit: Audit?
        var alerts: Alerts?
        struct KMIP: Decodable {
            /// host:port
            var server: String
            var ca_file: String
            var cert_file: String
            var key_file: String
            var timeout_ms: Int?
        }
        var kmip: KMIP?
    }
}

extension GatewayError {
    static func config(_ message: String) -> GatewayError {
        GatewayError(.internalServerError, type: "server_error", code: "invalid_configuration", message)
    }
}

extension GatewayConfiguration {
    /// Creates the data folder and its `keys/` (0700) if needed, and makes the folder private.
    public func createDataFolder() throws {
        try FileManager.default.createDirectory(atPath: dataFolder + "/keys", withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        _ = chmod(dataFolder, 0o700)
    }
}
