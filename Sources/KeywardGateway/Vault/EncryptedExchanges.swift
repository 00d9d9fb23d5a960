import Foundation
import HTTPTypes
import Hummingbird
import KeywardCrypto
import KeywardKeyStores
import KeywardStorage

/// Requests an app encrypted itself with the AWS Encryption SDK under its tenant's master key
/// (`Content-Encoding: aws-esdk`), and answers returned the same way.
///
/// A request's message must name the tenant and the purpose `request` in its encryption context;
/// its data key is unwrapped through the tenant's key store with the same caching materials
/// manager as records (cached by encrypted data key and context, dropped on revocation). An
/// answer is one message under the context `keyward:tenant` + `keyward:purpose=response`, the
/// same for every answer of the tenant so that one cached data key serves many, and is bound to
/// its request inside the plaintext: a `keyward_request` field holding the request message's ID.
extension Vault {
    static let requestPurpose = "request"
    static let responsePurpose = "response"

    /// What an encrypted request must say about itself.
    static func requestContext(_ tenant: String) -> EncryptionContext {
        ["keyward:tenant": tenant, "keyward:purpose": requestPurpose]
    }

    static func answerContext(_ tenant: String) -> EncryptionContext {
        ["keyward:tenant": tenant, "keyward:purpose": responsePurpose]
    }

    /// A request of `tenant` opened: its plaintext, its message ID (hex) and the master key that
    /// opened it (the one its answer is sealed under).
    struct OpenedRequest {
        let plaintext: [UInt8]
        let requestID: String
        let key: String
    }

    /// A request of `tenant` being opened as it arrives: its header read and its data key
    /// unwrapped, its frames to come (each handed out once it authenticates).
    struct OpeningRequest {
        let decryption: StreamingDecryption
        let requestID: String
        let key: String
    }

    /// Decrypts a request message of `tenant` held in memory. Nothing is returned unless the whole
    /// message authenticates.
    ///
    /// - Throws: 400 `invalid_encryption_context` before any key-store call when the context does
    ///   not name this tenant and the purpose `request`; 400 `invalid_ciphertext` for a malformed,
    ///   altered, truncated or wrongly keyed message; the key store's refusal (`key_revoked`, …).
    func openRequest(_ message: [UInt8], of tenant: Tenant) async throws -> OpenedRequest {
        var pending: [UInt8]? = message
        let opening = try await openRequest(of: tenant, nonFramedLimit: message.count) {
            defer { pending = nil }
            return pending.map { ByteBuffer(bytes: $0) }
        }
        var plaintext: [UInt8] = []
        while let part = try await opening.next() { plaintext += part.readableBytesView }
        return OpenedRequest(plaintext: plaintext, requestID: opening.requestID, key: opening.key)
    }

    /// Starts opening a request message of `tenant` whose bytes `read` gives as they arrive (nil
    /// at the end): reads its header, checks its context, and unwraps its data key (the tenant's
    /// key, then a re-keying tenant's previous one). A non-framed message is held whole until its
    /// tag verifies, so it may hold at most `nonFramedLimit` bytes.
    ///
    /// - Throws: as ``openRequest(_:of:)``; later faults of the message come from ``OpeningRequest/next()``.
    func openRequest(of tenant: Tenant, nonFramedLimit: Int, reading read: @escaping () async throws -> ByteBuffer?) async throws -> OpeningRequest {
        let decryption = StreamingDecryption(options: DecryptionOptions(maxEncryptedDataKeys: 8, maxNonFramedContentLength: nonFramedLimit),
                                             read: read)
        let request: DecryptionMaterialsRequest
        do { request = try await decryption.header() } catch is KeywardCryptoError { throw Self.invalidCiphertext }
        // Named pairs only: a value that is not the expected one may be anything the client put there.
        for (name, expected) in [("keyward:tenant", tenant.name), ("keyward:purpose", Self.requestPurpose)]
        where request.encryptionContext[name] != expected {
            throw GatewayError.invalidRequest("the request's encryption context must hold \(name) = \(expected)",
                                              code: "invalid_encryption_context")
        }
        func materials(_ key: String) async throws -> DecryptionMaterials {
            let miss = MissFlag()
            defer { metrics.dataKeyCache("request", hit: !miss.value) }
            return try await MissFlag.$current.withValue(miss) { try await manager(forKey: key).decryptionMaterials(for: request) }
        }
        /// No data key of this message opens under `key` (as opposed to a key that is unusable).
        func unopened(_ error: any Error) -> Bool {
            switch error {
            case let e as KeywardCryptoError: e.code == .noDecryptableKey
            // The store refused this message's data key (its failed unwrap is in the audit log), as
            // moto does for an altered KMS ciphertext blob. An unusable key fails every request
            // alike, records included, and its state is reported by /readyz and the key routes.
            case let e as KeyStoreError: e.code == .accessDenied
            default: false
            }
        }
        do {
            var key = tenant.key
            let opened: DecryptionMaterials
            do {
                opened = try await materials(key)
            } catch where unopened(error) {
                // During a re-key, an app may still wrap under the key the tenant is moving from.
                guard let previous = tenant.previousKey, previous != tenant.key else { throw error }
                key = previous
                opened = try await materials(key)
            }
            try decryption.begin(with: opened)
            return OpeningRequest(decryption: decryption, requestID: Hex.encode(decryption.messageID), key: key)
        } catch where error is KeywardCryptoError || unopened(error) {
            throw Self.invalidCiphertext
        }
    }

    static let invalidCiphertext = GatewayError.invalidRequest(
        "the request body is not an ESDK message this tenant's key opens: it is malformed, altered, truncated or wrongly keyed",
        code: "invalid_ciphertext")

    /// The data key that seals the answers of `tenant` under `key` (the tenant's, or the one its
    /// request was opened with during a re-key).
    ///
    /// Each answer (or streamed event) is one more message under it; the cache counts one use per
    /// exchange, since a streamed answer's length is not known when its key is taken. Not
    /// `cached`: a data key of its own, from the key store (a file's content).
    func answerSealer(for tenant: Tenant, key: String, cached: Bool = true) async throws -> AnswerSealer {
        let miss = MissFlag()
        let materials = try await MissFlag.$current.withValue(miss) {
            try await (cached ? manager(forKey: key) : uncachedManager(forKey: key)).encryptionMaterials(for: EncryptionMaterialsRequest(
                encryptionContext: Self.answerContext(tenant.name), suite: Self.suite, plaintextLength: 0))
        }
        metrics.dataKeyCache("response", hit: !miss.value)
        return AnswerSealer(materials: materials)
    }
}

extension Vault.OpeningRequest {
    /// The next authenticated plaintext of the request, or nil at its verified end.
    ///
    /// - Throws: 400 `invalid_ciphertext` for an altered or truncated message.
    func next() async throws -> ByteBuffer? {
        do { return try await decryption.next() } catch is KeywardCryptoError { throw Vault.invalidCiphertext }
    }

    /// The plaintext as a request body, for a route that reads its body as it streams (a file upload).
    var body: RequestBody { RequestBody(asyncSequence: OpenedBody(opening: self)) }

    private struct OpenedBody: AsyncSequence, Sendable {
        typealias Element = ByteBuffer
        let opening: Vault.OpeningRequest
        struct AsyncIterator: AsyncIteratorProtocol {
            let opening: Vault.OpeningRequest
            mutating func next() async throws -> ByteBuffer? { try await opening.next() }
        }
        func makeAsyncIterator() -> AsyncIterator { AsyncIterator(opening: opening) }
    }
}

/// Seals answers (JSON objects) as ESDK messages with one data key, each under its own message ID.
struct AnswerSealer: Sendable {
    let materials: EncryptionMaterials

    /// One message holding `json`; a JSON object gets `"keyward_request": requestID` (and, for an
    /// event of a stream, `"keyward_seq": n`, counting from 0, so that a dropped, repeated or
    /// reordered event shows) as its last members: a client's JSON parser keeps the last of
    /// repeated names, so an upstream cannot supply its own.
    func seal(_ json: [UInt8], requestID: String?, sequence: Int? = nil) throws -> [UInt8] {
        var members: [(String, String)] = []
        if let requestID { members.append(("keyward_request", "\"\(requestID)\"")) }
        if let sequence { members.append(("keyward_seq", String(sequence))) }
        let plaintext = Self.binding(json, members)
        let (header, body) = try plaintext.withUnsafeBytes { try MessageEncryptor.seal($0, materials: materials) }
        return header + body
    }

    static func binding(_ json: [UInt8], to requestID: String) -> [UInt8] {
        binding(json, [("keyward_request", "\"\(requestID)\"")])
    }

    /// `json` with `members` (name, JSON value) appended, if it is an object; else as it is.
    static func binding(_ json: [UInt8], _ members: [(String, String)]) -> [UInt8] {
        let space: Set<UInt8> = [32, 9, 10, 13]
        guard !members.isEmpty, let first = json.firstIndex(where: { !space.contains($0) }), json[first] == UInt8(ascii: "{"),
              let last = json.lastIndex(where: { !space.contains($0) }), json[last] == UInt8(ascii: "}") else { return json }
        let empty = json[(first + 1)..<last].allSatisfy { space.contains($0) }
        let added = members.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",")
        return Array(json[..<last]) + Array("\(empty ? "" : ",")\(added)".utf8) + Array(json[last...])
    }
}

/// Opens encrypted requests before the app routes see them and seals their answers after: the
/// controllers deal in plaintext JSON only. A tenant whose setting is `required` gets no plaintext
/// request with a body through (403 `encryption_required`, before the body is read).
struct EncryptedExchanges: RouterMiddleware {
    typealias Context = GatewayContext
    let vault: Vault
    let policies: KeyPolicies
    let bodyLimit: Int

    static let encoding = "aws-esdk"

    /// Whether an `Accept-Encoding` list accepts `aws-esdk` (a zero weight refuses it).
    static func accepts(_ values: [String]) -> Bool {
        values.flatMap { $0.split(separator: ",") }.contains { item in
            let parts = item.split(separator: ";", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
            guard parts.first == encoding else { return false }
            return !parts.dropFirst().contains { $0.hasPrefix("q=") && (Double($0.dropFirst(2)) ?? 1) == 0 }
        }
    }

    func handle(_ request: Request, context: GatewayContext, next: (Request, GatewayContext) async throws -> Response) async throws -> Response {
        let coding = request.headers[values: .contentEncoding].flatMap { $0.split(separator: ",") }
            .map { $0.trimmingCharacters(in: .whitespaces).lowercased() }.filter { $0 != "identity" }
        let accepts = Self.accepts(request.headers[values: .acceptEncoding])
        let hasBody = ![.get, .head, .delete, .options].contains(request.method)
        guard let tenant = context.principal?.tenant, !coding.isEmpty || accepts || (tenant.encryptedRequests == .required && hasBody) else {
            return try await next(request, context)
        }
        guard coding.isEmpty || coding == [Self.encoding] else {
            throw GatewayError(.unsupportedMediaType, type: "invalid_request_error", code: "unsupported_content_encoding",
                               "a request body is sent as it is or as one ESDK message (Content-Encoding: aws-esdk), not otherwise encoded")
        }
        let encrypted = coding == [Self.encoding]
        if !encrypted, tenant.encryptedRequests == .required, hasBody {
            throw GatewayError(.forbidden, type: "permission_error", code: "encryption_required",
                               "this tenant accepts only requests its apps encrypted (Content-Encoding: aws-esdk)")
        }
        let (principal, _) = try context.requireTenant()
        let scope = principal.scope(.inference)
        var request = request
        var requestID: String?
        var answerKey = tenant.key
        /// A streamed encrypted body, to drain (the ciphertext) if the route fails before its end.
        var rawBody: BodyReader?
        if encrypted {
            // The key policy decides before the key store is asked (the route's own purpose and the
            // model, inside, are checked by the route).
            try await policies.authorizeOpening(principal, tenant: tenant)
            var head = request.head
            head.headerFields[.contentEncoding] = nil
            if Self.streamsBody(request) {
                // A file: opened frame by frame as it arrives, never held whole.
                let inner = BodyReader(request.body)
                rawBody = inner
                let o = try await AuditScope.$current.withValue(scope) {
                    try await vault.openRequest(of: tenant, nonFramedLimit: bodyLimit) { try await inner.next() }
                }
                head.headerFields[.contentLength] = nil
                request = Request(head: head, body: o.body)
                (requestID, answerKey) = (o.requestID, o.key)
            } else {
                // An ESDK message adds a header and 32 bytes per frame (4 KiB frames by default) to the plaintext.
                let message = try await request.collectBody(limit: bodyLimit + bodyLimit / 64 + (64 << 10))
                let o = try await AuditScope.$current.withValue(scope) { try await vault.openRequest(Array(buffer: message), of: tenant) }
                guard o.plaintext.count <= bodyLimit else {
                    throw GatewayError(.contentTooLarge, type: "invalid_request_error", code: "request_too_large",
                                       "the request body is larger than the gateway's limit")
                }
                head.headerFields[.contentLength] = String(o.plaintext.count)
                request = Request(head: head, body: RequestBody(buffer: ByteBuffer(bytes: o.plaintext)))
                (requestID, answerKey) = (o.requestID, o.key)
            }
        }
        // Before the route: no answer key, no upstream call.
        let sealer = try await AuditScope.$current.withValue(scope) { try await vault.answerSealer(for: tenant, key: answerKey) }
        let response: Response
        do {
            response = try await next(request, context)
        } catch where encrypted {
            await rawBody?.drain()
            throw Self.withheld(GatewayError.from(error))
        }
        guard (200..<300).contains(response.status.code), response.status != .noContent else {
            if encrypted { throw Self.withheld(GatewayError(response.status, type: "api_error", code: "http_\(response.status.code)", "")) }
            return response
        }
        return try await seal(response, sealer: sealer, requestID: requestID, fresh: {
            try await AuditScope.$current.withValue(scope) { try await vault.answerSealer(for: tenant, key: answerKey, cached: false) }
        })
    }

    /// Whether a route reads its body as it streams in (a file upload), so that an encrypted body
    /// must be opened the same way instead of whole.
    static func streamsBody(_ request: Request) -> Bool {
        request.method == .post && request.uri.path == "/v1/files"
    }

    /// An error answering an encrypted request, with its status, type and code but without its
    /// message, which may quote the request (a model's name) or the upstream's reply to it.
    static func withheld(_ e: GatewayError) -> GatewayError {
        var withheld = GatewayError(e.status, type: e.type, code: e.code, "the request failed (\(e.code)); details are withheld since the request was encrypted")
        withheld.headers = e.headers  // retry-after and the like say nothing of the request
        return withheld
    }

    /// The answer as one message (JSON, or a file's bytes as they stream), or each event's data as
    /// the base64 of one (an event stream); other bodies (an export's JSON lines) go as they are,
    /// since they are not a request's answer. A file's bytes carry no request binding: there is no
    /// JSON to hold it, and a download is not an encrypted request.
    ///
    /// - Parameter fresh: a sealer with a data key of its own, for a file (the cached key's byte
    ///   count is taken before the answer's size is known).
    private func seal(_ response: Response, sealer: AnswerSealer, requestID: String?,
                      fresh: () async throws -> AnswerSealer) async throws -> Response {
        var response = response
        let type = response.headers[.contentType] ?? ""
        if type.hasPrefix("text/event-stream") {
            let inner = response.body
            response.headers[.keywardEventEncoding] = Self.encoding
            response.body = ResponseBody { writer in
                try await inner.write(SealingEventWriter(inner: writer, sealer: sealer, requestID: requestID))
            }
            return response
        }
        if type.hasPrefix("application/octet-stream") {
            // A file's content: one message, sealed frame by frame as it is sent.
            let inner = response.body
            let sealer = try await fresh()
            response.headers[.contentEncoding] = Self.encoding
            response.headers[.contentLength] = nil
            response.body = ResponseBody { writer in
                try await inner.write(SealingStreamWriter(inner: writer, encryptor: try MessageEncryptor(materials: sealer.materials,
                                                                                                          frameLength: Files.frameLength)))
            }
            return response
        }
        guard type.hasPrefix("application/json") else { return response }
        let collected = CollectingWriter.Box()
        try await response.body.write(CollectingWriter(box: collected))
        let sealed = try sealer.seal(Array(buffer: collected.buffer), requestID: requestID)
        response.headers[.contentEncoding] = Self.encoding
        response.headers[.contentLength] = nil
        response.body = ResponseBody(byteBuffer: ByteBuffer(bytes: sealed))
        return response
    }
}

extension HTTPField.Name {
    /// Set on an event stream whose events' data are ESDK messages (base64).
    static let keywardEventEncoding = Self("keyward-event-encoding")!
}
