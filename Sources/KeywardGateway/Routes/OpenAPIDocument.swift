import Foundation

/// The OpenAPI 3.1 description of the admin API, served at `/admin/v1/openapi.json`. Built from
/// one table of operations, which a test compares with the router.
enum OpenAPIDocument {
    struct Operation {
        var method: String
        var path: String
        var role: String
        var summary: String
        /// Required JSON body fields and their JSON types.
        var body: [String: String] = [:]
        var optional: [String: String] = [:]
        var query: [String] = []
        var success = "200"
    }

    static let operations: [Operation] = [
        Operation(method: "post", path: "/admin/v1/tenants", role: "admin", summary: "Create a tenant (with a new local key unless one is named)",
                  body: ["name": "string"], optional: ["key": "string", "store": "string", "retention_days": "integer", "encrypted_requests": "string"], success: "201"),
        Operation(method: "get", path: "/admin/v1/tenants", role: "admin", summary: "List tenants"),
        Operation(method: "patch", path: "/admin/v1/tenants/{name}", role: "admin",
                  summary: "Change a tenant's settings (any of store, retention_days, encrypted_requests)",
                  optional: ["store": "string", "retention_days": "integer", "encrypted_requests": "string"]),
        Operation(method: "put", path: "/admin/v1/tenants/{name}/provider-keys/{upstream}", role: "admin",
                  summary: "Store the tenant's own provider API key, encrypted under its key", body: ["api_key": "string"], success: "204"),
        Operation(method: "post", path: "/admin/v1/tenants/{name}/purge-shredded", role: "admin",
                  summary: "Delete the records of a tenant whose key was destroyed"),
        Operation(method: "post", path: "/admin/v1/tenants/{name}/rekey", role: "key-admin",
                  summary: "Move the tenant to another master key; starts a re-wrap job", body: ["key": "string"], success: "202"),
        Operation(method: "post", path: "/admin/v1/tokens", role: "admin", summary: "Issue a token (shown once)",
                  optional: ["tenant": "string", "role": "string"], success: "201"),
        Operation(method: "delete", path: "/admin/v1/tokens/{id}", role: "admin", summary: "Delete a token"),
        Operation(method: "post", path: "/admin/v1/tokens/{id}/suspend", role: "admin", summary: "Suspend a token"),
        Operation(method: "post", path: "/admin/v1/tokens/{id}/resume", role: "admin", summary: "Lift a token's suspension"),
        Operation(method: "get", path: "/admin/v1/keys/{ref}", role: "key-admin", summary: "Describe a master key and the tenants using it"),
        Operation(method: "get", path: "/admin/v1/keys/{ref}/policy", role: "admin", summary: "Read a key's access policy"),
        Operation(method: "put", path: "/admin/v1/keys/{ref}/policy", role: "admin", summary: "Replace a key's access policy",
                  body: ["grants": "array"]),
        Operation(method: "post", path: "/admin/v1/keys/{ref}/disable", role: "key-admin", summary: "Revoke: the key's data becomes unreadable at once"),
        Operation(method: "post", path: "/admin/v1/keys/{ref}/enable", role: "key-admin", summary: "Restore a disabled key"),
        Operation(method: "post", path: "/admin/v1/keys/{ref}/rotate", role: "key-admin", summary: "Make a new key version; new data keys use it"),
        Operation(method: "post", path: "/admin/v1/keys/{ref}/schedule-deletion", role: "key-admin",
                  summary: "Destroy the key after 7 to 30 days", body: ["days": "integer"]),
        Operation(method: "post", path: "/admin/v1/keys/{ref}/cancel-deletion", role: "key-admin", summary: "Cancel a scheduled deletion (the key comes back disabled)"),
        Operation(method: "get", path: "/admin/v1/jobs/{id}", role: "key-admin", summary: "A job's status, counts and rate"),
        Operation(method: "get", path: "/admin/v1/audit", role: "auditor", summary: "Read the audit log in chain order",
                  query: ["since", "after", "tenant", "key", "operation", "limit"]),
    ]

    static let json: String = {
        var paths: [String: [String: Any]] = [:]
        for op in operations {
            var parameters: [[String: Any]] = []
            for name in op.path.split(separator: "/").filter({ $0.hasPrefix("{") }).map({ String($0.dropFirst().dropLast()) }) {
                parameters.append(["name": name, "in": "path", "required": true, "schema": ["type": "string"],
                                   "description": name == "ref" ? "a percent-encoded key reference: local:NAME, aws-kms:ARN, pkcs11:…" : name])
            }
            for name in op.query {
                parameters.append(["name": name, "in": "query", "required": false,
                                   "schema": ["type": ["tenant", "key", "operation"].contains(name) ? "string" : "number"]])
            }
            var operation: [String: Any] = [
                "summary": op.summary,
                "description": "Requires a token with role \(op.role).",
                "operationId": op.method + op.path.replacingOccurrences(of: "/admin/v1", with: "")
                    .split(whereSeparator: { "/{}-".contains($0) }).map { $0.prefix(1).uppercased() + $0.dropFirst() }.joined(),
                "tags": [op.role],
                "security": [["bearer": [] as [String]]],
                "responses": [
                    op.success: ["description": "success"],
                    "401": ["$ref": "#/components/responses/Error"],
                    "403": ["$ref": "#/components/responses/Error"],
                ] as [String: Any],
            ]
            if !parameters.isEmpty { operation["parameters"] = parameters }
            if !op.body.isEmpty || !op.optional.isEmpty {
                var properties: [String: Any] = [:]
                for (k, t) in op.body.merging(op.optional, uniquingKeysWith: { a, _ in a }) { properties[k] = ["type": t] }
                var schema: [String: Any] = ["type": "object", "properties": properties]
                if !op.body.isEmpty { schema["required"] = op.body.keys.sorted() }
                operation["requestBody"] = ["required": true, "content": ["application/json": ["schema": schema]]]
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
