import Foundation
import KeywardAudit
import KeywardJSON
import KeywardStorage

/// OpenAI's Batches, run by Keyward itself: the input file never leaves it, each line is sent
/// through the gateway's own routes (so upstreams get single, stateless requests), and the
/// results are files encrypted like any other.
///
/// A batch's progress is a row in the clear (status, counts, times: OpenAI's own fields, nothing
/// of the lines); its `metadata`, which a client may fill with anything, is an encrypted record
/// of kind `batch`; each line's result is an encrypted record (`<batch>.<line>`, kind
/// `batch.output` or `batch.error`) until the output and error files are written from them.
struct Batches: Sendable {
    static let kind = Batch.metadataKind
    static let outputKind = Batch.outputKind
    static let errorKind = Batch.errorKind
    static let outputPurpose = "batch_output"
    static let endpoints: Set<String> = ["/v1/chat/completions", "/v1/embeddings", "/v1/responses"]
    /// OpenAI's limit on the requests of one batch.
    static let maxLines = 50_000
    /// How long a batch may run: OpenAI's only completion window.
    static let windowMs: Int64 = 24 * 3_600_000

    let files: Files
    var store: any RecordStore { files.store }
    var vault: Vault { files.vault }
    var audit: AuditLog { files.audit }

    /// The record id of line `n`'s result: zero-padded, so that ids sort in line order.
    static func lineID(_ batch: String, _ n: Int64) -> String {
        let digits = String(n)
        return batch + "." + String(repeating: "0", count: max(0, 7 - digits.count)) + digits
    }

    /// Makes a batch (status `validating`; a runner takes it up) from OpenAI's create body.
    func create(_ body: [String: Any], principal: Principal, tenant: Tenant, scope: AuditScope) async throws -> Batch {
        guard let input = body["input_file_id"] as? String, !input.isEmpty else {
            throw GatewayError.invalidRequest("input_file_id is required", code: "missing_field")
        }
        guard let endpoint = body["endpoint"] as? String, Self.endpoints.contains(endpoint) else {
            throw GatewayError.invalidRequest("endpoint must be one of \(Self.endpoints.sorted().joined(separator: ", "))", code: "invalid_field")
        }
        guard body["completion_window"] as? String == "24h" else {
            throw GatewayError.invalidRequest("completion_window must be 24h", code: "invalid_field")
        }
        let metadata = try Self.metadata(body["metadata"])
        let outputExpiresAfter = try Self.outputExpiresAfter(body["output_expires_after"])
        let file = try await files.record(tenant, input)
        guard file.metadata.purpose == "batch" else {
            throw GatewayError.invalidRequest("the input file's purpose must be batch", code: "invalid_file_purpose")
        }
        let now = Gateway.nowMs()
        var batch = Batch(id: Tokens.identifier("batch_"), tenant: tenant.name, token: principal.tokenID, endpoint: endpoint,
                          inputFile: input, createdAt: now, expiresAt: now + Self.windowMs)
        batch.outputExpiresAfter = outputExpiresAfter
        let sealer = try await AuditScope.$current.withValue(scope) { try await vault.sealer(for: tenant, plaintextLength: 0) }
        let sealed = try JSONSerialization.data(withJSONObject: ["metadata": metadata.map { $0 as Any } ?? NSNull()])
        let record = try sealer.seal(Array(sealed), id: batch.id, kind: Self.kind, createdAt: now, metadata: RecordMetadata())
        try await audit.insert([record], events: [
            AuditLog.event(.batchCreate, key: tenant.key, record: batch.id, detail: "endpoint=\(endpoint) input=\(input)", scope: scope),
        ])
        do { try await store.createBatch(batch) } catch {
            _ = try? await store.deleteRecord(tenant: tenant.name, id: batch.id, kind: Self.kind)
            throw error
        }
        return batch
    }

    /// OpenAI's `output_expires_after`, `{"anchor": "created_at", "seconds": 3600 to 2592000}`: the
    /// seconds the output and error files live after they are made.
    static func outputExpiresAfter(_ value: Any?) throws -> Int64? {
        guard let value, !(value is NSNull) else { return nil }
        guard let o = value as? [String: Any], o["anchor"] as? String == "created_at", o.count == 2,
              let seconds = o["seconds"] as? Int, !(o["seconds"] is Bool), (3600...2_592_000).contains(seconds) else {
            throw GatewayError.invalidRequest("output_expires_after must be {\"anchor\": \"created_at\", \"seconds\": 3600 to 2592000}",
                                              code: "invalid_field")
        }
        return Int64(seconds)
    }

    /// OpenAI's metadata: at most 16 string pairs, keys up to 64 characters, values up to 512.
    static func metadata(_ value: Any?) throws -> [String: String]? {
        guard let value, !(value is NSNull) else { return nil }
        guard let pairs = value as? [String: Any], pairs.count <= 16,
              let strings = pairs as? [String: String],
              strings.allSatisfy({ $0.key.count <= 64 && $0.value.count <= 512 }) else {
            throw GatewayError.invalidRequest("metadata holds at most 16 string values, keys up to 64 characters, values up to 512",
                                              code: "invalid_field")
        }
        return strings
    }

    /// The tenant's batch, or 404. An ended one whose metadata record has expired (the tenant's
    /// retention) is served as if the purge, which deletes it, had already run; a running one is
    /// served until it ends, so that a cancel reaches it.
    func batch(_ tenant: Tenant, _ id: String) async throws -> Batch {
        guard let batch = try await store.batch(id: id), batch.tenant == tenant.name else { throw GatewayError.notFound("no batch \(id)") }
        if batch.status.isTerminal {
            guard let record = try await store.record(tenant: tenant.name, id: id, kind: Self.kind), !record.isExpired(at: Gateway.nowMs())
            else { throw GatewayError.notFound("no batch \(id)") }
        }
        return batch
    }

    /// OpenAI's batch objects: each row with its decrypted metadata.
    func objects(_ batches: [Batch], of tenant: Tenant, scope: AuditScope) async throws -> [[String: Any]] {
        guard !batches.isEmpty else { return [] }
        let records = try await store.records(tenant: tenant.name, ids: batches.map(\.id)).filter { $0.kind == Self.kind }
        let plaintexts = try await vault.read(records, of: tenant, scope: scope)
        var metadata: [String: Any] = [:]
        for (record, plaintext) in zip(records, plaintexts) {
            metadata[record.id] = (try? JSONSerialization.jsonObject(with: Data(plaintext)) as? [String: Any])?["metadata"]
        }
        return batches.map { Self.object($0, metadata: metadata[$0.id] ?? NSNull()) }
    }

    static func object(_ b: Batch, metadata: Any) -> [String: Any] {
        func time(_ ms: Int64?) -> Any { ms.map { $0 / 1000 } ?? NSNull() }
        // A cancel is the client's own column: the batch is `cancelling` until its runner ends it.
        let status = !b.status.isTerminal && b.cancellingAt != nil ? "cancelling" : b.status.rawValue
        let errors: Any = b.errors.flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) } ?? NSNull()
        return [
            "id": b.id, "object": "batch", "endpoint": b.endpoint, "errors": errors, "input_file_id": b.inputFile,
            "completion_window": "24h", "status": status,
            "output_file_id": (b.status.isTerminal ? b.outputFile : nil).map { $0 as Any } ?? NSNull(),
            "error_file_id": (b.status.isTerminal ? b.errorFile : nil).map { $0 as Any } ?? NSNull(),
            "created_at": time(b.createdAt), "in_progress_at": time(b.inProgressAt), "expires_at": time(b.expiresAt),
            "finalizing_at": time(b.finalizingAt), "completed_at": time(b.completedAt), "failed_at": time(b.failedAt),
            "expired_at": time(b.expiredAt), "cancelling_at": time(b.cancellingAt), "cancelled_at": time(b.cancelledAt),
            "request_counts": ["total": b.total, "completed": b.completed, "failed": b.failed], "metadata": metadata,
        ]
    }
}
