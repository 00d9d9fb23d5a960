import Foundation
import KeywardKeyStores
import KeywardStorage
import NIOCore
import PostgresNIO

/// The local key store's keys in the shared database, so every replica serves the same `local:`
/// keys: each key's document (its material sealed under the root key every replica is given) in
/// `local_keys`, with a revision that moves on every change; the store's header in `settings`.
public struct PostgresKeyBackend: LocalKeyBackend {
    let store: PostgresRecordStore
    static let headerName = "local-keystore-header"

    public init(store: PostgresRecordStore) { self.store = store }

    /// Database failures as key-store failures: unreachable means the key is unavailable.
    private func run<T>(_ body: () async throws -> T) async throws -> T {
        do { return try await body() } catch let e as StorageError {
            switch e.code {
            case .alreadyExists: throw KeyStoreError(.alreadyExists, e.reason)
            case .notFound: throw KeyStoreError(.keyNotFound, e.reason)
            default: throw KeyStoreError(.keyUnavailable, "the key database: \(e.reason)")
            }
        }
    }

    public func header() async throws -> Data? {
        try await run { try await store.setting(Self.headerName).map { Data($0) } }
    }

    public func createHeader(_ data: Data) async throws -> Data {
        try await run { Data(try await store.setSettingIfAbsent(Self.headerName, Array(data))) }
    }

    public func stamp(_ name: String) async throws -> String? {
        try await run {
            try await store.query(SQLStatement("SELECT revision FROM local_keys WHERE name = ?", [.text(name)])) { String(try $0.int(0)) }.first
        }
    }

    public func read(_ name: String) async throws -> (document: Data, stamp: String)? {
        try await run {
            try await store.query(SQLStatement("SELECT document, revision FROM local_keys WHERE name = ?", [.text(name)])) {
                (Data(try $0.bytes(0)), String(try $0.int(1)))
            }.first
        }
    }

    public func create(_ name: String, _ document: Data) async throws {
        do {
            _ = try await run {
                try await store.execute(SQLStatement("INSERT INTO local_keys(name, document, revision) VALUES (?, ?, 1)",
                                                     [.text(name), .bytes(Array(document))]))
            }
        } catch let e as KeyStoreError where e.code == .alreadyExists {
            throw KeyStoreError(.alreadyExists, "local key \(name) already exists")
        }
    }

    /// Reads, changes and writes a key's document holding its row, so that two replicas'
    /// changes apply one after the other.
    public func update(_ name: String, _ change: @escaping @Sendable (Data) throws -> Data) async throws {
        let logger = store.logger
        try await run {
            try await store.transaction { c in
                let found = try await PostgresRecordStore.rows(
                    PostgresRecordStore.postgresQuery(SQLStatement("SELECT document FROM local_keys WHERE name = ? FOR UPDATE", [.text(name)])),
                    on: c, logger: logger)
                guard let row = found.first.map(PostgresRow.init) else { throw KeyStoreError(.keyNotFound, "no local key \(name)") }
                let updated = try change(Data(try row.bytes(0)))
                try await PostgresRecordStore.rows(
                    PostgresRecordStore.postgresQuery(SQLStatement("UPDATE local_keys SET document = ?, revision = revision + 1 WHERE name = ?",
                                                           [.bytes(Array(updated)), .text(name)])),
                    on: c, logger: logger)
            }
        }
    }

    public func names() async throws -> [String] {
        try await run { try await store.query(SQLStatement("SELECT name FROM local_keys ORDER BY name")) { try $0.text(0) } }
    }
}
