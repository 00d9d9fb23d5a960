import KeywardStorage
import Logging

/// Keeps this process's caches honest: drops what a change makes stale, here and (through the
/// change feed, when the storage has one) on every other replica; submitted jobs reach every
/// replica's job service the same way.
final class Replication: Sendable {
    let feed: (any ChangeFeed)?
    let vault: Vault
    let authenticator: Authenticator
    let policies: KeyPolicies
    let providerKeys: ProviderKeys
    /// Where job ids go for the job service.
    let jobs: AsyncStream<String>.Continuation
    let metrics: GatewayMetrics
    let logger: Logger

    init(feed: (any ChangeFeed)?, vault: Vault, authenticator: Authenticator, policies: KeyPolicies, providerKeys: ProviderKeys,
         jobs: AsyncStream<String>.Continuation, metrics: GatewayMetrics, logger: Logger) {
        self.feed = feed
        self.vault = vault
        self.authenticator = authenticator
        self.policies = policies
        self.providerKeys = providerKeys
        self.jobs = jobs
        self.metrics = metrics
        self.logger = logger
        // Until the feed listens, another replica's revocation could go unseen.
        if feed != nil { vault.cachesTrusted.store(false, ordering: .relaxed) }
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

    /// Follows the other replicas' changes until cancelled (returns at once without a feed).
    /// While not listening, no cache is trusted; on listening (again) every cache is dropped,
    /// since what was missed is unknown.
    func follow() async {
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

    /// Drops what `change` makes stale.
    func apply(_ change: CacheChange) {
        switch change {
        case .key(let ref):
            // Every change purges: a disable stops cached use at once, a rotation makes new data
            // keys use the new version, an enable starts from the store's state.
            vault.purge(key: ref)
            providerKeys.forget()
        case .policy: policies.forget()
        case .tokens: authenticator.forget()
        case .tenant:
            vault.tenantsChanged()
            authenticator.forget()
            providerKeys.forget()
        case .providerKeys: providerKeys.forget()
        case .job(let id): jobs.yield(id)
        case .all:
            vault.tenantsChanged()
            vault.purgeAll()
            policies.forget()
            authenticator.forget()
            providerKeys.forget()
        }
    }
}
