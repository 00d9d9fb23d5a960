import Foundation
import KeywardStorage
import KeywardStorageTesting
@testable import KeywardPostgres
import KeywardTesting
import PostgresNIO

/// PostgreSQL, the engine this target runs the conformance suites on (KeywardStorageTests runs
/// them on SQLite). It needs a server: `scripts/postgres-up` starts a throw-away one on loopback
/// and prints the `KEYWARD_TEST_DATABASE_URL` to export (the README test command does both); any
/// server a test may create databases on will do. Without it these tests fail, saying so, rather
/// than pass unseen.
struct PostgresEngine: StoreEngine {
    func open() async throws -> (any RecordStore, AnyObject) {
        let running = try await TestDatabase.fresh()
        return (running.store, running)
    }

    func reopen(_ store: any RecordStore) throws -> (any RecordStore, AnyObject?) {
        let running = RunningStore(try PostgresRecordStore(url: (store as! PostgresRecordStore).url))
        return (running.store, running)
    }
}

/// A PostgreSQL store running until ``shutdown()`` or until this is released.
final class RunningStore: Sendable {
    let store: PostgresRecordStore
    private let running: RunningServices

    init(_ store: PostgresRecordStore) {
        self.store = store
        running = RunningServices([store])
    }

    func shutdown() { running.stop() }
}

/// A new, empty database (`keyward_test_…`) on the test server for each case.
enum TestDatabase {
    struct NotConfigured: Error, CustomStringConvertible {
        var description: String { "KEYWARD_TEST_DATABASE_URL is not set: run scripts/postgres-up and export what it prints" }
    }

    static func serverURL() throws -> PostgresURL {
        guard let url = ProcessInfo.processInfo.environment["KEYWARD_TEST_DATABASE_URL"], !url.isEmpty else { throw NotConfigured() }
        return try PostgresURL(url)
    }

    /// A store on a new database: see ``create()``.
    static func fresh() async throws -> RunningStore {
        RunningStore(try PostgresRecordStore(url: try await create()))
    }

    /// The address of a new database, named `keyward_test_<unix time>_<random>`: databases of runs
    /// more than an hour old are dropped on the way (a test cannot drop its own while its store is
    /// still connected).
    static func create() async throws -> PostgresURL {
        let server = try serverURL()
        let now = Int(Date().timeIntervalSince1970)
        let name = "keyward_test_\(now)_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(8).lowercased()
        let running = RunningStore(try PostgresRecordStore(url: server, maxConnections: 1))
        defer { running.shutdown() }
        let admin = running.store
        for old in try await admin.query("SELECT datname FROM pg_database WHERE datname LIKE 'keyward_test_%'", { try $0.text(0) }) {
            guard let stamp = Int(old.split(separator: "_").dropFirst(2).first ?? ""), stamp < now - 3600 else { continue }
            _ = try? await admin.rows(PostgresQuery(unsafeSQL: "DROP DATABASE IF EXISTS \(old) WITH (FORCE)"))
        }
        // A fixture, not a call under test: copying the template database can take seconds while
        // every suite runs at once, past the 5 s that calls get by default.
        _ = try await admin.rows(PostgresQuery(unsafeSQL: "CREATE DATABASE \(name)"), limit: .seconds(60))
        return server.with(database: name)
    }
}
