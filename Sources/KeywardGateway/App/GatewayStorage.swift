import KeywardKeyStores
import KeywardStorage
import ServiceLifecycle

/// What the gateway keeps its state in, chosen by the composition root (`KeywardServer`): the
/// gateway sees protocols only, never an engine.
public struct GatewayStorage: Sendable {
    /// Tenants, tokens, policies, records, jobs and the audit chain.
    public var records: any RecordStore
    /// Other replicas' changes; nil for an engine that one process owns.
    public var changes: (any ChangeFeed)?
    /// Values every replica shares (the sealed audit signing key); nil: the data folder keeps them as files.
    public var settings: (any SettingsStore)?
    /// Where `local:` keys live when every replica must serve the same ones; nil: the data folder's `keys/`.
    public var localKeys: (any LocalKeyBackend)?
    /// Where file contents are; nil: a folder in the data folder (`blobs/`).
    public var blobs: (any BlobStore)?
    /// Where the records are, for logs (never a password).
    public var description: String
    /// Bytes the engine holds in this process (SQLite: its page cache, up to 16 MiB, and
    /// statements), for `/metrics`; nil for an engine whose memory is its server's.
    public var memoryInUse: (@Sendable () -> Int64)?
    /// What must run while the storage is used (a database's connection pool and health
    /// monitor): first in the service group, so that it starts first and stops last.
    public var services: [any Service]

    public init(records: any RecordStore, changes: (any ChangeFeed)? = nil, settings: (any SettingsStore)? = nil,
                localKeys: (any LocalKeyBackend)? = nil, blobs: (any BlobStore)? = nil, description: String, services: [any Service] = []) {
        self.services = services
        self.blobs = blobs
        self.records = records
        self.changes = changes
        self.settings = settings
        self.localKeys = localKeys
        self.description = description
    }
}
