import KeywardAudit
import KeywardStorage
import Testing

/// An engine the conformance suites run on. Each engine's test target supplies its own (SQLite's
/// in KeywardStorageTests, PostgreSQL's in KeywardPostgresTests), so that only the PostgreSQL
/// target depends on a PostgreSQL client while both run the one suite.
public protocol StoreEngine: Sendable {
    /// A store on a new, empty database, not yet migrated, and what keeps it alive.
    func open() async throws -> (any RecordStore, AnyObject)
    /// A second store on `store`'s database, as a second process or replica would open it, and what keeps it running.
    func reopen(_ store: any RecordStore) throws -> (any RecordStore, AnyObject?)
}

extension StoreEngine {
    /// A fresh, migrated store and what keeps it alive.
    public func make() async throws -> (any RecordStore, AnyObject) {
        let (store, keep) = try await open()
        try await store.migrate()
        try await store.migrate()  // idempotent
        return (store, keep)
    }
}

/// One case of a conformance suite: a body that takes the engine to run on. Each engine's test
/// target runs a suite's cases as the arguments of a parameterized test of its own (a test declared
/// in this module would belong to no test target and run once, on no engine in particular).
/// Identified by its name, so that Swift Testing tells the cases apart from one run to the next.
public struct StoreConformanceCase: Sendable, Identifiable, CustomTestStringConvertible {
    public let name: String
    public var id: String { name }
    private let body: @Sendable (any StoreEngine) async throws -> Void

    init(_ name: String, _ body: @escaping @Sendable (any StoreEngine) async throws -> Void) {
        self.name = name
        self.body = body
    }

    public var testDescription: String { name }

    public func run(on engine: any StoreEngine) async throws { try await body(engine) }
}

/// A record of `tenant` whose header and body name it, with metadata of a chat response.
public func record(_ tenant: String, _ id: String, _ kind: String = "chat.response", at time: Int64,
                   expires: Int64? = nil, model: String = "m") -> Record {
    Record(tenant: tenant, id: id, kind: kind, createdAt: time, expiresAt: expires,
           metadata: RecordMetadata(model: model, status: 200, promptTokens: 3, completionTokens: 5, upstreamMs: 1.5, size: 10),
           header: Array("header-\(id)-\(kind)".utf8), body: Array("body-\(id)".utf8))
}

/// The `i`th of a run of audit events of tenant "acme"; every other one has a detail.
public func event(_ i: Int, actor: String = "tok_a") -> AuditEvent {
    AuditEvent(time: Int64(1_000 + i), actor: actor, tenant: "acme", key: "local:acme", operation: .decryptRecord,
               purpose: "retrieval", requestID: "req\(i)", record: "r\(i)", detail: i % 2 == 0 ? nil : "d\(i)")
}
