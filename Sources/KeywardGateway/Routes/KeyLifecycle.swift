import Foundation
import KeywardAudit
import KeywardKeyStores
import KeywardStorage
import Logging

/// The key life cycle's logic that routes, tools and the key deletion service share: describing
/// and changing a key, destroying keys whose waiting period ended, and starting the re-key of a
/// tenant (which the job service then runs).
///
/// Keyward keeps a state of its own for each key it has revoked (``KeyStateRecord``), for every
/// store: it holds on every replica at once, whatever the store says (a store may have no
/// disable, apply one eventually, or have the key enabled behind Keyward's back), and it keeps
/// the waiting period of stores that destroy at once. Every store is seen through it
/// (``StoredKeyStates``).
struct KeyLifecycle {
    let store: any RecordStore
    let keyStores: KeyStores
    let audit: AuditLog
    let policies: KeyPolicies
    let replication: Replication
    let metrics: GatewayMetrics
    let alerts: AlertCenter
    let logger: Logger

    /// Moves a tenant to another master key: a job (run by the job service) switches new records
    /// to it, then re-wraps the stored ones. Records not yet re-wrapped stay readable meanwhile.
    func startRekey(tenant name: String, to key: String, actor: String) async throws -> Job {
        guard let tenant = try await store.tenant(named: name) else { throw GatewayError.notFound("no tenant \(name)") }
        _ = try await keyStores.enabledKey(key)
        if let running = try await store.jobs(status: .running).first(where: { $0.tenant == name }) {
            throw GatewayError(.conflict, type: "invalid_request_error", code: "job_running",
                               "re-key job \(running.id) of \(name) is still running")
        }
        // A move that failed half-way is finished first: some records are still under its old key.
        if let previous = tenant.previousKey, key != tenant.key {
            throw GatewayError(.conflict, type: "invalid_request_error", code: "unfinished_rekey",
                               "\(name)'s move from \(previous) to \(tenant.key) is unfinished: re-key to \(tenant.key) to finish it first")
        }
        let scope = AuditScope(actor: actor, tenant: name)
        let job = Job(id: Tokens.identifier("job_"), tenant: name, fromKey: tenant.previousKey ?? tenant.key, toKey: key,
                      total: try await store.countRecords(tenant: name), createdAt: Gateway.nowMs())
        try await audit.append(AuditLog.event(.rekeyStart, key: job.fromKey, detail: "job=\(job.id) to=\(job.toKey)", scope: scope))
        // The new key inherits the old key's grants if it has no policy of its own.
        if try await store.policy(key: job.toKey) == nil {
            try await policies.save(try await policies.policy(forKey: job.fromKey), forKey: job.toKey, scope: scope)
            await replication.changed(.policy(job.toKey))
        }
        // The job itself switches the tenant to the new key as it starts (and again on resuming).
        try await store.createJob(job)
        // Every replica's job service joins in.
        await replication.changed(.job(job.id))
        logger.notice("re-key submitted", metadata: ["job": "\(job.id)", "tenant": "\(name)", "to": "\(job.toKey)"])
        return job
    }

    func describe(_ reference: KeyReference, _ ref: String) async throws -> KeyDescription {
        try await keyStores.describe(reference, ref)
    }

    /// Applies `change` to the key `ref`, logged in the audit chain with its outcome (no event, no
    /// change), and drops every replica's cached data keys of it. Returns the key as it is now.
    func change(_ change: KeyChange, key ref: String, actor: String) async throws -> KeyDescription {
        // The route checked it (a reference with a PIN only if a tenant already uses it).
        let reference: KeyReference
        do { reference = try KeyReference.parse(ref) } catch {
            throw GatewayError.invalidRequest("\(error)", code: "invalid_key_reference")
        }
        let keyStore = try keyStores.store(for: reference)
        if case .scheduleDeletion(let days) = change {
            // The stores' own rule (AWS KMS's), checked before anything is attempted or logged.
            do { try type(of: keyStore).checkWaitingPeriod(days) } catch let e as KeyStoreError {
                throw GatewayError.invalidRequest(e.reason, code: "invalid_field")
            }
        }
        try audit.requireAvailable()
        let scope = AuditScope(actor: actor)
        do {
            try await apply(change, reference.canonical, reference.keyID, keyStore)
        } catch {
            // Keyward's state may have been written before the store failed: drop cached data keys anyway.
            await replication.changed(.key(ref))
            let e = GatewayError.from(error)
            try await audit.append(AuditLog.event(change.operation, key: ref, result: .error(e.code), detail: change.detail, scope: scope))
            if let k = error as? KeyStoreError, k.code == .keyNotFound { throw GatewayError.notFound("no key \(ref)") }
            if let k = error as? KeyStoreError, k.code == .invalidArgument { throw GatewayError.invalidRequest(k.reason, code: "invalid_key_operation") }
            throw error
        }
        try await audit.append(AuditLog.event(change.operation, key: ref, detail: change.detail, scope: scope))
        await announce(change.operation, key: ref, actor: actor)
        return try await describe(reference, ref)
    }

    /// Keyward's state (kept under the reference's canonical spelling, `key`) is written first
    /// where it revokes (it then holds even if the store's call fails, and retrying is safe), last
    /// where it restores (the store must agree first).
    private func apply(_ change: KeyChange, _ key: String, _ keyID: String, _ keyStore: any KeyStore) async throws {
        let now = Gateway.nowMs()
        let current = try await store.keyState(key: key)
        switch change {
        case .disable:
            if current == nil {
                // A key that does not exist gets no state (a key created later under its name would
                // be born revoked); a store that cannot answer does not delay the revocation.
                do { _ = try await keyStore.describe(keyID: keyID) } catch let e as KeyStoreError where e.code == .keyNotFound { throw e } catch {}
                try await insert(KeyStateRecord(key: key, state: .disabled, updatedAt: now))
            }
            do { try await keyStore.disableKey(keyID: keyID) } catch let e as KeyStoreError where e.code == .invalidArgument {
                // HashiCorp Vault's Transit, say: Keyward's revocation is the only one, and the
                // key's description says so (its store_state stays enabled).
                logger.notice("key revoked by Keyward alone: its store cannot disable it", metadata: ["key": "\(key)"])
            }
        case .enable:
            if let current, current.state != .disabled {
                throw GatewayError.invalidRequest(current.state == .pendingDeletion
                    ? "key \(key) is pending deletion: cancel the deletion first" : "key \(key) was destroyed", code: "invalid_key_operation")
            }
            let d = try await keyStore.describe(keyID: keyID)
            if (d.storeState ?? d.state) != .enabled { try await keyStore.enableKey(keyID: keyID) }
            if let current { try await replace(current, with: nil) }
        case .rotate:
            try await keyStore.rotateKey(keyID: keyID)
        case .scheduleDeletion(let days):
            if let current, current.state == .destroyed || (current.state == .pendingDeletion && keyStore.deletion != .immediate) {
                throw GatewayError.invalidRequest("key \(key) is \(current.state.rawValue) already", code: "invalid_key_operation")
            }
            switch keyStore.deletion {
            case .scheduled:
                let date = try await keyStore.scheduleKeyDeletion(keyID: keyID, days: days)
                let pending = KeyStateRecord(key: key, state: .pendingDeletion, deleteAt: Int64(date.timeIntervalSince1970 * 1000), updatedAt: now)
                if let current { try await replace(current, with: pending) } else { try await insert(pending) }
            case .immediate:
                _ = try await keyStore.describe(keyID: keyID)  // a missing key is not scheduled
                // Scheduled already (a retry after the store failed): the date stands, the store is asked again.
                if current?.state != .pendingDeletion {
                    let pending = KeyStateRecord(key: key, state: .pendingDeletion, deleteAt: now + Int64(days) * 86_400_000, updatedAt: now)
                    if let current { try await replace(current, with: pending) } else { try await insert(pending) }
                }
                // Meanwhile the store refuses the key to every client too, where it can.
                do { try await keyStore.disableKey(keyID: keyID) } catch let e as KeyStoreError where e.code == .invalidArgument {}
            case .unsupported:
                _ = try await keyStore.scheduleKeyDeletion(keyID: keyID, days: days)  // refuses, with how to do it
            }
        case .cancelDeletion:
            if let current, current.state == .pendingDeletion, let date = current.deleteAt, date <= now {
                throw GatewayError.invalidRequest("key \(key)'s waiting period has ended: it is destroyed", code: "invalid_key_operation")
            }
            if keyStore.deletion == .immediate {
                guard current?.state == .pendingDeletion else {
                    throw GatewayError.invalidRequest("key \(key) is not pending deletion", code: "invalid_key_operation")
                }
            } else {
                try await keyStore.cancelKeyDeletion(keyID: keyID)
            }
            if let current, current.state == .pendingDeletion {
                try await replace(current, with: KeyStateRecord(key: key, state: .disabled, updatedAt: now))
            }
        }
    }

    private func insert(_ state: KeyStateRecord) async throws {
        do { try await store.insertKeyState(state) } catch let e as StorageError where e.code == .alreadyExists {
            throw Self.changedMeanwhile(state.key)
        }
    }

    private func replace(_ old: KeyStateRecord, with new: KeyStateRecord?) async throws {
        guard try await store.replaceKeyState(old, with: new) else { throw Self.changedMeanwhile(old.key) }
    }

    private static func changedMeanwhile(_ ref: String) -> GatewayError {
        GatewayError(.conflict, type: "invalid_request_error", code: "key_state_changed",
                     "key \(ref) changed meanwhile (another change, or its deletion began): read it and try again")
    }

    /// What every replica, the metrics, the webhook and the log learn of a key change.
    func announce(_ operation: AuditOperation, key ref: String, actor: String) async {
        await replication.changed(.key(ref))
        metrics.keyEvent(operation.rawValue)
        alerts.keyChanged(ref, operation: operation.rawValue, actor: actor,
                          tenants: (try? await store.tenants(usingKey: ref).map(\.name)) ?? [])
        logger.notice("key \(operation.rawValue)", metadata: ["key": "\(ref)"])
    }

    /// How long a replica holds a key it claimed for destruction before another may take it over.
    static let deletionLease: Int64 = 60_000

    /// Destroys the keys whose deletion Keyward scheduled and whose waiting period has ended. Each
    /// is claimed first, with a lease (from then on Keyward refuses it, a cancellation comes too
    /// late, and one replica at a time works on it), then destroyed in its store (a store that
    /// keeps its own schedule must show it destroyed), logged, and confirmed. A failure is retried
    /// once the lease has run out.
    func destroyDueKeys(now: Int64 = Gateway.nowMs()) async {
        let due: [KeyStateRecord]
        do { due = try await store.keysDueForDeletion(at: now) } catch {
            logger.error("could not read the keys due for deletion", metadata: ["error": "\(error)"])
            return
        }
        for state in due where state.state == .pendingDeletion || state.updatedAt + Self.deletionLease <= now {
            do {
                let claimed = KeyStateRecord(key: state.key, state: .destroyed, deleteAt: state.deleteAt, updatedAt: now)
                guard try await store.replaceKeyState(state, with: claimed) else { continue }  // cancelled, or another replica has it
                if state.state == .pendingDeletion { await replication.changed(.key(state.key)) }
                try await destroy(claimed, now: now)
            } catch {
                logger.error("a key due for deletion is not destroyed yet: retried when its lease ends",
                             metadata: ["key": "\(state.key)", "error": "\(error)"])
            }
        }
    }

    /// Destroys a claimed key in its store, logs it, then clears its date (destruction confirmed).
    private func destroy(_ claimed: KeyStateRecord, now: Int64) async throws {
        let reference = try KeyReference.parse(claimed.key)
        let keyStore = try keyStores.store(for: reference)
        try audit.requireAvailable()
        let scope = AuditScope(actor: "system")
        do {
            if keyStore.deletion == .immediate {
                try await keyStore.destroyKey(keyID: reference.keyID)
            } else {
                // The store destroys it on its own date (maybe a little after Keyward's: looked at
                // again when the lease runs out); one that kept it (a deletion cancelled in the
                // store itself) is an anomaly to report, not a destruction to log.
                let state: KeyState
                do {
                    // Keyward's state says destroyed; the store's own is beside it when it differs.
                    state = try await keyStore.describe(keyID: reference.keyID).storeState ?? .destroyed
                } catch let e as KeyStoreError where e.code == .keyNotFound {
                    state = .destroyed
                }
                if state == .pendingDeletion { return }
                guard state == .destroyed else {
                    throw KeyStoreError(.keyDisabled, "the store kept \(claimed.key) (its state: \(state.rawValue))")
                }
            }
        } catch {
            try await audit.append(AuditLog.event(.destroyKey, key: claimed.key, result: .error(GatewayError.from(error).code), scope: scope))
            throw error
        }
        try await audit.append(AuditLog.event(.destroyKey, key: claimed.key, scope: scope))
        guard try await store.replaceKeyState(claimed, with: KeyStateRecord(key: claimed.key, state: .destroyed, updatedAt: now)) else {
            return  // another replica took it over after the lease
        }
        await announce(.destroyKey, key: claimed.key, actor: "system")
    }
}

/// A change to a key's life cycle, through the admin API.
enum KeyChange: Sendable, Equatable {
    case disable, enable, rotate, scheduleDeletion(days: Int), cancelDeletion

    var operation: AuditOperation {
        switch self {
        case .disable: .disable
        case .enable: .enable
        case .rotate: .rotate
        case .scheduleDeletion: .scheduleDeletion
        case .cancelDeletion: .cancelDeletion
        }
    }

    var detail: String? {
        if case .scheduleDeletion(let days) = self { return "days=\(days)" }
        return nil
    }
}

extension KeyStores {
    /// The key `reference` (spelt `ref`) as its store describes it; 404 if the store has none.
    func describe(_ reference: KeyReference, _ ref: String) async throws -> KeyDescription {
        do {
            var d = try await store(for: reference).describe(keyID: reference.keyID)
            d.reference = ref
            return d
        } catch let e as KeyStoreError where e.code == .keyNotFound {
            throw GatewayError.notFound("no key \(ref)")
        }
    }

    /// A reference an admin gives, which the gateway keeps (with a tenant, in key states, audit
    /// events, logs and alerts): 400 if it is malformed or holds a PIN.
    static func kept(_ ref: String) throws -> KeyReference {
        let reference: KeyReference
        do { reference = try KeyReference.parse(ref) } catch {
            throw GatewayError.invalidRequest("\(error)", code: "invalid_key_reference")
        }
        guard !reference.holdsSecret else { throw GatewayError.invalidRequest(KeyStores.pinValueRefused, code: "invalid_key_reference") }
        return reference
    }

    /// Why a `pkcs11:` reference with `pin-value=` is refused (the message never repeats it).
    static let pinValueRefused = "a pkcs11: key the gateway keeps cannot carry its PIN (pin-value=): the reference is stored, "
        + "audited and logged as given; name a file holding the PIN with pin-source= instead"

    /// A key an admin names for a tenant (a new tenant's, a re-key's target): 400 if the reference
    /// is malformed or holds a PIN, 404 if its store has no such key, 409 if the key is not enabled.
    func enabledKey(_ ref: String) async throws -> KeyReference {
        let reference = try Self.kept(ref)
        let description = try await describe(reference, ref)
        guard description.state == .enabled else {
            throw GatewayError(.conflict, type: "invalid_request_error", code: "key_not_enabled",
                               "key \(ref) is \(description.state.rawValue), not enabled")
        }
        return reference
    }
}
