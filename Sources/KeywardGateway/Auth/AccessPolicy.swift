import Foundation
import KeywardStorage

/// What a principal may use a master key's data keys for.
public enum Purpose: String, Sendable, Codable, CaseIterable {
    /// Seal a model exchange (and read the tenant's provider keys for it).
    case inference
    /// Read stored records back.
    case retrieval
    /// Read a tenant's stored records out in bulk.
    case export
}

/// The grants of one master key. Deny by default: no grant, no unwrap.
///
/// A principal is `token:ID` (one token) or `tenant:NAME` (every app token of that tenant).
public struct KeyPolicy: Sendable, Codable, Hashable {
    public struct Grant: Sendable, Codable, Hashable {
        public var principals: [String]
        public var purposes: [Purpose]
        /// For inference: model names, a trailing `*` matching a prefix. nil: every model.
        public var models: [String]?

        public init(principals: [String], purposes: [Purpose], models: [String]? = nil) {
            self.principals = principals
            self.purposes = purposes
            self.models = models
        }
    }

    public var grants: [Grant]

    public init(grants: [Grant] = []) { self.grants = grants }

    /// What a new tenant's key grants: its own app tokens may infer and read back, not export.
    static func tenantDefault(_ tenant: String) -> Grant {
        Grant(principals: ["tenant:\(tenant)"], purposes: [.inference, .retrieval])
    }

    /// Whether `principal` may use the key for `purpose` (and, for inference, `model`).
    func allows(tokenID: String, tenant: String?, purpose: Purpose, model: String?, anyModel: Bool = false) -> Bool {
        grants.contains { g in
            g.purposes.contains(purpose)
                && g.principals.contains { p in p == "token:\(tokenID)" || (tenant.map { p == "tenant:\($0)" } ?? false) }
                && (purpose != .inference || g.models == nil || anyModel || model.map { m in
                    g.models!.contains { $0.hasSuffix("*") ? m.hasPrefix($0.dropLast()) : m == $0 }
                } ?? false)
        }
    }

    /// Checks a policy document from the admin API, with a message fit for the client.
    static func parse(_ bytes: [UInt8]) throws -> KeyPolicy {
        let policy = try JSONBody.decode(KeyPolicy.self, from: bytes)
        for g in policy.grants {
            guard !g.principals.isEmpty, !g.purposes.isEmpty else {
                throw GatewayError.invalidRequest("every grant names at least one principal and one purpose", code: "invalid_policy")
            }
            for p in g.principals where !(p.hasPrefix("token:tok_") || p.range(of: #"^tenant:[a-z0-9][a-z0-9_-]{0,62}$"#, options: .regularExpression) != nil) {
                throw GatewayError.invalidRequest("principal '\(p)' is neither token:tok_… nor tenant:NAME", code: "invalid_policy")
            }
            if let models = g.models, models.isEmpty || models.contains(where: \.isEmpty) {
                throw GatewayError.invalidRequest("models, when given, lists non-empty model names or patterns", code: "invalid_policy")
            }
        }
        return policy
    }

    var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: (try? encoder.encode(self)) ?? Data("{\"grants\":[]}".utf8), as: UTF8.self)
    }
}
