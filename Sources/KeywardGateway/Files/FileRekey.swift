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
    ///
    /// - Throws: when a file's blob is missing or under neither key (its record still there):
    ///   the job then fails, and the tenant keeps the key it moves from, so nothing becomes unreadable.
    func rewrapBlobs(tenant: String, from: KeyStoreKeyring, to: KeyStoreKeyring, fromKey: String, toKey: String,
                     scope: AuditScope) async throws -> Int {
        var after: String?
        var rewritten = 0
        var stranded: [String] = []
        while true {
            let page = try await store.records(RecordQuery(tenant: tenant, kind: Self.kind, after: after, limit: 500))
            guard let last = page.last else { break }
            after = last.id
            for record in page {
                guard let purpose = record.metadata.purpose else { continue }
                switch try await rewrapBlob(tenant: tenant, id: record.id, purpose: purpose, from: from, to: to, fromKey: fromKey,
                                            toKey: toKey, scope: scope) {
                case .rewritten: rewritten += 1
                case .already: break
                case .stranded:
                    // Deleted since the page was read, or really stranded.
                    if try await store.record(tenant: tenant, id: record.id, kind: Self.kind) != nil { stranded.append(record.id) }
                }
            }
        }
        guard stranded.isEmpty else {
            throw GatewayError(.internalServerError, type: "server_error", code: "blobs_stranded",
                               "\(stranded.count) file blobs are missing or under neither key (first: \(stranded[0])); the tenant keeps \(fromKey) as its previous key")
        }
        return rewritten
    }

    enum BlobRewrap { case rewritten, already, stranded }

    /// Rewrites one blob's header if its data key is under `from` (and, when moving to another
    /// key, not already under `to`), after checking the blob claims to be this file of this tenant.
    func rewrapBlob(tenant: String, id: String, purpose: String, from: KeyStoreKeyring, to: KeyStoreKeyring, fromKey: String,
                    toKey: String, scope: AuditScope) async throws -> BlobRewrap {
        let key = Self.blobKey(tenant: tenant, id: id)
        let download: any BlobDownload
        do { download = try await blobs.download(key) } catch let e as StorageError where e.code == .notFound { return .stranded }
        defer { download.close() }
        let (header, head, length) = try await readHeader(download, id: id)
        guard header.encryptionContext == Self.context(tenant: tenant, id: id, purpose: purpose) else { return .stranded }
        let edks = header.encryptedDataKeys
        if fromKey != toKey, edks.contains(where: to.owns) { return .already }
        guard let edk = edks.first(where: from.owns) else { return .stranded }
        // No event, no key operation.
        try audit.requireAvailable()
        let opened = try await from.onDecrypt(DecryptionMaterials(suite: header.suite, encryptionContext: header.encryptionContext),
                                              encryptedDataKeys: [edk])
        guard let dataKey = opened.plaintextDataKey else {
            throw KeywardCryptoError(.noDecryptableKey, "the data key of file blob \(id) did not unwrap")
        }
        let wrapped = try await to.onEncrypt(EncryptionMaterials(suite: header.suite, encryptionContext: header.encryptionContext,
                                                                 plaintextDataKey: dataKey))
        guard let newEDK = wrapped.encryptedDataKeys.last else {
            throw KeywardCryptoError(.internalError, "the new key returned no wrapped data key")
        }
        let newHeader = try HeaderRewrap.rewrap(header, dataKey: dataKey, encryptedDataKeys: [newEDK])
        // Logged before the blob changes: no event, no rewrite.
        try await audit.append(AuditLog.event(.rewrap, key: fromKey, record: "\(id)/\(Self.kind).content", detail: "to=\(toKey)", scope: scope))
        try await replace(key, header: newHeader, body: head[length...], rest: download)
        return .rewritten
    }

    /// Gives the blob of an upload whose file part came before its purpose field (sealed under
    /// ``pendingPurpose``, committed) the encryption context that names the purpose read since:
    /// the upload's data key is wrapped under that context by the tenant's key — the current one,
    /// should a re-key have switched it meanwhile — (a key-store call, audited as `rewrap`, failed
    /// or not) and the blob copied behind the new header, as a re-key does. Then the ESDK, and
    /// `aws-encryption-cli` with the file's context, open it as any other.
    func nameSealedPurpose(_ upload: FileUpload, tenant: Tenant, scope: AuditScope) async throws {
        guard let dataKey = upload.pendingDataKey else { return }
        defer { upload.purposeNamed() }
        let key = Self.blobKey(tenant: tenant.name, id: upload.id)
        let download = try await blobs.download(key)
        defer { download.close() }
        let (header, head, length) = try await readHeader(download, id: upload.id)
        guard header.encryptionContext == Self.context(tenant: tenant.name, id: upload.id, purpose: Self.pendingPurpose) else {
            throw KeywardCryptoError(.encryptionContextMismatch, "file blob \(upload.id) is not the upload's")
        }
        let target = try await store.tenant(named: tenant.name)?.key ?? upload.key
        let context = Self.context(tenant: tenant.name, id: upload.id, purpose: upload.purpose)
        let record = "\(upload.id)/\(Self.kind).content"
        let detail = "purpose=\(upload.purpose)" + (target == upload.key ? "" : " to=\(target)")
        let edk = try await vault.wrap(dataKey, under: target, context: context, event: (upload.key, record, detail), scope: scope)
        let newHeader = try HeaderRewrap.rewrap(header, dataKey: dataKey, encryptedDataKeys: [edk], encryptionContext: context)
        try await replace(key, header: newHeader, body: head[length...], rest: download)
    }

    /// A blob's header, parsed, from as many reads as it takes (a header is a few hundred bytes
    /// per data key): the header, the bytes read (the header and what followed it) and its length.
    private func readHeader(_ download: any BlobDownload, id: String) async throws -> (MessageHeader, [UInt8], Int) {
        var head: [UInt8] = []
        while true {
            guard let chunk = try await download.next(limit: Self.readSize) else {
                throw KeywardCryptoError(.truncatedMessage, "file blob \(id) ends before its header")
            }
            head += chunk
            if let (header, length) = try? head.withUnsafeBytes({ try MessageHeader.parse(prefixOf: $0) }) { return (header, head, length) }
            if head.count > 1 << 20 { throw KeywardCryptoError(.malformedMessage, "file blob \(id) has no readable header") }
        }
    }

    /// Replaces the blob at `key` whole with `header`, `body` and the rest of `download` (a reader
    /// sees the old blob or the new one).
    private func replace(_ key: String, header: [UInt8], body: ArraySlice<UInt8>, rest download: any BlobDownload) async throws {
        let upload = try await blobs.upload(key)
        do {
            try await upload.write(header + body)
            while let chunk = try await download.next(limit: Self.readSize) { try await upload.write(chunk) }
            try await upload.commit()
        } catch {
            await upload.abort()
            throw error
        }
    }
}
