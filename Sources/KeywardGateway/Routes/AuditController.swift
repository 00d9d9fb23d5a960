import Foundation
import Hummingbird
import KeywardAudit
import KeywardCrypto
import KeywardStorage

/// `GET /admin/v1/audit`, for auditor tokens: the audit log in chain order, with each event's
/// position and hash, so a reader can follow and check the chain; `POST /admin/v1/audit/verify`:
/// the whole chain and its signed checkpoints checked by the server. Reading it is itself logged.
struct AuditController {
    let store: any RecordStore
    let audit: AuditLog
    /// The audit signing key's public half, which checkpoints must be signed with.
    let publicKey: @Sendable () -> [UInt8]?

    struct VerifiedBody: Encodable {
        let intact: Bool
        let events: Int64?
        let signed_through: Int64?
        /// The first position that does not verify, and why.
        let position: Int64?
        let reason: String?
    }

    /// Routes of a group under `admin/v1` that authenticates auditors.
    func addRoutes(to group: RouterGroup<GatewayContext>) {
        group.get("audit") { request, context -> Response in
            let principal = try context.requirePrincipal()
            let q = request.uri.queryParameters
            // Bounded before any conversion to an integer, which would trap past Int64 (a
            // `since` of 1e308 once stopped the server: found by schemathesis).
            func number(_ name: String, upTo maximum: Double) throws -> Double? {
                guard let text = q.get(name) else { return nil }
                guard let v = Double(text), v >= 0, v <= maximum else {
                    throw GatewayError.invalidRequest("\(name) must be a number from 0 to \(Int64(maximum))", code: "invalid_field")
                }
                return v
            }
            let limit = Int(try number("limit", upTo: 1000) ?? 100)
            guard limit >= 1 else { throw GatewayError.invalidRequest("limit must be 1 to 1000", code: "invalid_field") }
            let query = AuditQuery(afterSeq: Int64(try number("after", upTo: 1e15) ?? 0), since: try number("since", upTo: 1e12).map { Int64($0 * 1000) },
                                   tenant: q.get("tenant"), key: q.get("key"), operation: q.get("operation").map(AuditOperation.init(rawValue:)), limit: limit)
            try await audit.append(AuditLog.event(.auditRead, scope: AuditScope(actor: principal.tokenID)))
            let events = try await store.auditEvents(query)
            return JSONBody.encoded(AuditPageBody(data: events.map(AuditEventBody.init), last_seq: events.last?.seq ?? query.afterSeq,
                                                  head_seq: try await store.auditHead().seq))
        }

        // A POST: it reads the whole log, and is logged itself.
        group.post("audit/verify") { _, context -> Response in
            let principal = try context.requirePrincipal()
            guard let key = publicKey() else { throw GatewayError.internalError }
            try await audit.append(AuditLog.event(.auditRead, detail: "verify", scope: AuditScope(actor: principal.tokenID)))
            do {
                let (events, signed) = try await AuditVerifier.verify(store, trustedKeys: [key])
                return JSONBody.encoded(VerifiedBody(intact: true, events: events, signed_through: signed, position: nil, reason: nil))
            } catch let e as AuditVerifier.Failure {
                return JSONBody.encoded(VerifiedBody(intact: false, events: nil, signed_through: nil, position: e.position, reason: e.reason))
            }
        }
    }
}
