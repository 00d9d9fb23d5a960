import Foundation
import KeywardBlockingIO
import KeywardCrypto

/// Where the local key store keeps its key documents (material sealed under the root key) and
/// its header: a folder on one machine, or a database every replica shares.
public protocol LocalKeyBackend: Sendable {
    /// The store's header, or nil for a new store.
    func header() async throws -> Data?
    /// Saves `data` as the header unless one exists; returns the header stored now.
    func createHeader(_ data: Data) async throws -> Data
    /// A value that changes whenever the key's document changes; nil if there is no such key.
    func stamp(_ name: String) async throws -> String?
    /// The key's document and its stamp, or nil.
    func read(_ name: String) async throws -> (document: Data, stamp: String)?
    /// - Throws: `KeyStoreError.alreadyExists` if the name is taken.
    func create(_ name: String, _ document: Data) async throws
    /// Reads, changes and writes a key's document under a lock that excludes every other writer,
    /// in this process or another, so none loses another's change.
    func update(_ name: String, _ change: @escaping @Sendable (Data) throws -> Data) async throws
    /// Every key's name, sorted.
    func names() async throws -> [String]
}

/// Keys as files in a folder (`keys/NAME.json`, header `keystore.json`), written atomically
/// under a file lock, so several processes on one machine can share them.
public final class FileKeyBackend: LocalKeyBackend {
    public let folder: String
    private let lock: FileLock

    public init(folder: String) throws {
        self.folder = folder
        try FileSystem.makeFolder(folder)
        try FileSystem.makeFolder("\(folder)/keys")
        lock = try FileLock(path: "\(folder)/.lock")
    }

    private func path(_ name: String) -> String { "\(folder)/keys/\(name).json" }
    private var headerPath: String { "\(folder)/keystore.json" }

    /// Opens the root key under the lock, creating the header of a new store.
    func openRootKey(_ source: RootKeySource) throws -> SecretBytes {
        try lock.withLock {
            let (key, newHeader) = try RootKey.open(header: FileManager.default.contents(atPath: headerPath), source: source)
            if let newHeader { try FileSystem.writeAtomically(newHeader, to: headerPath) }
            return key
        }
    }

    public func header() async throws -> Data? { FileManager.default.contents(atPath: headerPath) }

    public func createHeader(_ data: Data) async throws -> Data {
        try await locked {
            if let existing = FileManager.default.contents(atPath: self.headerPath) { return existing }
            try FileSystem.writeAtomically(data, to: self.headerPath)
            return data
        }
    }

    /// Runs `body` under the lock on one of ``writers``' threads: the lock may wait for another
    /// process (a `keyward keys` command), and a write syncs the file and its folder; the caller's
    /// thread is an event loop in `keyward serve`, serving other connections meanwhile.
    private func locked<R: Sendable>(_ body: @escaping @Sendable () throws -> R) async throws -> R {
        try await Self.writers.run { try self.lock.withLock(body) }
    }

    /// Writers take the lock one at a time anyway: two threads of their own, so that writers
    /// waiting for another process's lock never hold the threads blob commits and syncs use.
    private static let writers = BlockingIO(label: "keyward-keys", threads: 2)

    public func stamp(_ name: String) async throws -> String? {
        FileSystem.stamp(path(name)).map { "\($0.device):\($0.inode):\($0.size):\($0.seconds).\($0.nanoseconds)" }
    }

    public func read(_ name: String) async throws -> (document: Data, stamp: String)? {
        // The stamp first: a change between the two reads makes the next call read again.
        guard let stamp = try await stamp(name), let data = FileManager.default.contents(atPath: path(name)) else { return nil }
        return (data, stamp)
    }

    public func create(_ name: String, _ document: Data) async throws {
        let path = path(name)
        try await locked {
            guard FileSystem.stamp(path) == nil else {
                throw KeyStoreError(.alreadyExists, "local key \(name) already exists")
            }
            try FileSystem.writeAtomically(document, to: path)
        }
    }

    public func update(_ name: String, _ change: @escaping @Sendable (Data) throws -> Data) async throws {
        let path = path(name)
        try await locked {
            self.removeLeftovers(name)
            guard let data = FileManager.default.contents(atPath: path) else {
                throw KeyStoreError(.keyNotFound, "no local key \(name)")
            }
            try FileSystem.writeAtomically(try change(data), to: path)
        }
    }

    public func names() async throws -> [String] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "\(folder)/keys")) ?? []
        return entries.filter { $0.hasSuffix(".json") && !$0.hasPrefix(".") }.map { String($0.dropLast(5)) }.sorted()
    }

    /// Temporary files of writers that died before their rename; only called under the lock, when
    /// no writer can be midway.
    private func removeLeftovers(_ name: String) {
        let prefix = ".\(name).json.tmp-"
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "\(folder)/keys")) ?? [] where entry.hasPrefix(prefix) {
            try? FileManager.default.removeItem(atPath: "\(folder)/keys/\(entry)")
        }
    }
}
