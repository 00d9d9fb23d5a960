import Foundation
import Hummingbird
import KeywardAudit
import KeywardKeyStores
import KeywardStorage
import Logging

/// `/admin/v1/keys/{ref}/…`, `/admin/v1/tenants/{name}/rekey` and `/admin/v1/jobs/{id}`, for
/// key-admin tokens: the key life cycle. Each operation is in the audit log with its outcome.
struct KeyLifecycleController {
    let lifecycle: KeyLifecycle
    let bodyLimit: Int
    var store: any RecordStore { lifecycle.store }

    private struct ScheduleDeletion: Decodable { var days: Int }
    private struct Rekey: Decodable { var key: String }

    /// Routes of a group under `admin/v1` that authenticates key admins.
    func addRoutes(to admin: RouterGroup<GatewayContext>) {
        admin.get("keys") { _, _ -> Response in JSONBody.encoded(ListBody(data: try await keys())) }

        admin.get("jobs") { _, _ -> Response in
            var reads: [[Job]] = []
            for status in [Job.Status.running, .failed, .done] { reads.append(try await store.jobs(status: status)) }
            return JSONBody.encoded(ListBody(data: Self.listed(reads).map(JobBody.init)))
        }

        admin.get("keys/:ref") { request, context -> Response in
            let ref = try await context.keyReference(in: store)
            let reference = try KeyReference.parse(ref)
            return JSONBody.encoded(KeyBody(try await lifecycle.describe(reference, ref),
                                            tenants: try await store.tenants(usingKey: ref).map(\.name)))
        }

        for action in ["disable", "enable", "rotate", "schedule-deletion", "cancel-deletion"] {
            admin.post("keys/:ref/\(action)") { request, context -> Response in
                let principal = try context.requirePrincipal()
                let ref = try await context.keyReference(in: store)
                let change: KeyChange = switch action {
                case "disable": .disable
                case "enable": .enable
                case "rotate": .rotate
                case "schedule-deletion":
                    .scheduleDeletion(days: try JSONBody.decode(ScheduleDeletion.self, from: try await request.bodyBytes(limit: bodyLimit)).days)
                default: .cancelDeletion
                }
                return JSONBody.encoded(KeyBody(try await lifecycle.change(change, key: ref, actor: principal.tokenID)))
            }
        }

        admin.post("tenants/:name/rekey") { request, context -> Response in
            let principal = try context.requirePrincipal()
            let name = try context.parameters.require("name")
            let input = try JSONBody.decode(Rekey.self, from: try await request.bodyBytes(limit: bodyLimit))
            let job = try await lifecycle.startRekey(tenant: name, to: input.key, actor: principal.tokenID)
            return JSONBody.encoded(JobStartedBody(job: job.id), status: .accepted)
        }

        admin.get("jobs/:id") { request, context -> Response in
            let id = try context.parameters.require("id")
            guard let job = try await store.job(id: id) else { throw GatewayError.notFound("no job \(id)") }
            return JSONBody.encoded(JobBody(job))
        }
    }

    /// Every key Keyward knows of: the tenants' (current, and previous during a re-key: its tenant
    /// still needs it for the records not yet moved) and those with a state of Keyward's own, each
    /// described by its store (all at once: a store that does not answer costs one time-out, not
    /// one per key), with the tenants on it. A key whose store does not answer is listed as
    /// `unavailable` with the reason, not left out.
    func keys() async throws -> [KeyBody] {
        var spelling: [String: String] = [:]  // canonical → the reference as tenants spell it
        var tenants: [String: [String]] = [:]  // canonical → tenants on it
        func add(_ ref: String, tenant: String?) {
            let canonical = KeyReference(parsing: ref)?.canonical ?? ref
            if spelling[canonical] == nil { spelling[canonical] = ref }
            if let tenant { tenants[canonical, default: []].append(tenant) }
        }
        for t in try await store.tenants() {
            add(t.key, tenant: t.name)
            if let previous = t.previousKey { add(previous, tenant: t.name) }
        }
        for state in try await store.keyStates() { add(state.key, tenant: nil) }
        let keys = spelling.sorted(by: { $0.value < $1.value }).map { (ref: $0.value, tenants: Array(Set(tenants[$0.key] ?? [])).sorted()) }
        return await withTaskGroup(of: (Int, KeyBody).self) { group in
            for (i, key) in keys.enumerated() {
                group.addTask {
                    do {
                        return (i, KeyBody(try await lifecycle.describe(try KeyReference.parse(key.ref), key.ref), tenants: key.tenants))
                    } catch {
                        return (i, KeyBody(unavailable: key.ref, tenants: key.tenants, error: GatewayError.from(error)))
                    }
                }
            }
            var out = [KeyBody?](repeating: nil, count: keys.count)
            for await (i, body) in group { out[i] = body }
            return out.compactMap { $0 }
        }
    }
}

extension KeyLifecycleController {
    /// The jobs of reads made status by status, newest first and no more than a screen's worth
    /// (finished jobs stay in the database). The reads are not one snapshot: a job that ended
    /// between them was read twice (running, then done or failed), and is listed once, as last read.
    static func listed(_ reads: [[Job]]) -> [Job] {
        var jobs: [String: Job] = [:]
        for read in reads { for job in read { jobs[job.id] = job } }
        return Array(jobs.values.sorted { ($0.createdAt, $0.id) > ($1.createdAt, $1.id) }.prefix(100))
    }
}
