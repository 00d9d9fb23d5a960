import Foundation
import KeywardStorage
@testable import KeywardPostgres
import PostgresNIO
import Testing

/// How the PostgreSQL store behaves when the server ends sessions while it keeps serving: a
/// replica must not refuse requests because one of its connections was closed under it.
@Suite("PostgreSQL store availability")
struct PostgresAvailabilityTests {
    /// Every session of the store's database ended at once (as `pg_terminate_backend`, an idle
    /// timeout or a proxy does), the server itself still up: calls made over the following 3 s
    /// all succeed. The health monitor's own session is among those ended: its probe on it hangs
    /// until the 2 s deadline, and a monitor that took that for a dead server refused every call
    /// for the next half second (as a replica did in CI just after PostgreSQL came back).
    @Test func sessionsEndedByTheServerDoNotMakeTheStoreRefuseCalls() async throws {
        let running = try await TestDatabase.fresh()
        defer { running.shutdown() }
        let store = running.store
        try await store.migrate()
        try await store.createTenant(Tenant(name: "a", key: "local:a", createdAt: 1))

        let runningAdmin = RunningStore(try PostgresRecordStore(url: try TestDatabase.serverURL(), maxConnections: 1))
        defer { runningAdmin.shutdown() }
        let admin = runningAdmin.store
        func sessions(_ what: String) async throws -> Int64 {
            try await admin.query(SQLStatement("SELECT \(what) FROM pg_stat_activity WHERE datname = ?", [.text(store.url.database)])) {
                try $0.int(0)
            }[0]
        }
        // The pool's session and the monitor's (which connects on its own schedule).
        for _ in 0..<100 {
            if try await sessions("count(*)") >= 2 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        let ended = try await sessions("count(pg_terminate_backend(pid))")
        #expect(ended >= 2, "the pool's session and the monitor's")

        // The pool learns of its closed sessions from the server's goodbye; give it a moment.
        try await Task.sleep(for: .milliseconds(100))
        var failures: [String] = []
        let start = ContinuousClock.now
        while ContinuousClock.now - start < .seconds(3) {
            do {
                #expect(try await store.tenant(named: "a")?.key == "local:a")
            } catch {
                failures.append("\(ContinuousClock.now - start): \(error)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        let failed = failures.count
        #expect(failed == 0, "the first: \(failures.first ?? "")")
    }
}
