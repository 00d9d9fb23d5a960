import KeywardAudit
import KeywardCrypto
import KeywardStorage

extension Vault {
    /// When a tenant was read: the vault's count of tenant changes just before the read, and the time.
    public struct TenantView: Sendable {
        let changes: Int
        let at: ContinuousClock.Instant
    }

    /// How long a tenant read is trusted to hold the current key when no change was noticed, and
    /// so how long the authenticator caches a principal (which holds its tenant's read): a change
    /// notice another replica failed to send is seen within it anyway.
    static let tenantViewLife: Duration = .seconds(5)

    /// Take before reading a tenant from the store.
    func tenantView() -> TenantView {
        TenantView(changes: tenantChanges.load(ordering: .acquiring), at: .now)
    }

    /// Something about a tenant may have changed (a re-key switches its key): tenants read before
    /// this are checked against the store before records sealed for them are written. Called for
    /// this replica's changes and for the other replicas' as the change feed brings them.
    func tenantsChanged() {
        tenantChanges.add(1, ordering: .releasing)
    }

    /// `records`, all sealed by `sealer`, on the tenant's current master key, and that key.
    ///
    /// A re-key switches new exchanges to the new key at once and sweeps the records written on
    /// the old one before it ends, but an exchange that read its tenant before the switch and is
    /// stored after the sweep (a long stream, a batch line in flight) would stay on the old key,
    /// which the tenant no longer opens once the job has ended. Such records get their data key
    /// wrapped under the current key (one key-store call, audited as `rewrap`) and their headers
    /// re-tagged; the bodies are untouched. When no tenant changed since the sealer's tenant was
    /// read, a few seconds ago, with the change feed listening, this costs no I/O. (A switch
    /// between this check and the write is left to the job's last sweep: a narrow window, since
    /// the job switches the key before its pass over the tenant's records.)
    func onCurrentKey(_ records: [Record], sealedBy sealer: RecordSealer, scope: AuditScope) async throws -> (records: [Record], key: String) {
        let old = sealer.tenant.key
        if let seen = sealer.seen, seen.changes == tenantChanges.load(ordering: .acquiring),
           cachesTrusted.load(ordering: .relaxed), ContinuousClock.now - seen.at < Self.tenantViewLife {
            return (records, old)
        }
        guard !records.isEmpty, let current = try await tenants.tenant(named: sealer.tenant.name), current.key != old else {
            return (records, old)
        }
        guard let dataKey = sealer.materials.plaintextDataKey else {
            throw KeywardCryptoError(.internalError, "an exchange's materials hold no data key")
        }
        let edk = try await wrap(dataKey, under: current.key, context: Self.scope(current.name),
                                 event: (old, records[0].id, "to=\(current.key)"), scope: scope)
        let moved = try records.map { record in
            var moved = record
            moved.header = try HeaderRewrap.rewrap(record.header, dataKey: dataKey, encryptedDataKeys: [edk])
            return moved
        }
        return (moved, current.key)
    }
}
