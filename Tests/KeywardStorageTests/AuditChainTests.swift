import KeywardAudit
import KeywardStorageTesting
import Testing

@Suite("Audit chain, key life-cycle storage (conformance)")
struct AuditChainTests {
    /// The engine-independent suite (KeywardStorageTesting), each of its cases on SQLite.
    @Test(arguments: AuditChainConformance.cases)
    func onSQLite(_ test: StoreConformanceCase) async throws {
        try await test.run(on: SQLiteEngine())
    }

    @Test func everyFieldIsCoveredByTheHash() {
        var base = event(1)
        base.seq = 7
        let h = base.chainHash(after: AuditEvent.genesis)
        let edits: [(inout AuditEvent) -> Void] = [
            { $0.seq = 8 }, { $0.time += 1 }, { $0.actor = "tok_b" }, { $0.tenant = nil }, { $0.key = "local:x" },
            { $0.operation = .unwrap }, { $0.purpose = "export" }, { $0.requestID = nil }, { $0.record = "r2" },
            { $0.result = .denied }, { $0.detail = "" },
            // Moving bytes between adjacent fields changes the encoding too.
            { $0.tenant = "acm"; $0.key = "elocal:acme" },
        ]
        for edit in edits {
            var e = base
            edit(&e)
            #expect(e.chainHash(after: AuditEvent.genesis) != h)
        }
        #expect(base.chainHash(after: [UInt8](repeating: 1, count: 32)) != h)
    }
}
