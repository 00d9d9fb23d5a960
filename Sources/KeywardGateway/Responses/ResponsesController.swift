import Foundation
import HTTPTypes
import Hummingbird
import KeywardAudit
import KeywardHTTP
import KeywardStorage
import Logging

/// OpenAI's Responses API, with the whole state of every turn kept by Keyward under the tenant's
/// key and none of it by the upstream: each turn's context is rebuilt from Keyward's records and
/// sent statelessly (`store: false`), so revoking the key makes every agent's memory unreadable.
///
/// A turn is two records under its response id: `response.input` (the turn's input items) and
/// `response` (the response object as answered). Both carry in their clear metadata the ids of the
/// earlier turns they continue (`chain`), so a turn's context is read in one query.
struct ResponsesController {
    let configuration: GatewayConfiguration
    let conversations: Conversations
    let policies: KeyPolicies
    let providerKeys: ProviderKeys
    let upstreams: UpstreamClient
    let limiter: RateLimiter
    let metrics: GatewayMetrics
    let logger: Logger
    var store: any RecordStore { conversations.store }
    var vault: Vault { conversations.vault }
    var audit: AuditLog { conversations.audit }

    static let inputKind = "response.input"
    static let responseKind = "response"

    /// Routes of a group that authenticates app tokens.
    func addRoutes(to router: RouterGroup<GatewayContext>) {
        router.post("/v1/responses") { request, context in try await create(request, context) }

        // Keyward's own (OpenAI has no list of responses): the tenant's stored responses, newest
        // first, in the shape of OpenAI's other lists; every one read is in the audit log.
        router.get("/v1/responses") { request, context -> Response in
            let (principal, tenant) = try await reader(context)
            let page = try ListPage(request, defaultOrder: .descending)
            let records = try await page.records(of: tenant.name, kind: Self.responseKind, liveAt: Gateway.nowMs(), noun: "stored response", in: store)
            let shown = Array(records.prefix(page.limit))
            let items = try await vault.read(shown, of: tenant, scope: principal.scope(.retrieval))
            return JSONBody.bytes(ListPage.encoded(items, ids: shown.map(\.id), hasMore: records.count > page.limit))
        }

        router.get("/v1/responses/:id") { request, context -> Response in
            let (principal, tenant) = try await reader(context)
            // An SDK's `retrieve(id, stream=True)` replays a background response's events; there are none.
            if let stream = request.uri.queryParameters.get("stream"), stream != "false" {
                throw GatewayError.invalidRequest("a stored response is retrieved whole: stream is not supported", code: "unsupported")
            }
            let record = try await stored(tenant, try context.parameters.require("id"), kind: Self.responseKind)
            return JSONBody.bytes(try await vault.read([record], of: tenant, scope: principal.scope(.retrieval))[0])
        }

        router.get("/v1/responses/:id/input_items") { request, context -> Response in
            let (principal, tenant) = try await reader(context)
            let id = try context.parameters.require("id")
            let record = try await stored(tenant, id, kind: Self.inputKind)
            let plaintext = try await vault.read([record], of: tenant, scope: principal.scope(.retrieval))[0]
            let items = (try? JSONSerialization.jsonObject(with: Data(plaintext)) as? [Any]) ?? []
            let (page, hasMore) = try ListPage(request, defaultOrder: .descending).slice(ResponseItems.listed(items, responseID: id)) {
                $0["id"] as? String
            }
            return JSONBody.response(ListPage.list(page, hasMore: hasMore))
        }

        router.delete("/v1/responses/:id") { _, context -> Response in
            let (principal, tenant) = try await reader(context)
            let id = try context.parameters.require("id")
            try audit.requireAvailable()
            guard id.hasPrefix("resp_"), try await store.deleteRecords(tenant: tenant.name, id: id) > 0 else {
                throw GatewayError.notFound("no stored response \(id)")
            }
            try await audit.append(AuditLog.event(.deleteRecord, key: tenant.key, record: id, scope: principal.scope(.retrieval)))
            return JSONBody.response(["id": id, "object": "response.deleted", "deleted": true])
        }
    }

    /// One turn: the body read and checked, the model routed, the caller authorized and the data
    /// key obtained before anything leaves; the context rebuilt; the upstream called statelessly;
    /// the turn stored before its end reaches the client.
    func create(_ request: Request, _ context: GatewayContext) async throws -> Response {
        let started = context.started
        let (principal, tenant) = try context.requireTenant()
        let buffer = try await request.collectBody(limit: configuration.bodyLimit)
        let body = try JSONBody.object(buffer.readableBytesView)
        guard let model = body["model"] as? String, !model.isEmpty else {
            throw GatewayError.invalidRequest("model is required", code: "missing_field")
        }
        let previous = body["previous_response_id"] as? String
        if body["previous_response_id"] != nil, previous == nil {
            throw GatewayError.invalidRequest("previous_response_id must be a string", code: "invalid_field")
        }
        let conversationID = body["conversation"] as? String ?? (body["conversation"] as? [String: Any])?["id"] as? String
        if body["conversation"] != nil, conversationID == nil {
            throw GatewayError.invalidRequest("conversation must be an id or {\"id\": …}", code: "invalid_field")
        }
        if conversationID != nil, previous != nil {
            throw GatewayError.invalidRequest("previous_response_id and conversation cannot be used together", code: "invalid_field")
        }
        // A turn with no input of its own continues its context (or a stored prompt) as it stands.
        let input = try ResponseItems.input(body["input"], optional: previous != nil || conversationID != nil || body["prompt"] != nil)
        if let background = body["background"], (background as? Bool) != false {
            // Kept only when its answer ends; polling a queued response would see it queued for ever.
            throw GatewayError.invalidRequest("background responses are not supported: Keyward stores a turn as its answer ends",
                                              code: "unsupported")
        }
        if let store = body["store"], !(store is Bool) {
            throw GatewayError.invalidRequest("store must be true or false", code: "invalid_field")
        }
        guard let upstream = configuration.upstream(for: model) else {
            throw GatewayError(.notFound, type: "invalid_request_error", code: "model_not_found", "no upstream serves model \(model)")
        }
        try await policies.authorize(principal, tenant: tenant, purpose: .inference, model: model)
        try audit.requireAvailable()
        let scope = principal.scope(.inference)
        // Absent, `store` is true here, as in OpenAI's Responses API (chat's default is false).
        let storing: Bool = switch tenant.store {
        case .always: true
        case .onRequest: (body["store"] as? Bool) ?? true
        case .never: false
        }
        if conversationID != nil, tenant.store == .never {
            throw GatewayError.invalidRequest("this tenant stores nothing, so it keeps no conversation", code: "store_disabled")
        }
        let keyStart = ContinuousClock.now
        let sealer = try await AuditScope.$current.withValue(scope) {
            try await vault.sealer(for: tenant, seen: principal.tenantView, plaintextLength: buffer.readableBytes)
        }
        let keyTime = ContinuousClock.now - keyStart
        var chain: [String] = []
        var context: [ArraySlice<UInt8>] = []
        var conversation: (id: String, lastSeq: Int)?
        if let previous {
            let earlier: [ResponseItems.Turn]
            (chain, earlier) = try await turns(before: previous, of: tenant, scope: scope)
            context = ResponseItems.context(earlier)
        } else if let conversationID {
            _ = try await conversations.conversation(tenant, conversationID)
            let (items, lastSeq) = try await conversations.allItems(tenant, conversationID, scope: scope)
            context = [ResponseItems.arrayContents(Array(try JSONSerialization.data(withJSONObject: items.map(ResponseItems.upstreamItem)))[...])]
                .compactMap { $0 }
            conversation = (conversationID, lastSeq)
        }
        if input.isEmpty, !context.contains(where: { !$0.isEmpty }), body["prompt"] == nil {
            throw GatewayError.invalidRequest("input is required: the conversation has no items to continue", code: "missing_field")
        }
        let inputJSON = Array(try JSONSerialization.data(withJSONObject: input))
        let turn = Turn(started: started, principal: principal, tenant: tenant, id: Tokens.identifier("resp_"), previous: previous, conversation: conversation,
                        input: inputJSON, chain: chain, model: model, storing: storing, sealer: sealer, keyTime: keyTime, scope: scope)

        let parts = context + [ResponseItems.arrayContents(inputJSON[...]) ?? []]
        let stream = body["stream"] as? Bool == true
        // Other APIs get the same request translated (its items decoded once for that).
        let translation = Translation(upstream)
        func items() throws -> [Any] {
            (try JSONSerialization.jsonObject(with: Data(try ResponseItems.upstreamBody([:], input: parts, storing: false))) as? [String: Any])?["input"] as? [Any] ?? []
        }
        let upstreamBody: [UInt8] = switch translation {
        case .none: try ResponseItems.upstreamBody(body, input: parts, storing: storing)
        case .chat: Array(try JSONSerialization.data(withJSONObject: try ChatTranslation.chatRequest(body, items: try items(), stream: stream)))
        case .messages: Array(try JSONSerialization.data(withJSONObject: try MessagesTranslation.messagesRequest(body, items: try items(), stream: stream)))
        }
        let key = try await providerKeys.key(for: tenant, upstream: upstream, scope: scope)
        let upstreamStart = ContinuousClock.now
        let response: PooledHTTPClient.Response
        do {
            response = try await upstreams.send(upstream, path: translation.path, body: ByteBuffer(bytes: upstreamBody), apiKey: key,
                                                headers: translation == .messages ? [("anthropic-version", "2023-06-01")] : [])
        } catch let e as GatewayError {
            metrics.upstream(upstream.name, status: Int(e.status.code), duration: ContinuousClock.now - upstreamStart)
            throw e
        }
        let contentType = response.headers.first(name: "content-type") ?? "application/json"
        if stream, contentType.hasPrefix("text/event-stream") {
            let headTime = ContinuousClock.now - upstreamStart
            metrics.upstream(upstream.name, status: Int(response.status.code), duration: headTime)
            return Response(status: .ok, headers: headers(turn, upstreamTime: headTime, contentType: "text/event-stream"),
                            body: streamBody(turn, upstream: response, from: upstream, translation: translation, request: body))
        }
        let collected = try await UpstreamClient.collect(response, upTo: 64 << 20, from: upstream)
        let upstreamTime = ContinuousClock.now - upstreamStart
        metrics.upstream(upstream.name, status: Int(response.status.code), duration: upstreamTime)
        guard var object = try? JSONSerialization.jsonObject(with: Data(buffer: collected)) as? [String: Any] else {
            throw GatewayError(.badGateway, type: "api_error", code: "upstream_error", "upstream \(upstream.name) answered something that is not JSON")
        }
        switch translation {
        case .none: break
        case .chat: object = ChatTranslation.response(fromChat: object, request: body)
        case .messages: object = MessagesTranslation.response(fromMessage: object, request: body)
        }
        let answer = ResponseItems.patched(object, id: turn.id, previous: previous, conversation: conversation?.id, stored: storing)
        try await save(turn, answer, upstreamTime: upstreamTime, streamed: false)
        return Response(status: .ok, headers: headers(turn, upstreamTime: upstreamTime, contentType: "application/json"),
                        body: .init(byteBuffer: ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: answer))))
    }

    /// The API an upstream speaks, into which Responses requests are translated.
    enum Translation {
        /// OpenAI's Responses API: no translation.
        case none
        /// Chat completions (``ChatTranslation``).
        case chat
        /// Anthropic's Messages (``MessagesTranslation``).
        case messages

        init(_ upstream: UpstreamConfiguration) {
            self = upstream.kind == .anthropic ? .messages : upstream.api == .chat ? .chat : .none
        }

        var path: String {
            switch self {
            case .none: "/responses"
            case .chat: "/chat/completions"
            case .messages: "/v1/messages"
            }
        }
    }

    /// What a turn carries from its start to its records.
    struct Turn {
        let started: ContinuousClock.Instant
        let principal: Principal
        let tenant: Tenant
        let id: String
        let previous: String?
        /// The conversation it continues, and the position of its last item.
        let conversation: (id: String, lastSeq: Int)?
        /// The turn's input items, as JSON.
        let input: [UInt8]
        /// The earlier turns' ids, oldest first.
        let chain: [String]
        let model: String
        let storing: Bool
        let sealer: RecordSealer
        let keyTime: Duration
        let scope: AuditScope
    }

    /// The turns a new one continues: `previous` and the chain it continued, read in one query
    /// and opened with the tenant's cached data keys, after one audit event naming every turn
    /// read. A turn the tenant deleted meanwhile, or past its expiry, is left out of the context.
    private func turns(before previous: String, of tenant: Tenant, scope: AuditScope) async throws -> ([String], [ResponseItems.Turn]) {
        let now = Gateway.nowMs()
        guard let last = try await store.record(tenant: tenant.name, id: previous, kind: Self.inputKind), !last.isExpired(at: now) else {
            throw GatewayError.notFound("no stored response \(previous) to continue")
        }
        let chain = (last.metadata.chain ?? []) + [previous]
        let records = try await store.records(tenant: tenant.name, ids: chain)
            .filter { ($0.kind == Self.inputKind || $0.kind == Self.responseKind) && !$0.isExpired(at: now) }
        var opened: [String: ResponseItems.Turn] = [:]
        let present = Set(records.map(\.id))
        let read = chain.filter(present.contains)
        let events = Vault.ReadEvents.context(record: "\(previous)/context",
                                              detail: "\(records.count) records of \(read.count) turns: \(read.joined(separator: " "))")
        for (record, plaintext) in zip(records, try await vault.read(records, of: tenant, scope: scope, events: events)) {
            if record.kind == Self.inputKind {
                opened[record.id, default: ResponseItems.Turn(input: [], response: [])].input = plaintext
            } else {
                opened[record.id, default: ResponseItems.Turn(input: [], response: [])].response = plaintext
            }
        }
        let turns = chain.compactMap { opened[$0] }
        return (chain, turns)
    }

    /// Seals and stores the turn's two records (if it is stored) and, for a turn of a conversation,
    /// its input and output items as the conversation's next items: all or none, with its event.
    private func save(_ turn: Turn, _ answer: [String: Any], upstreamTime: Duration, streamed: Bool) async throws {
        let usage = answer["usage"] as? [String: Any]
        limiter.used([usage?["input_tokens"] as? Int, usage?["output_tokens"] as? Int],
                     orBytes: turn.input.count + ((try? JSONSerialization.data(withJSONObject: answer).count) ?? 0), by: turn.principal)
        guard turn.storing || turn.conversation != nil else { return }
        let metadata = RecordMetadata(model: turn.model, status: 200, promptTokens: usage?["input_tokens"] as? Int,
                                      completionTokens: usage?["output_tokens"] as? Int, upstreamMs: upstreamTime.milliseconds,
                                      streamed: streamed, chain: turn.chain.isEmpty ? nil : turn.chain)
        let now = Gateway.nowMs()
        var records: [Record] = []
        var events: [(record: String, detail: String)] = []
        if turn.storing {
            records += [
                try turn.sealer.seal(turn.input, id: turn.id, kind: Self.inputKind, createdAt: now, metadata: metadata),
                // The chain is read from the input record only: every record of a context is
                // loaded with its metadata, which need not carry it twice.
                try turn.sealer.seal(Array(try JSONSerialization.data(withJSONObject: answer)), id: turn.id, kind: Self.responseKind,
                                     createdAt: now, metadata: { var m = metadata; m.chain = nil; return m }()),
            ]
            events.append((turn.id, "model=\(turn.model)"))
        }
        if let c = turn.conversation {
            let input = (try JSONSerialization.jsonObject(with: Data(turn.input)) as? [Any]) ?? []
            records += try conversations.itemRecords(input + ((answer["output"] as? [Any]) ?? []), of: c.id, after: c.lastSeq,
                                                     sealer: turn.sealer, at: now).records
            events.append((c.id, "response=\(turn.id)"))
        }
        let (sealed, key) = try await vault.onCurrentKey(records, sealedBy: turn.sealer, scope: turn.scope)
        try await audit.insert(sealed, events: events.map { AuditLog.event(.encryptRecord, key: key, record: $0.record, detail: $0.detail, scope: turn.scope) })
        metrics.recordsStored(records.count)
    }

    /// Forwards each event as soon as it is complete, with Keyward's response id in the events that
    /// carry the response; the final response is stored before its event is forwarded, so a client
    /// that saw the end can read it back. An upstream that breaks off or stalls mid-answer ends the
    /// stream with an `error` event (the turn, incomplete, is not kept).
    private func streamBody(_ turn: Turn, upstream: PooledHTTPClient.Response, from configuration: UpstreamConfiguration,
                            translation: Translation, request: [String: Any]) -> ResponseBody {
        // Another API's events become Responses events; a Responses upstream's events pass.
        let requestJSON = try? JSONSerialization.data(withJSONObject: request)
        return ResponseBody { writer in
            var assembler = ResponseStreamAssembler(request: requestJSON.flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] } ?? [:])
            var splitter = SSEEventSplitter()
            let start = ContinuousClock.now
            var stored = false
            /// Sends an event that carries the response with Keyward's ids, storing the final one
            /// first; others as they are.
            func send(_ object: [String: Any], raw: SSEEvent? = nil) async throws {
                guard let type = object["type"] as? String, ResponseItems.responseEvents.contains(type),
                      let response = object["response"] as? [String: Any] else {
                    let data = try raw?.data ?? Array(JSONSerialization.data(withJSONObject: object))
                    try await writer.write(ByteBuffer(bytes: SSEEvent(name: raw?.name ?? object["type"] as? String, data: data).bytes))
                    return
                }
                let patched = ResponseItems.patched(response, id: turn.id, previous: turn.previous, conversation: turn.conversation?.id,
                                                    stored: turn.storing)
                var out = object
                out["response"] = patched
                if ResponseItems.finalEvents.contains(type), !stored {
                    stored = true
                    do { try await save(turn, patched, upstreamTime: ContinuousClock.now - start, streamed: true) } catch {
                        // Not kept: the client must not see the end of a turn it cannot continue.
                        logger.error("streamed response not stored", metadata: ["record": "\(turn.id)", "error": "\(error)"])
                        let failure = GatewayError.from(error)
                        let body: [String: Any] = ["type": "error", "code": failure.code, "message": "the response could not be stored: \(failure.message)"]
                        try await writer.write(ByteBuffer(bytes: SSEEvent(name: "error", data: Array(try JSONSerialization.data(withJSONObject: body))).bytes))
                        return
                    }
                }
                try await writer.write(ByteBuffer(bytes: SSEEvent(name: type, data: Array(try JSONSerialization.data(withJSONObject: out))).bytes))
            }
            func forward(_ event: SSEEvent) async throws {
                // A passed-through event is decoded only if it may carry the response (deltas,
                // most of a stream, go as they came).
                if translation == .none, let name = event.name, !ResponseItems.responseEvents.contains(name) {
                    try await writer.write(ByteBuffer(bytes: event.bytes))
                    return
                }
                let object = try? JSONSerialization.jsonObject(with: Data(event.data)) as? [String: Any]
                if translation != .none {
                    guard let object else { return }  // [DONE]: the assembler closes at the end
                    let events = translation == .chat ? ChatTranslation.feed(object, into: &assembler) : MessagesTranslation.feed(object, into: &assembler)
                    for e in events { try await send(e) }
                } else if let object {
                    try await send(object, raw: event)
                } else {
                    try await writer.write(ByteBuffer(bytes: event.bytes))
                }
            }
            if let e = try await UpstreamClient.forEachChunk(of: upstream, from: configuration, { buffer in
                for event in splitter.feed(buffer.readableBytesView) { try await forward(event) }
            }) {
                logger.warning("an upstream broke off a streamed response", metadata: ["upstream": "\(configuration.name)", "error": "\(e.code)"])
                // After the final event the turn is whole (and stored): nothing more to say.
                if !stored {
                    let body: [String: Any] = ["type": "error", "code": e.code, "message": e.message]
                    try await writer.write(ByteBuffer(bytes: SSEEvent(name: "error", data: Array(try JSONSerialization.data(withJSONObject: body))).bytes))
                }
                try await writer.finish(nil)
                return
            }
            if let last = splitter.finish() { try await forward(last) }
            if translation != .none {
                for e in assembler.finish().events { try await send(e) }
            }
            if !stored, turn.storing {
                logger.error("a streamed response ended without its final event: not stored", metadata: ["record": "\(turn.id)"])
            }
            try await writer.finish(nil)
        }
    }

    private func headers(_ turn: Turn, upstreamTime: Duration, contentType: String) -> HTTPFields {
        AIController.headers(started: turn.started, upstreamTime: upstreamTime, keyTime: turn.keyTime,
                             recordID: turn.storing ? turn.id : nil, contentType: contentType)
    }

    /// An app token whose tenant's key policy grants it retrieval.
    private func reader(_ context: GatewayContext) async throws -> (Principal, Tenant) {
        let (principal, tenant) = try context.requireTenant()
        try await policies.authorize(principal, tenant: tenant, purpose: .retrieval)
        return (principal, tenant)
    }

    private func stored(_ tenant: Tenant, _ id: String, kind: String) async throws -> Record {
        guard let record = try await store.record(tenant: tenant.name, id: id, kind: kind), !record.isExpired(at: Gateway.nowMs()) else {
            throw GatewayError.notFound("no stored response \(id)")
        }
        return record
    }

}
