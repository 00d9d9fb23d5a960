import KeywardJSON
import Foundation
import HTTPTypes
import Hummingbird
import KeywardAudit
import KeywardHTTP
import KeywardStorage
import Logging

/// One exchange between an app and a model: who asked, what, and the data key that will seal it.
struct Exchange {
    let started: ContinuousClock.Instant
    let principal: Principal
    let tenant: Tenant
    /// The request body, to seal, and the buffer it came in, to forward.
    let body: [UInt8]
    let bodyBuffer: ByteBuffer
    let model: String
    let stream: Bool
    /// The id of the records this exchange will be stored as; nil when the tenant's policy says no.
    let recordID: String?
    let sealer: RecordSealer
    let keyTime: Duration
    let upstream: UpstreamConfiguration?
    /// Who asked, for the audit events of this exchange (written after the request's task ends, when streamed).
    let scope: AuditScope
}

/// The model APIs apps call: OpenAI's chat completions, embeddings and models, and Anthropic's
/// messages. Every exchange is sealed under the tenant's key before it is stored.
struct AIController {
    let configuration: GatewayConfiguration
    let vault: Vault
    let audit: AuditLog
    let policies: KeyPolicies
    let providerKeys: ProviderKeys
    let upstreams: UpstreamClient
    let limiter: RateLimiter
    let metrics: GatewayMetrics
    let logger: Logger

    /// Routes of a group that authenticates app tokens (and admits requests under the rate limits).
    func addRoutes(to router: RouterGroup<GatewayContext>) {
        router.post("/v1/chat/completions") { request, context in
            try await proxy(request, context, protocol: .openAI)
        }
        router.post("/v1/messages") { request, context in
            try await proxy(request, context, protocol: .anthropic)
        }
        router.post("/v1/embeddings") { request, context in try await embeddings(request, context) }
        router.get("/v1/models") { _, _ in await models() }
    }

    enum APIProtocol {
        case openAI, anthropic
        var requestKind: String { self == .openAI ? "chat.request" : "messages.request" }
        var responseKind: String { self == .openAI ? "chat.response" : "messages.response" }
        var idPrefix: String { self == .openAI ? "chatcmpl-" : "msg_" }
        var path: String { self == .openAI ? "/chat/completions" : "/v1/messages" }
    }

    /// Reads the body, routes the model, authorizes and obtains the data key, in that order (the
    /// token was verified by the route group): nothing reaches an upstream unless the tenant's key
    /// is usable.
    func beginExchange(_ request: Request, _ context: GatewayContext, protocol p: APIProtocol) async throws -> Exchange {
        let started = context.started
        let (principal, tenant) = try context.requireTenant()
        let bodyBuffer = try await request.collectBody(limit: configuration.bodyLimit)
        let body = Array(buffer: bodyBuffer)
        let head = try RequestHead.parse(body)
        var upstream: UpstreamConfiguration?
        if head.model != EchoModel.name {
            guard let u = configuration.upstream(for: head.model) else {
                throw GatewayError(.notFound, type: "invalid_request_error", code: "model_not_found",
                                   "no upstream serves model \(head.model)")
            }
            let wanted: UpstreamConfiguration.Kind = p == .openAI ? .openAICompatible : .anthropic
            guard u.kind == wanted else {
                throw GatewayError.invalidRequest("model \(head.model) is served by \(u.kind.rawValue) upstream \(u.name), which does not speak this API",
                                                  code: "model_not_supported")
            }
            upstream = u
        }
        try await policies.authorize(principal, tenant: tenant, purpose: .inference, model: head.model)
        // Fail closed before anything leaves: the exchange's event must be writable.
        try audit.requireAvailable()
        let scope = principal.scope(.inference)
        let keyStart = ContinuousClock.now
        let sealer = try await AuditScope.$current.withValue(scope) {
            try await vault.sealer(for: tenant, seen: principal.tenantView, plaintextLength: body.count)
        }
        let keyTime = ContinuousClock.now - keyStart
        let store: Bool
        switch tenant.store {
        case .always: store = true
        case .onRequest: store = head.store == true
        case .never: store = false
        }
        return Exchange(started: started, principal: principal, tenant: tenant, body: body, bodyBuffer: bodyBuffer, model: head.model, stream: head.stream == true,
                        recordID: store ? Tokens.identifier(p.idPrefix) : nil, sealer: sealer, keyTime: keyTime, upstream: upstream,
                        scope: scope)
    }

    /// Counts the exchange's model tokens against the rate limits, then seals and stores its two records.
    /// `status`: 200, or the error of an answer that broke off (what was received is kept).
    func storeExchange(_ x: Exchange, protocol p: APIProtocol, response: [UInt8], usage: (Int?, Int?),
                       upstreamTime: Duration, status: Int = 200) async throws {
        // Anthropic counts a prompt read from or written to its cache apart from input_tokens.
        let cached = p == .anthropic
            ? ["cache_creation_input_tokens", "cache_read_input_tokens"].map { JSONScanner.integer(at: ["usage", $0], in: response) } : []
        limiter.used([usage.0, usage.1] + cached, orBytes: x.body.count + response.count, by: x.principal)
        guard let id = x.recordID else { return }
        let now = Gateway.nowMs()
        let metadata = RecordMetadata(model: x.model, status: status, promptTokens: usage.0, completionTokens: usage.1,
                                      upstreamMs: upstreamTime.milliseconds, streamed: x.stream)
        let (records, key) = try await vault.onCurrentKey([
            try x.sealer.seal(x.body, id: id, kind: p.requestKind, createdAt: now, metadata: metadata),
            try x.sealer.seal(response, id: id, kind: p.responseKind, createdAt: now, metadata: metadata),
        ], sealedBy: x.sealer, scope: x.scope)
        try await audit.insert(records, events: [
            AuditLog.event(.encryptRecord, key: key, record: id, detail: "model=\(x.model)", scope: x.scope),
        ])
        metrics.recordsStored(records.count)
    }

    private func headers(_ x: Exchange, upstreamTime: Duration, contentType: String) -> HTTPFields {
        Self.headers(started: x.started, upstreamTime: upstreamTime, keyTime: x.keyTime, recordID: x.recordID, contentType: contentType)
    }

    /// Keyward's timing headers (its overhead: the time since `started` less the upstream's) and
    /// the stored record's id.
    static func headers(started: ContinuousClock.Instant, upstreamTime: Duration, keyTime: Duration, recordID: String?,
                        contentType: String) -> HTTPFields {
        var h: HTTPFields = [.contentType: contentType]
        h[.keywardOverhead] = millis(ContinuousClock.now - started - upstreamTime)
        h[.keywardKey] = millis(keyTime)
        if let recordID { h[.keywardRecordID] = recordID }
        return h
    }

    /// Milliseconds with three decimals, without `String(format:)` (slow, and on every response).
    static func millis(_ d: Duration) -> String {
        let micros = max(0, Int((d.milliseconds * 1000).rounded()))
        let fraction = String(micros % 1000)
        return "\(micros / 1000)." + String(repeating: "0", count: 3 - fraction.count) + fraction
    }

    func proxy(_ request: Request, _ context: GatewayContext, protocol p: APIProtocol) async throws -> Response {
        let x = try await beginExchange(request, context, protocol: p)
        guard let upstream = x.upstream else { return try await echo(x, protocol: p) }
        let key = try await providerKeys.key(for: x.tenant, upstream: upstream, scope: x.scope)
        var extra: [(String, String)] = []
        if p == .anthropic {
            extra.append(("anthropic-version", request.headers[HTTPField.Name("anthropic-version")!] ?? "2023-06-01"))
            if let beta = request.headers[HTTPField.Name("anthropic-beta")!] { extra.append(("anthropic-beta", beta)) }
        }
        let upstreamStart = ContinuousClock.now
        let response: PooledHTTPClient.Response
        do {
            response = try await upstreams.send(upstream, path: p.path, body: x.bodyBuffer, apiKey: key, headers: extra)
        } catch let e as GatewayError {
            metrics.upstream(upstream.name, status: Int(e.status.code), duration: ContinuousClock.now - upstreamStart)
            throw e
        }
        let contentType = response.headers.first(name: "content-type") ?? "application/json"
        if x.stream && contentType.hasPrefix("text/event-stream") {
            let headTime = ContinuousClock.now - upstreamStart
            metrics.upstream(upstream.name, status: Int(response.status.code), duration: headTime)
            return Response(status: .ok, headers: headers(x, upstreamTime: headTime, contentType: contentType),
                            body: streamBody(x, protocol: p, upstream: response, from: upstream))
        }
        let collected = try await UpstreamClient.collect(response, upTo: 64 << 20, from: upstream)
        let upstreamTime = ContinuousClock.now - upstreamStart
        metrics.upstream(upstream.name, status: Int(response.status.code), duration: upstreamTime)
        var answer = Array(buffer: collected)
        // One pass finds the id to replace and the usage counts.
        var usage: (Int?, Int?) = (nil, nil)
        if let found = JSONScanner.valueRanges(of: ["id", "usage"], in: answer) {
            if let counts = found[1] {
                let (input, output) = p == .openAI ? ("prompt_tokens", "completion_tokens") : ("input_tokens", "output_tokens")
                usage = (JSONScanner.integer(at: [input], in: answer, within: counts), JSONScanner.integer(at: [output], in: answer, within: counts))
            }
            if let id = x.recordID, p == .openAI, let range = found[0] { answer = JSONScanner.replacing(range, withString: id, in: answer) }
        } else {
            // Passed on and stored as it came; its id is then the upstream's, not the stored record's.
            logger.warning("an upstream answer is not valid JSON", metadata: ["upstream": "\(upstream.name)", "record": "\(x.recordID ?? "-")"])
        }
        try await storeExchange(x, protocol: p, response: answer, usage: usage, upstreamTime: upstreamTime)
        return Response(status: .ok, headers: headers(x, upstreamTime: upstreamTime, contentType: contentType),
                        body: .init(byteBuffer: ByteBuffer(bytes: answer)))
    }

    /// Forwards each event as soon as it is complete. The assembled answer is stored before the
    /// final event (`[DONE]`, `message_stop`) is forwarded, so a client that saw the end can read
    /// the record; a stream that ends without one is stored at its end. An upstream that breaks
    /// off or stalls mid-answer: what it sent is stored with the error's status, and the client
    /// gets an error event (the API's own shape, which its SDK raises) and a complete response.
    private func streamBody(_ x: Exchange, protocol p: APIProtocol, upstream response: PooledHTTPClient.Response,
                            from upstream: UpstreamConfiguration) -> ResponseBody {
        ResponseBody { writer in
            var splitter = SSEEventSplitter()
            var chat = ChatStreamAssembler()
            var messages = AnthropicStreamAssembler()
            var stored = false
            var forwarded = 0
            // A client that leaves mid-answer ends this early, before the answer is stored (and
            // its tokens counted there): count what was sent.
            defer { if !stored { limiter.used([], orBytes: x.body.count + forwarded, by: x.principal) } }
            let start = ContinuousClock.now
            /// Stores the answer once; the error if it could not be (its events were sent, but
            /// not the end: the client must not take for kept an answer that was not).
            func store(status: Int = 200) async -> GatewayError? {
                guard !stored, chat.chunks > 0 || messages.started else { return nil }
                stored = true
                let answer = p == .openAI ? chat.assembled(id: x.recordID ?? "") : messages.assembled()
                let usage = p == .openAI
                    ? ((chat.usage?["prompt_tokens"] as? Int), (chat.usage?["completion_tokens"] as? Int))
                    : (messages.promptTokens, messages.completionTokens)
                do {
                    try await storeExchange(x, protocol: p, response: answer, usage: usage, upstreamTime: ContinuousClock.now - start,
                                            status: status)
                    return nil
                } catch {
                    let failure = GatewayError.from(error)
                    logger.error("streamed exchange not stored",
                                 metadata: ["record": "\(x.recordID ?? "-")", "error": "\(failure.code)", "reason": "\(failure.message)"])
                    return failure
                }
            }
            /// Ends the answer with an error event in place of its final one.
            struct NotStored: Error {}
            func withhold(_ failure: GatewayError) async throws -> Never {
                let told = GatewayError(failure.status, type: failure.type, code: failure.code, "the answer could not be stored: \(failure.message)")
                try await writer.write(ByteBuffer(bytes: Self.errorEvent(told, protocol: p)))
                throw NotStored()
            }
            func forward(_ event: SSEEvent) async throws {
                var e = event
                if e.data.elementsEqual("[DONE]".utf8) {
                    if let failure = await store() { try await withhold(failure) }
                } else if p == .openAI {
                    if let id = x.recordID { e.data = JSONScanner.replacingString("id", with: id, in: e.data) }
                    chat.add(e.data)
                } else {
                    messages.add(e.data)
                    if e.name == "message_stop", let failure = await store() { try await withhold(failure) }
                }
                let bytes = e.bytes
                forwarded += bytes.count
                try await writer.write(ByteBuffer(bytes: bytes))
            }
            do {
                if let e = try await UpstreamClient.forEachChunk(of: response, from: upstream, { buffer in
                    for event in splitter.feed(buffer.readableBytesView) { try await forward(event) }
                }) {
                    logger.warning("an upstream broke off a streamed answer", metadata: ["upstream": "\(upstream.name)", "error": "\(e.code)"])
                    // After the final event the answer is whole (and stored): nothing more to say.
                    if !stored {
                        _ = await store(status: Int(e.status.code))
                        try await writer.write(ByteBuffer(bytes: Self.errorEvent(e, protocol: p)))
                    }
                    try await writer.finish(nil)
                    return
                }
                if let last = splitter.finish() { try await forward(last) }
                if let failure = await store() { try await withhold(failure) }
            } catch is NotStored {}
            try await writer.finish(nil)
        }
    }

    /// An error as a stream's event: OpenAI's `data: {"error": …}` (which its SDKs raise), or
    /// Anthropic's `event: error`.
    static func errorEvent(_ e: GatewayError, protocol p: APIProtocol) -> [UInt8] {
        let error: [String: Any] = ["message": e.message, "type": e.type, "code": e.code]
        let data = p == .openAI ? ["error": error] : ["type": "error", "error": ["type": e.type, "message": e.message]]
        let json = (try? JSONSerialization.data(withJSONObject: data, options: [.sortedKeys])).map { Array($0) } ?? []
        return Array((p == .openAI ? "data: " : "event: error\ndata: ").utf8) + json + Array("\n\n".utf8)
    }

    /// The built-in echo model, for trying the flow without a provider.
    private func echo(_ x: Exchange, protocol p: APIProtocol) async throws -> Response {
        let text = EchoModel.lastUserText(x.body)
        let id = x.recordID ?? Tokens.identifier(p.idPrefix)
        let tokens = EchoModel.tokens(text)
        if p == .openAI && x.stream {
            let chunks = EchoModel.chunks(id: id, text: text)
            var assembler = ChatStreamAssembler()
            for c in chunks { assembler.add(c) }
            try await storeExchange(x, protocol: p, response: assembler.assembled(id: id), usage: (tokens, tokens), upstreamTime: .zero)
            let events = chunks.map { SSEEvent(data: $0).bytes } + [SSEEvent(data: Array("[DONE]".utf8)).bytes]
            return Response(status: .ok, headers: headers(x, upstreamTime: .zero, contentType: "text/event-stream"),
                            body: .init(contentsOf: events.map { ByteBuffer(bytes: $0) }))
        }
        guard !x.stream else {
            throw GatewayError.invalidRequest("keyward/echo streams only on /v1/chat/completions", code: "unsupported")
        }
        let answer = p == .openAI ? EchoModel.completion(id: id, text: text) : EchoModel.anthropicMessage(id: id, text: text)
        try await storeExchange(x, protocol: p, response: answer, usage: (tokens, tokens), upstreamTime: .zero)
        return Response(status: .ok, headers: headers(x, upstreamTime: .zero, contentType: "application/json"),
                        body: .init(byteBuffer: ByteBuffer(bytes: answer)))
    }

    /// Embeddings are forwarded, not stored; the tenant's key must still be usable.
    func embeddings(_ request: Request, _ context: GatewayContext) async throws -> Response {
        let (principal, tenant) = try context.requireTenant()
        let bodyBuffer = try await request.collectBody(limit: configuration.bodyLimit)
        let body = Array(buffer: bodyBuffer)
        let head = try RequestHead.parse(body)
        try await policies.authorize(principal, tenant: tenant, purpose: .inference, model: head.model)
        let scope = principal.scope(.inference)
        _ = try await AuditScope.$current.withValue(scope) { try await vault.sealer(for: tenant, plaintextLength: 0) }
        if head.model == EchoModel.name {
            let input = (try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any])?["input"]
            return JSONBody.bytes(EchoModel.embedding(input: input))
        }
        guard let upstream = configuration.upstream(for: head.model), upstream.kind == .openAICompatible else {
            throw GatewayError(.notFound, type: "invalid_request_error", code: "model_not_found", "no upstream serves model \(head.model)")
        }
        let key = try await providerKeys.key(for: tenant, upstream: upstream, scope: scope)
        let start = ContinuousClock.now
        let response = try await upstreams.send(upstream, path: "/embeddings", body: bodyBuffer, apiKey: key)
        let answer = try await UpstreamClient.collect(response, upTo: 256 << 20, from: upstream)
        metrics.upstream(upstream.name, status: Int(response.status.code), duration: ContinuousClock.now - start)
        limiter.used([JSONScanner.integer(at: ["usage", "total_tokens"], in: Array(buffer: answer))], orBytes: body.count, by: principal)
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: answer))
    }

    /// The models of every OpenAI-compatible upstream that answers, the names configured for
    /// routing, and the echo model.
    func models() async -> Response {
        var seen = Set<String>()
        var data: [[String: Any]] = []
        func add(_ id: String, _ owner: String) {
            guard seen.insert(id).inserted else { return }
            data.append(["id": id, "object": "model", "created": 0, "owned_by": owner])
        }
        add(EchoModel.name, "keyward")
        for upstream in configuration.upstreams {
            for model in upstream.models where !model.hasSuffix("*") { add(model, upstream.name) }
            guard upstream.kind == .openAICompatible else { continue }
            var u = upstream
            u.timeoutSeconds = 5
            guard let response = try? await upstreams.send(u, path: "/models", body: nil, apiKey: u.apiKey),
                  let bytes = try? await response.body.collect(upTo: 8 << 20),
                  let object = try? JSONSerialization.jsonObject(with: Data(buffer: bytes)) as? [String: Any] else { continue }
            for m in object["data"] as? [[String: Any]] ?? [] {
                if let id = m["id"] as? String, upstream.serves(id) { add(id, (m["owned_by"] as? String) ?? upstream.name) }
            }
        }
        return JSONBody.response(["object": "list", "data": data])
    }
}
