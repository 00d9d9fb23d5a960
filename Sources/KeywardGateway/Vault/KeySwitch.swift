import KeywardAudit
import KeywardCrypto
import KeywardKeyStores
import KeywardStorage

extension Vault {
    /// Something about a tenant may have changed (a re-key switches its key): every sealer made
    /// before this is checked against the tenant's stored key before its records are written.
    /// Called for this replica's changes and for the other replicas' as the change feed brings them.
    func tenantsChanged() {
        tenantChanges.add(1, ordering: .releasing)
    }

    /// `records`, all sealed by `sealer`, on the tenant's current master key.
    ///
    /// A re-key switches new exchanges to the new key at once and sweeps the records written on
    /// the old one before it ends, but an exchange that began before the switch and is stored
    /// after the sweep (a long stream, a batch line in flight) would stay on the old key, which
    /// the tenant no longer opens once the job has ended. Such records get their data key wrapped
    /// under the current key (one key-store call, audited as `rewrap`, failed or not) and their
    /// headers re-tagged; the bodies are untouched. In the common case, no tenant changed since the
    /// sealer was made, this costs one atomic load. (A switch between the check and the write is
    /// covered by the job's last sweep, which comes after a whole pass over the tenant's records.)
    func onCurrentKey(_ records: [Record], sealedBy sealer: RecordSealer, scope: AuditScope) async throws -> [Record] {
        guard !records.isEmpty, tenantChanges.load(ordering: .acquiring) != sealer.tenantChanges,
              let current = try await tenants.tenant(named: sealer.tenant.name), current.key != sealer.tenant.key,
              let dataKey = sealer.materials.plaintextDataKey else { return records }
        let reference = try KeyReference.parse(current.key)
        let keyring = KeyStoreKeyring(store: try keyStores.store(for: reference), keyID: reference.keyID)
        let event = { (result: AuditResult) in
            AuditLog.event(.rewrap, key: sealer.tenant.key, record: records[0].id, result: result, detail: "to=\(current.key)", scope: scope)
        }
        // No event, no key operation: the call's event is written whether it succeeds or fails.
        try audit.requireAvailable()
        let wrapped: EncryptionMaterials
        do {
            wrapped = try await keyring.onEncrypt(EncryptionMaterials(suite: Self.suite, encryptionContext: sealer.materials.encryptionContext,
                                                                      plaintextDataKey: dataKey))
        } catch {
            try await audit.append(event(.failure(error)))
            throw error
        }
        try await audit.append(event(.ok))
        guard let edk = wrapped.encryptedDataKeys.last else {
            throw KeywardCryptoError(.internalError, "the key returned no wrapped data key")
        }
        return try records.map { record in
            var moved = record
            moved.header = try HeaderRewrap.rewrap(record.header, dataKey: dataKey, encryptedDataKeys: [edk])
            return moved
        }
    }
}
