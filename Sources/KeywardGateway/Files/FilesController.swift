import Foundation
import Hummingbird
import NIOCore
import KeywardAudit
import KeywardStorage

/// OpenAI's Files API over ``Files``. Uploading is inference (the key policy's `inference`
/// grant); listing, reading and deleting is retrieval. Another tenant's file is "not found".
struct FilesController {
    let files: Files
    let policies: KeyPolicies
    var store: any RecordStore { files.store }
    var vault: Vault { files.vault }

    /// Routes of a group that authenticates app tokens.
    func addRoutes(to router: RouterGroup<GatewayContext>) {
        router.post("/v1/files") { request, context -> Response in
            let (tenant, scope) = try await caller(context, .inference)
            let boundary = try MultipartReader.boundary(contentType: request.headers[.contentType])
            if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > files.maxBodyBytes {
                // A client waiting for `100 Continue` has sent nothing; any other may be sending
                // the whole body before it reads (drained as any refused body is).
                if !request.expectsContinue {
                    var chunks = request.body.makeAsyncIterator()
                    await Request.drain(&chunks)
                }
                throw Files.tooLarge(files.sizeLimit)
            }
            // Reads of up to 1 MiB instead of 64 KiB while the file streams in: a sixteenth of the
            // per-read work. The connection's own allocator is put back after. Not on an HTTP/2
            // stream: its connection carries other streams, and the stream has no allocator.
            let channel = context.connection
            let before = try? await channel?.getOption(ChannelOptions.recvAllocator)
            if let channel, before != nil {
                try? await channel.setOption(ChannelOptions.recvAllocator,
                                             value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 1 << 20, maximum: 1 << 20)).get()
            }
            defer { if let channel, let before { channel.setOption(ChannelOptions.recvAllocator, value: before).whenComplete { _ in } } }
            return JSONBody.bytes(try await files.ingest(request.body, boundary: boundary, tenant: tenant, scope: scope))
        }

        router.get("/v1/files") { request, context -> Response in
            let (tenant, scope) = try await caller(context, .retrieval)
            let page = try ListPage(request, defaultOrder: .descending, limits: ListPage.fileLimits)
            let purpose = request.uri.queryParameters.get("purpose")
            // An expired file is gone for its tenant before the purge deletes it. A page longer than
            // one query returns is read in parts; one more file than the page says whether more follow.
            let now = Gateway.nowMs()
            var live: [Record] = []
            var part = page
            while live.count <= page.limit {
                part.limit = min(page.limit - live.count, RecordQuery.maxLimit - 1)
                let records = try await part.records(of: tenant.name, kind: Files.kind, label: purpose, liveAt: now, noun: "file", in: store)
                live += records
                guard records.count > part.limit, let last = records.last else { break }
                part.after = last.id
            }
            let shown = Array(live.prefix(page.limit))
            let objects = try await vault.read(shown, of: tenant, scope: scope)
            return JSONBody.bytes(ListPage.encoded(objects, ids: shown.map(\.id), hasMore: live.count > page.limit))
        }

        router.get("/v1/files/:id") { _, context -> Response in
            let (tenant, scope) = try await caller(context, .retrieval)
            let record = try await files.record(tenant, try context.parameters.require("id"))
            return JSONBody.bytes(try await vault.read([record], of: tenant, scope: scope)[0])
        }

        router.get("/v1/files/:id/content") { _, context -> Response in
            let (tenant, scope) = try await caller(context, .retrieval)
            let record = try await files.record(tenant, try context.parameters.require("id"))
            return try await files.content(record, of: tenant, scope: scope)
        }

        router.delete("/v1/files/:id") { _, context -> Response in
            let (tenant, scope) = try await caller(context, .retrieval)
            let record = try await files.record(tenant, try context.parameters.require("id"))
            // A batch reads its input file again to write its results in order.
            if try await files.store.unfinishedBatches().contains(where: { $0.tenant == tenant.name && $0.inputFile == record.id }) {
                throw GatewayError(.conflict, type: "invalid_request_error", code: "file_in_use",
                                   "file \(record.id) is the input of a batch that has not ended")
            }
            try await files.delete(record, of: tenant, scope: scope)
            return JSONBody.response(["id": record.id, "object": "file", "deleted": true])
        }
    }

    /// An app token whose tenant's key policy grants it `purpose`, and the audit scope of its calls.
    private func caller(_ context: GatewayContext, _ purpose: Purpose) async throws -> (Tenant, AuditScope) {
        let (principal, tenant) = try context.requireTenant()
        try await policies.authorize(principal, tenant: tenant, purpose: purpose)
        try files.audit.requireAvailable()
        return (tenant, principal.scope(purpose))
    }
}
