import Foundation
import Hummingbird
import KeywardAudit
import KeywardCrypto
import KeywardKeyStores
import KeywardStorage
import Logging
import ServiceLifecycle
import Synchronization

/// The gateway's parts — storage, key stores, vault, audit log, authentication, policies, caches
/// and upstreams — wired once, and the HTTP application over them: one controller per surface,
/// each given exactly the parts it uses, and one service per long-running task.
public final class Gateway: Sendable {
    public let configuration: GatewayConfiguration
    public let store: any RecordStore
    public let keyStores: KeyStores
    public let vault: Vault
    public let upstreams: UpstreamClient
    public let metrics: GatewayMetrics
    public let audit: AuditLog
    let storage: GatewayStorage
    let alerts: AlertCenter
    let logger: Logger
    let authenticator: Authenticator
    let policies: KeyPolicies
    let providerKeys: ProviderKeys
    let replication: Replication
    let files: Files
    let limiter: RateLimiter
    /// This process's name in the leases of the batches it runs: new at each start (replicas may
    /// share a data folder, and a restarted process must not take for its own a lease that its
    /// previous life held while it may still be running somewhere), with the host's name for
    /// whoever reads the audit log.
    let replicaID = String(ProcessInfo.processInfo.hostName.prefix(64)) + "/" + Tokens.identifier("replica_")
    /// The listener's TLS contexts (reloaded on SIGHUP), if it speaks TLS.
    let tlsContexts: TLSContexts?
    /// Ids of submitted re-key jobs, for the job service.
    let jobQueue = AsyncStream.makeStream(of: String.self)
    /// Set by ``prepare()``: signs audit checkpoints.
    let signer = Mutex<AuditSigner?>(nil)

    /// Seconds on a monotonic clock, for the caches.
    static let clock = CachingMaterialsManager.monotonicSeconds
    /// Milliseconds since 1970, as stored.
    static func nowMs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    /// A gateway over `storage`, with the local key store in the data folder's `keys/` (created
    /// 0700 with the folder) unless the storage holds `local:` keys itself.
    ///
    /// - Parameter keyStores: the key stores to use instead of those the environment names (tests).
    public init(configuration: GatewayConfiguration, storage: GatewayStorage, logger: Logger, keyStores: KeyStores? = nil) throws {
        self.configuration = configuration
        self.logger = logger
        try configuration.createDataFolder()
        self.storage = storage
        store = storage.records
        self.keyStores = keyStores ?? KeyStores(configuration: .fromEnvironment(localFolder: configuration.dataFolder + "/keys",
                                                                                rootKeyFile: configuration.rootKeyFile, kmip: configuration.kmip))
        // Every store is seen through Keyward's own key states, kept in the database.
        self.keyStores.govern(by: StoredKeyStates(store: store))
        metrics = GatewayMetrics()
        metrics.storageMemory = storage.memoryInUse
        alerts = AlertCenter(configuration: configuration.alerts)
        let traces = Traces(enabled: configuration.tracing)
        audit = AuditLog(store: store, metrics: metrics, logger: logger, alerts: alerts, traces: traces)
        vault = Vault(keyStores: self.keyStores, limits: configuration.cacheLimits, metrics: metrics, audit: audit, tenants: store, traces: traces)
        authenticator = Authenticator(store: store, vault: vault, audit: audit, metrics: metrics)
        policies = KeyPolicies(store: store, vault: vault, audit: audit, metrics: metrics, logger: logger)
        providerKeys = ProviderKeys(store: store, vault: vault, audit: audit)
        replication = Replication(feed: storage.changes, vault: vault, authenticator: authenticator, policies: policies,
                                  providerKeys: providerKeys, jobs: jobQueue.continuation, metrics: metrics, logger: logger)
        upstreams = UpstreamClient(traces: traces)
        limiter = RateLimiter(defaults: configuration.rateLimits, audit: audit, metrics: metrics)
        if storage.blobs == nil, storage.changes != nil {
            logger.warning("file blobs are kept in this replica's data folder, where other replicas cannot read them: give every replica the same S3-compatible blob store (\"blobs\" in the config)")
        }
        do { tlsContexts = try configuration.tls.map(TLSContexts.init) } catch {
            throw GatewayError.config("cannot load the TLS certificate, key or client CA (\(error))")
        }
        files = Files(store: store, blobs: try storage.blobs ?? FolderBlobStore(root: configuration.dataFolder + "/blobs"), vault: vault,
                      audit: audit, sizeLimit: configuration.fileSizeLimit)
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
            await replication.changed(.tokens)
        }
        try? await audit.append(AuditLog.event(
            .alert, key: alert.key, result: suspended ? .tokenSuspended : .ok,
            detail: "\(alert.reason) count=\(alert.count) subjects=\(alert.subjects.joined(separator: ","))",
            scope: AuditScope(actor: alert.principal, tenant: cause.tenant, requestID: cause.requestID)))
        alerts.deliver(alert, tenant: cause.tenant)
    }

    /// Where the records are, for logs (never a password).
    public var databaseDescription: String { storage.description }
    /// The storage's services, which must run before ``prepare()`` and stop after the
    /// application (``application(onServerRunning:)`` does not include them).
    public var storageServices: [any Service] { storage.services }

    /// Something cached may be stale: forget it here, and tell the other replicas.
    func changed(_ change: CacheChange) async { await replication.changed(change) }

    /// Follows the other replicas' changes until cancelled (returns at once for storage one
    /// process owns). The server runs this itself; tools that use a gateway without serving run it
    /// to use the data-key cache.
    public func followChanges() async { await replication.follow() }

    /// Whether cached data keys, principals and policies may be used now.
    public var cachesAreTrusted: Bool { vault.cachesTrusted.load(ordering: .relaxed) }

    /// Migrates the database and installs the admin token on first start. Returns a generated
    /// admin token, to be shown once, when none was given.
    public func prepare() async throws -> Secret? {
        try await store.migrate()
        if let backend = storage.localKeys {
            // Every replica's `local:` keys are the shared storage's, opened with the shared root key.
            let root = RootKeySource.fromEnvironment(keyStoreFolder: configuration.dataFolder + "/keys", rootKeyFile: configuration.rootKeyFile)
            keyStores.install(try await LocalKeyStore.open(backend: backend, rootKey: root))
        }
        let home: AuditSigner.Home = storage.settings.map { .settings($0) } ?? .folder(configuration.dataFolder)
        let (loaded, created) = try await AuditSigner.loadOrCreate(home: home, keyStores: keyStores, keyReference: configuration.auditKey)
        signer.withLock { $0 = loaded }
        try await audit.append(AuditLog.event(created ? .auditKeyCreated : .unwrap, key: configuration.auditKey,
                                              record: "audit-signing.key", scope: AuditScope(actor: "system")))
        // Kept before the gateway refused them: the PIN is in the tenant's row and its events.
        for tenant in try await store.tenants() where [tenant.key, tenant.previousKey].contains(where: { key in
            key.flatMap(KeyReference.init(parsing:))?.holdsSecret == true
        }) {
            logger.warning("a tenant's pkcs11: key carries its PIN (pin-value=): re-key it to the same key named with pin-source=",
                           metadata: ["tenant": "\(tenant.name)"])
        }
        guard try await store.tokens(role: .admin).isEmpty else {
            if let given = configuration.initialAdminToken,
               try await store.token(hash: Tokens.hash(given))?.role != .admin {
                logger.warning("KEYWARD_ADMIN_TOKEN is ignored: an admin token was installed on first start")
            }
            return nil
        }
        let (generated, id) = Tokens.generate()
        let token = configuration.initialAdminToken ?? generated
        do {
            try await store.insertToken(TokenRecord(id: id, tenant: nil, role: .admin, hash: Tokens.hash(token), createdAt: Self.nowMs()))
        } catch let e as StorageError where e.code == .alreadyExists {
            return nil  // another replica, starting at the same moment, installed this token first
        }
        try await audit.append(AuditLog.event(.tokenCreate, detail: "id=\(id) role=admin", scope: AuditScope(actor: "system")))
        logger.notice("admin token installed", metadata: ["token_id": "\(id)"])
        return configuration.initialAdminToken == nil ? generated : nil
    }

    /// The key life cycle's logic, which the routes and tools share.
    var keyLifecycle: KeyLifecycle {
        KeyLifecycle(store: store, keyStores: keyStores, audit: audit, policies: policies, replication: replication, metrics: metrics,
                     alerts: alerts, logger: logger)
    }

    /// The router: the error/metrics middleware, then every surface's controller, each behind
    /// the authentication of the role it serves (health, metrics and the OpenAPI document need no token).
    public func router() -> Router<GatewayContext> {
        let router = Router(context: GatewayContext.self)
        // Outermost: the request's span covers everything, errors included.
        if configuration.tracing { router.middlewares.add(RequestSpan()) }
        router.middlewares.add(GatewayMiddleware(metrics: metrics))
        router.middlewares.add(ExpectContinue { $0.channel })
        let adminCertificates = configuration.tls.map { $0.clientCAFile != nil && $0.clientCertificates == .admin } ?? false
        func group(_ path: RouterPath = "", _ role: TokenRecord.Role?) -> RouterGroup<GatewayContext> {
            let group = router.group(path)
            // The any-role group (session, dashboard) is the console's first call for app tokens too.
            if adminCertificates, let role, role != .app { group.add(middleware: RequireClientCertificate()) }
            return group.add(middleware: Authenticate(authenticator: authenticator, role: role))
        }
        HealthController(store: store, keyStores: keyStores, audit: audit, vault: vault, hasChangeFeed: storage.changes != nil,
                         metrics: metrics).addRoutes(to: router)
        AdminController(store: store, keyStores: keyStores, vault: vault, audit: audit, policies: policies, replication: replication,
                        upstreams: configuration.upstreams, bodyLimit: configuration.bodyLimit, logger: logger)
            .addRoutes(to: group("admin/v1", .admin))
        KeyLifecycleController(lifecycle: keyLifecycle, bodyLimit: configuration.bodyLimit)
            .addRoutes(to: group("admin/v1", .keyAdmin))
        AuditController(store: store, audit: audit, publicKey: { [unowned self] in signer.withLock { $0?.publicKey } })
            .addRoutes(to: group("admin/v1", .auditor))
        SessionController(metrics: metrics).addRoutes(to: group("admin/v1", nil))
        ConsoleController().addRoutes(to: router)
        // Requests the app encrypted are opened before, and answers sealed after, every app route
        // (on the model routes, once the rate limits let the request through).
        let opening = EncryptedExchanges(vault: vault, policies: policies, bodyLimit: configuration.bodyLimit)
        let authenticated = group("", .app)
        addModelRoutes(to: authenticated, opening: opening)
        let apps = authenticated.group().add(middleware: opening)
        StoredCompletionsController(store: store, vault: vault, audit: audit, policies: policies, logger: logger).addRoutes(to: apps)
        ConversationsController(conversations: conversations, policies: policies, bodyLimit: configuration.bodyLimit).addRoutes(to: apps)
        FilesController(files: files, policies: policies).addRoutes(to: apps)
        BatchesController(batches: batches, policies: policies, bodyLimit: configuration.bodyLimit).addRoutes(to: apps)
        return router
    }

    var conversations: Conversations { Conversations(store: store, vault: vault, audit: audit) }
    var batches: Batches { Batches(files: files) }

    /// The routes that call models, under the rate limits: the app group's, and those a batch's
    /// lines are sent through (a batch's lines count against its token's and tenant's limits).
    /// - Parameter opening: what follows the limits (the app group's encrypted exchanges).
    private func addModelRoutes(to group: RouterGroup<GatewayContext>, opening: EncryptedExchanges? = nil) {
        let group = group.group().add(middleware: RateLimit(limiter: limiter))
        if let opening { group.add(middleware: opening) }
        AIController(configuration: configuration, vault: vault, audit: audit, policies: policies, providerKeys: providerKeys,
                     upstreams: upstreams, limiter: limiter, metrics: metrics, logger: logger).addRoutes(to: group)
        ResponsesController(configuration: configuration, conversations: conversations, policies: policies, providerKeys: providerKeys,
                            upstreams: upstreams, limiter: limiter, metrics: metrics, logger: logger).addRoutes(to: group)
    }

    /// Runs batches (the batch service's): their lines go through the model routes, without
    /// authentication (each is sent as the token that made the batch) or the encrypted-exchange layer.
    var batchRunner: BatchRunner {
        let lines = Router(context: GatewayContext.self)
        addModelRoutes(to: lines.group(""))
        return BatchRunner(batches: batches, authenticator: authenticator, sender: LineSender(responder: lines.buildResponder(), logger: logger),
                           permits: Permits(limit: configuration.batches.upstreamConcurrency), settings: configuration.batches,
                           upstreams: configuration.upstreams, owner: replicaID, lineLimit: configuration.bodyLimit, logger: logger)
    }

    /// The HTTP application with every service; `runService()` serves until SIGTERM or SIGINT,
    /// then drains in-flight requests and stops the services.
    public func application(onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }) -> some ApplicationProtocol {
        guard let signer = signer.withLock({ $0 }) else { preconditionFailure("Gateway.prepare() must run before application()") }
        // Storage with a change feed is shared by replicas: so are their rate counts.
        var services: [any Service] = storage.changes == nil ? [] : [
            ChangeFeedService(replication: replication),
            RateCountSyncService(limiter: limiter, store: store, replica: replicaID, logger: logger),
        ]
        services += [
            AuditCheckpointService(store: store, signer: signer, every: configuration.auditCheckpointEvery, logger: logger, now: Self.nowMs),
            AuditResumeService(audit: audit),
            // Before the jobs: a service group stops its services in reverse order, and alerts
            // raised while jobs drain must still be handled.
            AlertService(alerts: alerts, logger: logger),
            PurgeService(store: store, files: files, interval: .milliseconds(Int64(configuration.purgeIntervalSeconds * 1000)), metrics: metrics, logger: logger),
            KeyDeletionService(lifecycle: keyLifecycle, interval: .milliseconds(Int64(configuration.purgeIntervalSeconds * 1000))),
            MaintenanceService(store: store, logger: logger),
            JobService(runner: jobRunner, queue: jobQueue.stream, stop: jobQueue.continuation),
            UpstreamClientService(client: upstreams),
            // Last, so stopped first: its lines in flight finish while the upstream client still runs.
            BatchService(runner: batchRunner),
        ]
        if let tlsContexts { services.append(TLSReloadService(contexts: tlsContexts, logger: logger)) }
        return Application(
            router: router(),
            server: configuration.listener.server(tls: tlsContexts, metrics: metrics),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: nil),
            services: services,
            onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? 0) },
            logger: logger)
    }

    /// Runs re-key jobs (the job service's, and ``runJob(id:)``'s).
    var jobRunner: RekeyJob {
        RekeyJob(store: store, files: files, keyStores: keyStores, audit: audit, replication: replication, metrics: metrics, logger: logger)
    }

    /// Moves a tenant to another master key: a job (run by the job service) switches new records
    /// to it, then re-wraps the stored ones. Records not yet re-wrapped stay readable meanwhile.
    public func startRekey(tenant name: String, to key: String, actor: String) async throws -> Job {
        try await keyLifecycle.startRekey(tenant: name, to: key, actor: actor)
    }

    /// Runs a job here and now (benchmarks, tools); the server runs them in its job service.
    public func runJob(id: String) async throws -> Job {
        guard let job = try await store.job(id: id) else { throw GatewayError.notFound("no job \(id)") }
        return try await jobRunner.run(job)
    }
}
