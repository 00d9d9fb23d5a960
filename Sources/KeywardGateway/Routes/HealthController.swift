import Hummingbird
import KeywardKeyStores
import KeywardStorage
import NIOCore

/// `/healthz` (the process answers), `/readyz` (storage, audit log, change feed and every key
/// store in use answer), `/metrics` (Prometheus) and the admin API's OpenAPI document: no token.
struct HealthController {
    let store: any RecordStore
    let keyStores: KeyStores
    let audit: AuditLog
    /// Whose flag says whether the change feed listens.
    let vault: Vault
    let hasChangeFeed: Bool
    let metrics: GatewayMetrics

    struct Status: Encodable {
        var status: String
        var checks: [String: String]?
    }

    func addRoutes(to router: Router<GatewayContext>) {
        router.getAndHead("/healthz") { _, _ in JSONBody.encoded(Status(status: "ok")) }
        router.getAndHead("/admin/v1/openapi.json") { _, _ in JSONBody.bytes(Array(OpenAPIDocument.json.utf8)) }
        router.getAndHead("/readyz") { _, _ in await readiness() }
        router.getAndHead("/metrics") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                     body: .init(byteBuffer: ByteBuffer(bytes: metrics.exposition())))
        }
    }

    func readiness() async -> Response {
        var checks: [String: String] = [:]
        checks["audit"] = audit.isAvailable ? "ok" : "unavailable"
        if hasChangeFeed { checks["change_feed"] = vault.cachesTrusted.load(ordering: .relaxed) ? "ok" : "reconnecting" }
        var ready = audit.isAvailable
        do { try await store.ping(); checks["database"] = "ok" } catch {
            checks["database"] = "unavailable"
            return JSONBody.encoded(Status(status: "not_ready", checks: checks), status: .serviceUnavailable)
        }
        // One key per store in use answers for its store.
        var seen = Set<String>()
        for tenant in (try? await store.tenants()) ?? [] {
            guard let reference = KeyReference(parsing: tenant.key), seen.insert(reference.scheme).inserted else { continue }
            do {
                _ = try await keyStores.store(for: reference).describe(keyID: reference.keyID)
                checks["keystore:\(reference.scheme)"] = "ok"
            } catch {
                checks["keystore:\(reference.scheme)"] = "unavailable"
                ready = false
            }
        }
        return JSONBody.encoded(Status(status: ready ? "ready" : "not_ready", checks: checks), status: ready ? .ok : .serviceUnavailable)
    }
}
