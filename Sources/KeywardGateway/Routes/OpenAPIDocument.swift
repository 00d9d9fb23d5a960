import Foundation
import KeywardStorage

/// The OpenAPI 3.1 description of the admin API, served at `/admin/v1/openapi.json`. Built from
/// one table of operations, which a test compares with the router.
enum OpenAPIDocument {
    /// A JSON Schema, as a value the table can hold.
    indirect enum Schema: Sendable {
        case string(pattern: String? = nil, minLength: Int? = nil)
        case oneOf([String])
        case integer(ClosedRange<Int>)
        case number(ClosedRange<Double>)
        case array(Schema, minItems: Int)
        /// `minProperties`: a partial update must change something; `closed`: no other member.
        case object([String: Schema], required: [String] = [], minProperties: Int? = nil, closed: Bool = false)
        /// Exactly one of these.
        case either([Schema])

        var json: [String: Any] {
            switch self {
            case .string(let pattern, let minLength):
                var s: [String: Any] = ["type": "string"]
                if let pattern { s["pattern"] = pattern }
                if let minLength { s["minLength"] = minLength }
                return s
            case .oneOf(let values): return ["type": "string", "enum": values]
            case .integer(let range): return ["type": "integer", "minimum": range.lowerBound, "maximum": range.upperBound]
            case .number(let range): return ["type": "number", "minimum": range.lowerBound, "maximum": range.upperBound]
            case .array(let items, let minItems): return ["type": "array", "items": items.json, "minItems": minItems]
            case .either(let schemas): return ["oneOf": schemas.map(\.json)]
            case .object(let properties, let required, let minProperties, let closed):
                var s: [String: Any] = ["type": "object", "properties": properties.mapValues(\.json), "additionalProperties": !closed]
                if !required.isEmpty { s["required"] = required.sorted() }
                if let minProperties { s["minProperties"] = minProperties }
                return s
            }
        }

        static let tenantName = Schema.string(pattern: "^[a-z0-9][a-z0-9_-]{0,62}$")
        /// A key reference: a local name or a KMS key ARN in full, the other stores' schemes with
        /// what follows checked by the store itself (a malformed one is 400).
        static let keyReference = Schema.string(pattern: "^(local:[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}"
            + "|aws-kms:arn:aws[a-z-]*:kms:[a-z]{2}(-[a-z]+)+-[0-9]+:[0-9]{12}:(key/[0-9a-f-]{36}|alias/[A-Za-z0-9/_-]{1,250})"
            + "|(pkcs11|vault-transit|kmip):.+)$")
        static let store = Schema.oneOf(Tenant.StorePolicy.allCases.map(\.rawValue))
        static let retention = Schema.integer(0...36500)
        static let encryptedRequests = Schema.oneOf(Tenant.EncryptedRequests.allCases.map(\.rawValue))
        static let rateLimits = Schema.object(["requests_per_minute": .integer(1...Int(RateLimits.maximum)),
                                               "tokens_per_minute": .integer(1...Int(RateLimits.maximum))], closed: true)
    }

    struct Operation: Sendable {
        var method: String
        var path: String
        var role: String
        var summary: String
        var body: Schema?
        var query: [String: Schema] = [:]
        var success = "200"
        /// The error statuses it answers with, beside 401 and 403 (every operation's).
        var errors: [Int] = []

        /// The role of an operation any token may call.
        static let anyRole = "any"
        /// The roles whose tag it has: those that may call it (an app token too, for `any`).
        var tags: [String] { role == Self.anyRole ? TokenRecord.Role.allCases.map(\.rawValue) : [role] }
    }

    /// Statuses any operation may answer with: the audit log or the database unavailable.
    static let unavailable = [503]

    static let operations: [Operation] = [
        Operation(method: "post", path: "/admin/v1/tenants", role: "admin", summary: "Create a tenant (with a new local key unless one is named)",
                  body: .object(["name": .tenantName, "key": .keyReference, "store": .store, "retention_days": .retention,
                                 "encrypted_requests": .encryptedRequests, "rate_limits": .rateLimits], required: ["name"]),
                  success: "201", errors: [400, 404, 409, 413]),
        Operation(method: "get", path: "/admin/v1/tenants", role: "admin", summary: "List tenants"),
        Operation(method: "get", path: "/admin/v1/session", role: Operation.anyRole, summary: "The calling token: its id, role and tenant"),
        Operation(method: "get", path: "/admin/v1/dashboard", role: Operation.anyRole,
                  summary: "The last hour of the server's own counters, per minute (requests, refusals by code, unwraps, data-key cache, key-store calls and latency, alerts)"),
        Operation(method: "get", path: "/admin/v1/tokens", role: "admin", summary: "List tokens (never their values)"),
        Operation(method: "get", path: "/admin/v1/upstreams", role: "admin", summary: "List the configured upstreams (never their API keys)"),
        Operation(method: "get", path: "/admin/v1/keys", role: "key-admin",
                  summary: "List the keys in use (each described by its store, with the tenants on it; a store that does not answer: state unavailable)"),
        Operation(method: "get", path: "/admin/v1/jobs", role: "key-admin", summary: "List re-key jobs, newest first (at most 100)"),
        Operation(method: "post", path: "/admin/v1/audit/verify", role: "auditor",
                  summary: "Verify the whole audit chain and its signed checkpoints; names the first position that does not verify"),
        Operation(method: "patch", path: "/admin/v1/tenants/{name}", role: "admin",
                  summary: "Change a tenant's settings (any of store, retention_days, encrypted_requests, rate_limits)",
                  body: .object(["store": .store, "retention_days": .retention, "encrypted_requests": .encryptedRequests,
                                 "rate_limits": .rateLimits], minProperties: 1, closed: true),
                  errors: [400, 404, 413]),
        Operation(method: "put", path: "/admin/v1/tenants/{name}/provider-keys/{upstream}", role: "admin",
                  summary: "Store the tenant's own provider API key, encrypted under its key",
                  body: .object(["api_key": .string(minLength: 1)], required: ["api_key"]), success: "204", errors: [400, 403, 404, 410, 413]),
        Operation(method: "post", path: "/admin/v1/tenants/{name}/purge-shredded", role: "admin",
                  summary: "Delete the records of a tenant whose key was destroyed", errors: [404, 409]),
        Operation(method: "post", path: "/admin/v1/tenants/{name}/rekey", role: "key-admin",
                  summary: "Move the tenant to another master key; starts a re-wrap job",
                  body: .object(["key": .keyReference], required: ["key"]), success: "202", errors: [400, 404, 409, 410, 413]),
        Operation(method: "post", path: "/admin/v1/tokens", role: "admin", summary: "Issue a token (shown once)",
                  // An app token (the default role) belongs to a tenant; no other does.
                  body: .either([.object(["tenant": .tenantName, "role": .oneOf([TokenRecord.Role.app.rawValue]), "rate_limits": .rateLimits],
                                         required: ["tenant"], closed: true),
                                 .object(["role": .oneOf(TokenRecord.Role.allCases.filter { $0 != .app }.map(\.rawValue))], required: ["role"],
                                         closed: true)]),
                  success: "201", errors: [400, 404, 413]),
        Operation(method: "patch", path: "/admin/v1/tokens/{id}", role: "admin", summary: "Replace an app token's own rate limits",
                  body: .object(["rate_limits": .rateLimits], required: ["rate_limits"], closed: true), errors: [400, 404, 413]),
        Operation(method: "delete", path: "/admin/v1/tokens/{id}", role: "admin", summary: "Delete a token", errors: [404, 409]),
        Operation(method: "post", path: "/admin/v1/tokens/{id}/suspend", role: "admin", summary: "Suspend a token", errors: [404, 409]),
        Operation(method: "post", path: "/admin/v1/tokens/{id}/resume", role: "admin", summary: "Lift a token's suspension", errors: [404, 409]),
        Operation(method: "get", path: "/admin/v1/keys/{ref}", role: "key-admin", summary: "Describe a master key and the tenants using it",
                  errors: [400, 404]),
        Operation(method: "get", path: "/admin/v1/keys/{ref}/policy", role: "admin", summary: "Read a key's access policy", errors: [400, 404]),
        Operation(method: "put", path: "/admin/v1/keys/{ref}/policy", role: "admin", summary: "Replace a key's access policy",
                  body: .object(["grants": .array(.object([
                      "principals": .array(.string(pattern: "^(token:tok_.+|tenant:[a-z0-9][a-z0-9_-]{0,62})$"), minItems: 1),
                      "purposes": .array(.oneOf(Purpose.allCases.map(\.rawValue)), minItems: 1),
                      "models": .array(.string(minLength: 1), minItems: 1),
                  ], required: ["principals", "purposes"]), minItems: 0)], required: ["grants"]),
                  errors: [400, 404, 413]),
        Operation(method: "post", path: "/admin/v1/keys/{ref}/disable", role: "key-admin", summary: "Revoke: the key's data becomes unreadable at once",
                  errors: [400, 404, 409, 410]),
        Operation(method: "post", path: "/admin/v1/keys/{ref}/enable", role: "key-admin", summary: "Restore a disabled key", errors: [400, 404, 409, 410]),
        Operation(method: "post", path: "/admin/v1/keys/{ref}/rotate", role: "key-admin", summary: "Make a new key version; new data keys use it",
                  errors: [400, 404, 409, 410]),
        Operation(method: "post", path: "/admin/v1/keys/{ref}/schedule-deletion", role: "key-admin",
                  summary: "Destroy the key after 7 to 30 days", body: .object(["days": .integer(7...30)], required: ["days"]),
                  errors: [400, 404, 409, 410, 413]),
        Operation(method: "post", path: "/admin/v1/keys/{ref}/cancel-deletion", role: "key-admin", summary: "Cancel a scheduled deletion (the key comes back disabled)",
                  errors: [400, 404, 409, 410]),
        Operation(method: "get", path: "/admin/v1/jobs/{id}", role: "key-admin", summary: "A job's status, counts and rate", errors: [404]),
        Operation(method: "get", path: "/admin/v1/audit", role: "auditor", summary: "Read the audit log in chain order",
                  query: ["since": .number(0...1e12), "after": .integer(0...1_000_000_000_000_000), "tenant": .string(), "key": .string(),
                          "operation": .string(), "limit": .integer(1...1000)], errors: [400]),
    ]

    static let json: String = {
        var paths: [String: [String: Any]] = [:]
        for op in operations {
            var parameters: [[String: Any]] = []
            for name in op.path.split(separator: "/").filter({ $0.hasPrefix("{") }).map({ String($0.dropFirst().dropLast()) }) {
                parameters.append(["name": name, "in": "path", "required": true,
                                   "schema": name == "ref" ? Schema.keyReference.json : name == "name" ? Schema.tenantName.json : ["type": "string"],
                                   "description": name == "ref" ? "a percent-encoded key reference: local:NAME, aws-kms:ARN, pkcs11:…" : name])
            }
            for (name, schema) in op.query.sorted(by: { $0.key < $1.key }) {
                parameters.append(["name": name, "in": "query", "required": false, "schema": schema.json])
            }
            var operation: [String: Any] = [
                "summary": op.summary,
                "description": op.role == Operation.anyRole ? "Requires a token of any role." : "Requires a token with role \(op.role).",
                "operationId": op.method + op.path.replacingOccurrences(of: "/admin/v1", with: "")
                    .split(whereSeparator: { "/{}-".contains($0) }).map { $0.prefix(1).uppercased() + $0.dropFirst() }.joined(),
                "tags": op.tags,
                "security": [["bearer": [] as [String]]],
                "responses": ([op.success: ["description": "success"]] as [String: Any]).merging(
                    Set([401, 403] + op.errors + unavailable).map { (String($0), ["$ref": "#/components/responses/Error"] as Any) },
                    uniquingKeysWith: { a, _ in a }),
            ]
            if !parameters.isEmpty { operation["parameters"] = parameters }
            if let body = op.body {
                operation["requestBody"] = ["required": true, "content": ["application/json": ["schema": body.json]]]
            }
            paths[op.path, default: [:]][op.method] = operation
        }
        let document: [String: Any] = [
            "openapi": "3.1.0",
            "info": ["title": "Keyward admin API", "version": "1"],
            "paths": paths,
            "components": [
                "securitySchemes": ["bearer": ["type": "http", "scheme": "bearer"]],
                "responses": ["Error": [
                    "description": "an error in OpenAI's shape",
                    "content": ["application/json": ["schema": [
                        "type": "object",
                        "properties": ["error": ["type": "object", "properties": [
                            "message": ["type": "string"], "type": ["type": "string"], "code": ["type": "string"],
                        ]]],
                    ]]],
                ]],
            ] as [String: Any],
        ]
        let data = try! JSONSerialization.data(withJSONObject: document, options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }()
}
