import KeywardStorageTesting
import Testing

/// The engine-independent suites (KeywardStorageTesting), each of their cases on PostgreSQL: the
/// same cases KeywardStorageTests runs on SQLite.
@Suite("Conformance on PostgreSQL")
struct PostgresConformanceTests {
    @Test(arguments: RecordStoreConformance.cases)
    func recordStore(_ test: StoreConformanceCase) async throws {
        try await test.run(on: PostgresEngine())
    }

    @Test(arguments: AuditChainConformance.cases)
    func auditChainAndKeyLifeCycleStorage(_ test: StoreConformanceCase) async throws {
        try await test.run(on: PostgresEngine())
    }
}
