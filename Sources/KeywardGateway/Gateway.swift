import Foundation
import HTTPTypes
import Hummingbird
import KeywardAudit
import KeywardCrypto
import KeywardKeyStores
import KeywardPostgres
import KeywardStorage
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// The request context of every route.
public struct GatewayContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public init(source: ApplicationRequestContextSource) { coreContext = .init(source: source) }
}

/// The gateway: its storage, vault, upstreams and metrics, and the HTTP application over them.
public final class Gateway: Sendable {
    public let configuration: GatewayConfiguration
    public let store: any RecordStore
    public let keyStores: KeyStores
    public let vault: Vault
    public let upstreams: UpstreamClient
    public let metrics: GatewayMetrics
    public let audit: AuditLog
    /// Other replicas' changes (PostgreSQL only; nil with SQLite, which one process owns).
    let feed: PostgresChangeFeed?
    let alerts: AlertCenter
    let logger: Logger
    /// Set by ``prepare()``: signs audit checkpoints.
    let signer = Mutex<AuditSigner?>(nil)
    /// Key reference → its policy, so a request costs no database read to authorize. Cleared on
    /// a policy change here; another process's change is seen within the TTL.
    let policies = Mutex(ExpiringCache<String, KeyPolicy>(ttl: 5))
    /// Ids of submitted re-key jobs, for the job service.
    let jobQueue = AsyncStream.makeStream(of: String.self)
    /// Token hash → principal, so a request costs no database read to authenticate. Cleared when
    /// a token is deleted here; another process's change is seen within the TTL.
    let principals = Mutex(ExpiringCache<[UInt8], Principal>(ttl: 5))
    /// "tenant/upstream" → the tenant's own provider key (nil: none stored). Cleared on change.
    let providerKeys = Mutex(ExpiringCache<String, Secret?>(ttl: 5))
    static let clock = CachingMaterialsManager.monotonicSeconds

    /// Opens the data folder (created 0700): the SQLite database and the local key store in `keys/`,
    /// or, with a database address, the PostgreSQL database that holds both for every replica.
    ///
    /// - Parameter keyStores: the key stores to use instead of those the environment names (tests).
    public init(configuration: GatewayConfiguration, logger: Logger, keyStores: KeyStores? = nil) throws {
        self.configuration = configuration
        self.logger = logger
        let folder = configuration.dataFolder
        try FileManager.default.createDirectory(atPath: folder + "/keys", withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        _ = chmod(folder, 0o700)
        if let url = configuration.databaseURL {
            let postgres = try PostgresRecordStore(url: try PostgresURL(url.value), logger: logger)
            store = postgres
            feed = PostgresChangeFeed(store: postgres, logger: logger)
        } else {
            store = try SQLiteRecordStore(path: folder + "/keyward.sqlite3", callerHome: {
                // A waiting request resumes on its own event loop, where its connection lives.
                guard let loop = MultiThreadedEventLoopGroup.currentEventLoop else { return nil }
                return { work in if loop.inEventLoop { work() } else { loop.execute(work) } }
            })
            feed = nil
        }
        self.keyStores = keyStores ?? KeyStores(configuration: .fromEnvironment(localFolder: folder + "/keys", rootKeyFile: configuration.rootKeyFile))
        metrics = GatewayMetrics()
        alerts = AlertCenter(configuration: configuration.alerts)
        audit = AuditLog(store: store, metrics: metrics, logger: logger, alerts: alerts)
        vault = Vault(keyStores: self.keyStores, limits: configuration.cacheLimits, metrics: metrics, audit: audit)
        // Until the feed listens, another replica's revocation could go unseen.
        if feed != nil { vault.cachesTrusted.store(false, ordering: .relaxed) }
        upstreams = UpstreamClient()
        alerts.onAlert { [unowned self] alert, cause in await self.raise(alert, cause: cause) }
    }

    /// An anomaly: logged in the audit chain, counted, sent to the webhook, and the token
    /// suspended if so configured.
    func raise(_ alert: AnomalyDetector.Alert, cause: AuditEvent) async {
        metrics.alert(alert.reason)
        logger.warning("anomalous unwrap activity", metadata: [
            "principal": "\(alert.principal)", "key": "\(alert.key)", "count": "\(alert.count)", "reason": "\(alert.reason)",
        ])
        var suspended = false
        if alerts.configuration.suspendToken, alert.principal.hasPrefix("tok_"),
           (try? await store.setTokenSuspended(id: alert.principal, true)) == true {
            suspended = true
            await changed(.tokens)
        }
        try? await audit.append(AuditLog.event(
            .alert, key: alert.key, result: suspended ? .tokenSuspended : .ok,
            detail: "\(alert.reason) count=\(alert.count) subjects=\(alert.subjects.joined(separator: ","))",
            scope: AuditScope(actor: alert.principal, tenant: cause.tenant, requestID: cause.requestID)))
        alerts.deliver(alert, tenant: cause.tenant)
    }

    /// Where the records are, for logs (never a password).
    public var databaseDescription: String {
        (store as? PostgresRecordStore).map { "\($0.url)" } ?? configuration.dataFolder + "/keyward.sqlite3"
    }

    /// Something cached may be stale: forget it here, and tell the other replicas.
    func changed(_ change: CacheChange) async {
        apply(change)
        guard let feed else { return }
        do { try await feed.publish(change.payload) } catch {
            // The change itself is stored; replicas that miss the notice see it within the
            // caches' maximum age.
            logger.error("could not notify the other replicas", metadata: ["change": "\(change.payload)", "error": "\(error)"])
        }
    }

    /// Follows the other replicas' changes until cancelled (PostgreSQL; returns at once with
    /// SQLite). While not listening, no cache is trusted; on listening (again) every cache is
    /// dropped, since what was missed is unknown. The server runs this itself; tools that use a
    /// gateway without serving run it to use the data-key cache.
    public func followChanges() async {
        guard let feed else { return }
        await feed.follow(onState: { listening in
            if listening { self.apply(.all) }
            self.vault.cachesTrusted.store(listening, ordering: .relaxed)
            if !listening { self.apply(.all) }
            self.metrics.changeFeed(listening: listening)
            self.logger.notice(listening ? "change notifications: listening" : "change notifications: lost")
        }, onChange: { payload in
            guard let change = CacheChange(payload: payload) else {
                self.logger.warning("unknown change notification ignored")
                return
            }
            self.apply(change)
        })
        // No longer listening: nothing cached from here on is known to be current.
        vault.cachesTrusted.store(false, ordering: .relaxed)
    }

    /// Whether cached data keys, principals and policies may be used now.
    public var cachesAreTrusted: Bool { vault.cachesTrusted.load(ordering: .relaxed) }

    /// Drops what `change` makes stale.
    func apply(_ change: CacheChange) {
        switch change {
        case .key(let ref):
            // Every change purges: a disable stops cached use at once, a rotation makes new data
            // keys use the new version, an enable starts from the store's state.
            vault.purge(key: ref)
            providerKeys.withLock { $0.removeAll() }
        case .policy: policies.withLock { $0.removeAll() }
        case .tokens: principals.withLock { $0.removeAll() }
        case .tenant:
            principals.withLock { $0.removeAll() }
            providerKeys.withLock { $0.removeAll() }
        case .providerKeys: providerKeys.withLock { $0.removeAll() }
        case .job(let id): jobQueue.continuation.yield(id)
        case .all:
            vault.purgeAll()
            policies.withLock { $0.removeAll() }
            principals.withLock { $0.removeAll() }
            providerKeys.withLock { $0.removeAll() }
        }
    }

    /// Migrates the database and installs the admin token on first start. Returns a generated
    /// admin token, to be shown once, when none was given.
    public func prepare() async throws -> Secret? {
        try await store.migrate()
        if let postgres = store as? PostgresRecordStore {
            // Every replica's `local:` keys are the database's, opened with the shared root key.
            let root = RootKeySource.fromEnvironment(keyStoreFolder: configuration.dataFolder + "/keys", rootKeyFile: configuration.rootKeyFile)
            keyStores.install(try await LocalKeyStore.open(backend: PostgresKeyBackend(store: postgres), rootKey: root))
        }
        let home: AuditSigner.Home = (store as? PostgresRecordStore).map { .settings($0) } ?? .folder(configuration.dataFolder)
        let (loaded, created) = try await AuditSigner.loadOrCreate(home: home, keyStores: keyStores, keyReference: configuration.auditKey)
        signer.withLock { $0 = loaded }
        try await audit.append(AuditLog.event(created ? .auditKeyCreated : .unwrap, key: configuration.auditKey,
                                              record: "audit-signing.key", scope: AuditScope(actor: "system")))
        guard try await store.tokens(role: .admin).isEmpty else {
            if let given = configuration.initialAdminToken,
               try await store.token(hash: Tokens.hash(given.value))?.role != .admin {
                logger.warning("KEYWARD_ADMIN_TOKEN is ignored: an admin token was installed on first start")
            }
            return nil
        }
        let (generated, id) = Tokens.generate()
        let token = configuration.initialAdminToken ?? generated
        do {
            try await store.insertToken(TokenRecord(id: id, tenant: nil, role: .admin, hash: Tokens.hash(token.value), createdAt: Self.nowMs()))
        } catch let e as StorageError where e.code == .alreadyExists {
            return nil  // another replica, starting at the same moment, installed this token first
        }
        try await audit.append(AuditLog.event(.tokenCreate, detail: "id=\(id) role=admin", scope: AuditScope(actor: "system")))
        logger.notice("admin token installed", metadata: ["token_id": "\(id)"])
        return configuration.initialAdminToken == nil ? generated : nil
    }

    /// The router with every route and the error/metrics middleware.
    public func router() -> Router<GatewayContext> {
        let router = Router(context: GatewayContext.self)
        router.middlewares.add(GatewayMiddleware(metrics: metrics))
        router.get("/healthz") { _, _ in Self.json(["status": "ok"]) }
        router.get("/admin/v1/openapi.json") { _, _ in Self.jsonBytes(Array(OpenAPIDocument.json.utf8)) }
        router.get("/readyz") { _, _ in try await self.readiness() }
        router.get("/metrics") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                     body: .init(byteBuffer: ByteBuffer(bytes: self.metrics.exposition())))
        }
        addAdminRoutes(to: router)
        addLifecycleRoutes(to: router)
        addAuditRoutes(to: router)
        addAIRoutes(to: router)
        addStoredCompletionRoutes(to: router)
        return router
    }

    /// The HTTP application with the purge service; `runService()` serves until SIGTERM or SIGINT,
    /// then drains in-flight requests.
    public func application(onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }) -> some ApplicationProtocol {
        Application(
            router: router(),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: nil),
            services: (feed == nil ? [] : [ChangeFeedService(gateway: self)]) + [auditCheckpoints, AuditResumeService(audit: audit), PurgeService(gateway: self), MaintenanceService(gateway: self),
                       JobService(gateway: self), AlertService(alerts: alerts, logger: logger), UpstreamClientService(client: upstreams)],
            onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? 0) },
            logger: logger)
    }

    private var auditCheckpoints: AuditCheckpointService {
        guard let signer = signer.withLock({ $0 }) else { preconditionFailure("Gateway.prepare() must run before application()") }
        return AuditCheckpointService(store: store, signer: signer, every: configuration.auditCheckpointEvery, logger: logger, now: Self.nowMs)
    }

    func readiness() async throws -> Response {
        var checks: [String: String] = [:]
        var ready = true
        checks["audit"] = audit.isAvailable ? "ok" : "unavailable"
        if feed != nil { checks["change_feed"] = vault.cachesTrusted.load(ordering: .relaxed) ? "ok" : "reconnecting" }
        ready = audit.isAvailable
        do { try await store.ping(); checks["database"] = "ok" } catch {
            checks["database"] = "unavailable"
            var response = Self.json(["status": "not_ready", "checks": checks])
            response.status = .serviceUnavailable
            return response
        }
        // One key per store in use answers for its store.
        var seen = Set<String>()
        for tenant in (try? await store.tenants()) ?? [] {
            guard let reference = KeyReference(parsing: tenant.key), seen.insert(reference.scheme).inserted else { continue }
            do {
                _ = try await keyStores.store(for: reference).describe(keyID: reference.keyID)
                checks["keystore:\(reference.scheme)"] = "ok"
            } catch {
                checks["keystore:\(reference.scheme)"] = "unavailable"
                ready = false
            }
        }
        var response = Self.json(["status": ready ? "ready" : "not_ready", "checks": checks])
        response.status = ready ? .ok : .serviceUnavailable
        return response
    }

    // MARK: Helpers shared by the routes

    /// Verifies the bearer token (or `x-api-key`, as Anthropic clients send it) for `role`.
    /// The token of an `Authorization: Bearer …` value (scheme in any case, blanks around the
    /// token dropped); on every request, so bytes rather than `lowercased()` and Foundation's
    /// character sets.
    static func bearerToken(_ header: String) -> String? {
        let u = Array(header.utf8)
        let scheme = Array("bearer ".utf8)
        guard u.count >= scheme.count, zip(u, scheme).allSatisfy({ (0x41...0x5A ~= $0 ? $0 | 0x20 : $0) == $1 }) else { return nil }
        var start = scheme.count, end = u.count
        while start < end, u[start] == 0x20 || u[start] == 0x09 { start += 1 }
        while end > start, u[end - 1] == 0x20 || u[end - 1] == 0x09 { end -= 1 }
        return String(decoding: u[start..<end], as: UTF8.self)
    }

    func authenticate(_ request: Request, role: TokenRecord.Role) async throws -> Principal {
        var value: String?
        if let header = request.headers[.authorization], let token = Self.bearerToken(header) {
            value = token
        } else if let key = request.headers[.xAPIKey] {
            value = key
        }
        guard let value, !value.isEmpty else { throw GatewayError.unauthorized }
        let hash = Tokens.hash(value)
        let principal: Principal
        let (cached, generation) = principals.withLock { ($0.value(for: hash, now: Self.clock()), $0.generation) }
        if vault.cachesTrusted.load(ordering: .relaxed), let cached {
            principal = cached
        } else {
            guard let token = try await store.token(hash: hash) else { throw GatewayError.unauthorized }
            var tenant: Tenant?
            if let name = token.tenant {
                guard let t = try await store.tenant(named: name) else { throw GatewayError.unauthorized }
                tenant = t
            }
            principal = Principal(tokenID: token.id, role: token.role, tenant: tenant, suspended: token.suspended)
            principals.withLock { $0.insert(principal, for: hash, now: Self.clock(), ifGeneration: generation) }
        }
        guard !principal.suspended else {
            throw GatewayError.forbidden("this token is suspended", code: "token_suspended")
        }
        guard principal.role == role else {
            metrics.accessDenied("role")
            try await audit.append(AuditLog.event(
                .access, result: .denied, detail: "\(request.method.rawValue) \(GatewayMiddleware.route(request.uri.path)) needs role \(role.rawValue)",
                scope: AuditScope(actor: principal.tokenID, tenant: principal.tenant?.name, requestID: AuditScope.requestID)))
            throw GatewayError.forbidden("this token's role (\(principal.role.rawValue)) may not call this route")
        }
        return principal
    }

    /// The policy of a master key (none stored: an empty one, which grants nothing).
    func policy(forKey key: String) async throws -> KeyPolicy {
        let (cached, generation) = policies.withLock { ($0.value(for: key, now: Self.clock()), $0.generation) }
        if vault.cachesTrusted.load(ordering: .relaxed), let cached { return cached }
        var policy = KeyPolicy()
        if let document = try await store.policy(key: key) {
            do { policy = try JSONDecoder().decode(KeyPolicy.self, from: Data(document.utf8)) } catch {
                logger.error("a stored key policy does not decode: it grants nothing", metadata: ["key": "\(key)"])
            }
        }
        policies.withLock { $0.insert(policy, for: key, now: Self.clock(), ifGeneration: generation) }
        return policy
    }

    /// Refuses (403 `access_denied`, audited) unless the tenant's key policy grants `principal`
    /// the purpose (and, for inference, the model).
    func authorize(_ principal: Principal, tenant: Tenant, purpose: Purpose, model: String? = nil) async throws {
        let policy = try await policy(forKey: tenant.key)
        guard !policy.allows(tokenID: principal.tokenID, tenant: principal.tenant?.name, purpose: purpose, model: model) else { return }
        metrics.accessDenied(purpose.rawValue)
        try await audit.append(AuditLog.event(
            .access, key: tenant.key, result: .denied, detail: model.map { "model=\($0)" },
            scope: AuditScope(actor: principal.tokenID, tenant: tenant.name, requestID: AuditScope.requestID, purpose: purpose)))
        throw GatewayError.accessDenied("no grant of \(tenant.name)'s key allows this token \(purpose.rawValue)"
                                        + (model.map { " with model \($0)" } ?? ""))
    }

    /// The audit scope of a request by `principal`.
    func scope(_ principal: Principal, _ purpose: Purpose?) -> AuditScope {
        AuditScope(actor: principal.tokenID, tenant: principal.tenant?.name, requestID: AuditScope.requestID, purpose: purpose)
    }

    /// The request body, refused with 413 as soon as it grows past the limit.
    func body(of request: Request) async throws -> [UInt8] {
        Array(buffer: try await bodyBuffer(of: request))
    }

    /// The same, as the buffer it arrived in: forwarded upstream without another copy.
    func bodyBuffer(of request: Request) async throws -> ByteBuffer {
        var request = request
        return try await request.collectBody(upTo: configuration.bodyLimit)
    }

    static func json(_ object: Any, status: HTTPResponse.Status = .ok) -> Response {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func jsonBytes(_ bytes: [UInt8], status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) -> Response {
        var fields = headers
        fields[.contentType] = "application/json"
        return Response(status: status, headers: fields, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    static func nowMs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    /// Decodes a JSON request body, saying where it is malformed.
    static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws -> T {
        do {
            return try JSONDecoder().decode(T.self, from: Data(bytes))
        } catch DecodingError.dataCorrupted {
            // JSONDecoder does not say where; JSONSerialization does, by offset, without quoting the body.
            var location = "it is not"
            do { _ = try JSONSerialization.jsonObject(with: Data(bytes)) } catch {
                if let d = (error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String { location = d }
            }
            throw GatewayError.invalidRequest("the body is not valid JSON: \(location)", code: "invalid_json")
        } catch let DecodingError.keyNotFound(key, context) {
            let path = (context.codingPath + [key]).map(\.stringValue).joined(separator: ".")
            throw GatewayError.invalidRequest("missing required field '\(path)'", code: "missing_field")
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw GatewayError.invalidRequest("field '\(path)' has the wrong type", code: "invalid_field")
        } catch {
            throw GatewayError.invalidRequest("the body is not valid JSON", code: "invalid_json")
        }
    }
}

/// Answers every error in OpenAI's shape, counts requests by route and status, and logs one line
/// per request (never a body or a header value).
struct GatewayMiddleware: RouterMiddleware {
    typealias Context = GatewayContext
    let metrics: GatewayMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        var response: Response
        do {
            response = try await AuditScope.$requestID.withValue(context.id) { try await next(request, context) }
        } catch {
            let e = GatewayError.from(error)
            if e.code == GatewayError.internalError.code {
                context.logger.error("unhandled error", metadata: ["error_type": "\(type(of: error))"])
            }
            response = try e.response(from: request, context: context)
            context.logger.info("refused", metadata: ["code": "\(e.code)"])
        }
        let route = Self.route(request.uri.path)
        let elapsed = ContinuousClock.now - start
        metrics.request(route: route, method: request.method.rawValue, status: response.status.code, duration: elapsed)
        context.logger.info("request", metadata: [
            "method": "\(request.method.rawValue)", "route": "\(route)", "status": "\(response.status.code)",
            "ms": "\((elapsed.milliseconds * 1000).rounded() / 1000)",
        ])
        return response
    }

    static let adminActions: Set<String> = [
        "disable", "enable", "rotate", "schedule-deletion", "cancel-deletion", "policy", "rekey", "purge-shredded",
        "provider-keys", "suspend", "resume",
    ]

    /// The route template of a path, so that ids never become metric labels.
    static func route(_ path: String) -> String {
        switch path {
        case "/v1/chat/completions", "/v1/messages", "/v1/embeddings", "/v1/models", "/healthz", "/readyz", "/metrics":
            return path  // the busiest routes, without splitting the path
        default: break
        }
        let parts = path.split(separator: "/").map(String.init)
        switch parts.count {
        case 0: return "/"
        case 1, 2: return "/" + parts.joined(separator: "/")
        default: break
        }
        if parts.starts(with: ["v1", "chat", "completions"]) {
            return parts.count == 3 ? "/v1/chat/completions" : parts.count == 5 ? "/v1/chat/completions/{id}/messages" : "/v1/chat/completions/{id}"
        }
        // Admin resources: /admin/v1/<resource>/<id>[/<action>]: the id is never a label, and
        // only known actions are (a label per made-up path would grow the metrics without bound).
        if parts.starts(with: ["admin", "v1"]), (4...6).contains(parts.count),
           let id = ["keys": "{ref}", "tenants": "{name}", "tokens": "{id}", "jobs": "{id}"][parts[2]] {
            var template = "/admin/v1/\(parts[2])/\(id)"
            if parts.count >= 5 {
                guard Self.adminActions.contains(parts[4]) else { return "other" }
                template += "/\(parts[4])"
            }
            if parts.count == 6 {
                guard parts[4] == "provider-keys" else { return "other" }
                template += "/{upstream}"
            }
            return template
        }
        return parts.count <= 3 ? "/" + parts.joined(separator: "/") : "other"
    }
}

/// Deletes records past their tenant's retention, every `purgeIntervalSeconds`.
struct PurgeService: Service {
    let gateway: Gateway

    func run() async throws {
        let interval = Duration.milliseconds(Int64(gateway.configuration.purgeIntervalSeconds * 1000))
        while !Task.isShuttingDownGracefully {
            do {
                let removed = try await gateway.store.purgeExpired(before: Gateway.nowMs())
                gateway.metrics.recordsPurged(removed)
                if removed > 0 { gateway.logger.notice("expired records purged", metadata: ["count": "\(removed)"]) }
            } catch {
                gateway.logger.error("purge failed", metadata: ["error": "\(error)"])
            }
            try? await gracefulShutdownSleep(interval)
        }
    }

    private func gracefulShutdownSleep(_ d: Duration) async throws {
        try await cancelWhenGracefulShutdown { try await Task.sleep(for: d) }
    }
}

/// Runs the store's upkeep (the SQLite checkpoint) four times a second, and once more at shutdown.
/// Under load the log grows by tens of MB a second; the bound on it is enforced under the writer's
/// lock, for as long as copying what was written since the last pass takes: the more often the
/// passes, the shorter that stall (measured at 4 connections: p99 18-27 ms at 1 s, 9 ms at 200 ms).
struct MaintenanceService: Service {
    let gateway: Gateway

    func run() async throws {
        while !Task.isShuttingDownGracefully {
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .milliseconds(250)) }
            do { try await gateway.store.maintain() } catch {
                gateway.logger.error("storage upkeep failed", metadata: ["error": "\(error)"])
            }
        }
    }
}

/// What another replica may hold in a cache, named in a change notification.
enum CacheChange: Sendable, Equatable {
    case key(String), policy(String), tenant(String), providerKeys(String), job(String)
    case tokens
    /// Everything (after notifications were lost).
    case all

    var payload: String {
        switch self {
        case .key(let v): "key \(v)"
        case .policy(let v): "policy \(v)"
        case .tenant(let v): "tenant \(v)"
        case .providerKeys(let v): "provider-keys \(v)"
        case .job(let v): "job \(v)"
        case .tokens: "tokens"
        case .all: "all"
        }
    }

    init?(payload: String) {
        let parts = payload.split(separator: " ", maxSplits: 1).map(String.init)
        switch (parts.first, parts.count) {
        case ("key", 2): self = .key(parts[1])
        case ("policy", 2): self = .policy(parts[1])
        case ("tenant", 2): self = .tenant(parts[1])
        case ("provider-keys", 2): self = .providerKeys(parts[1])
        case ("job", 2): self = .job(parts[1])
        case ("tokens", 1): self = .tokens
        case ("all", 1): self = .all
        default: return nil
        }
    }
}

/// Runs ``Gateway/followChanges()`` beside the server.
struct ChangeFeedService: Service {
    let gateway: Gateway

    func run() async throws {
        await cancelWhenGracefulShutdown { await gateway.followChanges() }
    }
}

/// Shuts the upstream HTTP client down after the server has drained.
struct UpstreamClientService: Service {
    let client: UpstreamClient
    func run() async throws {
        try? await gracefulShutdown()
        try await client.shutdown()
    }
}

extension Duration {
    var milliseconds: Double { Double(components.seconds) * 1000 + Double(components.attoseconds) * 1e-15 }
}

extension HTTPField.Name {
    static let xAPIKey = HTTPField.Name("x-api-key")!
    static let keywardRecordID = HTTPField.Name("x-keyward-record-id")!
    static let keywardOverhead = HTTPField.Name("x-keyward-overhead-ms")!
    static let keywardKey = HTTPField.Name("x-keyward-key-ms")!
}
