import KeywardAudit
import KeywardCrypto
import KeywardKeyStores
import KeywardStorage

extension Files {
    /// Moves the blobs of `tenant`'s files from one master key to another (or, after a rotation,
    /// to the same key's newest version) by rewriting each blob's header only: its data key is
    /// unwrapped with `from` under the blob's own encryption context and wrapped with `to`; the
    /// message ID and data key stay, so the body's bytes are copied as they are and its frames stay
    /// valid. The new blob replaces the old one whole (a reader sees one or the other). Returns
    /// how many blobs were rewritten; idempotent, so a resumed job runs it again.
    func rewrapBlobs(tenant: String, from: KeyStoreKeyring, to: KeyStoreKeyring, fromKey: String, toKey: String,
                     scope: AuditScope) async throws -> Int {
        var after: String?
        var rewritten = 0
        while true {
            let page = try await store.records(RecordQuery(tenant: tenant, kind: Self.kind, after: after, limit: 500))
            guard let last = page.last else { return rewritten }
            after = last.id
            for record in page {
                let event = AuditLog.event(.rewrap, key: fromKey, record: "\(record.id)/\(Self.kind).content", detail: "to=\(toKey)", scope: scope)
                if try await rewrapBlob(Self.blobKey(tenant: tenant, id: record.id), record: record.id, from: from, to: to,
                                        moving: fromKey != toKey, event: event) {
                    rewritten += 1
                }
            }
        }
    }

    /// Rewrites one blob's header if its data key is under `from` (and, when moving to another
    /// key, not already under `to`). A blob deleted meanwhile is skipped.
    private func rewrapBlob(_ key: String, record: String, from: KeyStoreKeyring, to: KeyStoreKeyring, moving: Bool,
                            event: AuditEvent) async throws -> Bool {
        let download: any BlobDownload
        do { download = try await blobs.download(key) } catch let e as StorageError where e.code == .notFound { return false }
        defer { download.close() }
        // The header, from as many reads as it takes (a header is a few hundred bytes per data key).
        var head: [UInt8] = []
        var parsed: (MessageHeader, Int)?
        while parsed == nil {
            guard let chunk = try await download.next(limit: Self.readSize) else {
                throw KeywardCryptoError(.truncatedMessage, "file blob \(record) ends before its header")
            }
            head += chunk
            parsed = try? head.withUnsafeBytes { try MessageHeader.parse(prefixOf: $0) }
            if parsed == nil, head.count > 1 << 20 { throw KeywardCryptoError(.malformedMessage, "file blob \(record) has no readable header") }
        }
        let (header, length) = parsed!
        let edks = header.encryptedDataKeys
        if moving, edks.contains(where: to.owns) { return false }
        guard let edk = edks.first(where: from.owns) else { return false }
        let opened = try await from.onDecrypt(DecryptionMaterials(suite: header.suite, encryptionContext: header.encryptionContext),
                                              encryptedDataKeys: [edk])
        guard let dataKey = opened.plaintextDataKey else {
            throw KeywardCryptoError(.noDecryptableKey, "the data key of file blob \(record) did not unwrap")
        }
        let wrapped = try await to.onEncrypt(EncryptionMaterials(suite: header.suite, encryptionContext: header.encryptionContext,
                                                                 plaintextDataKey: dataKey))
        guard let newEDK = wrapped.encryptedDataKeys.last else {
            throw KeywardCryptoError(.internalError, "the new key returned no wrapped data key")
        }
        let newHeader = try HeaderRewrap.rewrap(header, dataKey: dataKey, encryptedDataKeys: [newEDK])
        // Logged before the blob changes: no event, no rewrite.
        try await audit.append(event)
        let upload = try await blobs.upload(key)
        do {
            try await upload.write(newHeader + head[length...])
            while let chunk = try await download.next(limit: Self.readSize) { try await upload.write(chunk) }
            try await upload.commit()
        } catch {
            await upload.abort()
            throw error
        }
        return true
    }
}
