import KeywardGateway
import KeywardKeyStores
import KeywardPostgres
import KeywardS3
import KeywardStorage
import Logging
import NIOPosix

extension GatewayStorage {
    /// The storage a configuration names: the PostgreSQL database every replica shares when it
    /// has a database address, else SQLite in the data folder (created if needed).
    public static func open(for configuration: GatewayConfiguration, logger: Logger) throws -> GatewayStorage {
        var storage: GatewayStorage
        if let url = configuration.databaseURL {
            storage = try postgres(url: try PostgresURL(url.exposed()), logger: logger)
        } else {
            try configuration.createDataFolder()
            storage = try sqlite(path: configuration.dataFolder + "/keyward.sqlite3")
        }
        storage.blobs = try blobs(configuration.blobs)
        return storage
    }

    /// The blob store a configuration names; nil: the gateway's folder in the data folder.
    static func blobs(_ configuration: BlobsConfiguration) throws -> (any BlobStore)? {
        switch configuration {
        case .folder:
            return nil
        case let .s3(bucket, prefix, region, endpoint):
            return try S3BlobStore(configuration: .init(bucket: bucket, prefix: prefix, region: region, endpoint: endpoint),
                                   credentials: try AWSCredentials.fromEnvironment())
        }
    }

    /// One process's SQLite database; `local:` keys and the audit key stay in the data folder.
    public static func sqlite(path: String) throws -> GatewayStorage {
        let store = try SQLiteRecordStore(path: path, callerHome: {
            // A waiting request resumes on its own event loop, where its connection lives.
            guard let loop = MultiThreadedEventLoopGroup.currentEventLoop else { return nil }
            return { work in if loop.inEventLoop { work() } else { loop.execute(work) } }
        })
        var storage = GatewayStorage(records: store, description: path)
        storage.memoryInUse = { SQLiteRecordStore.memoryInUse }
        return storage
    }

    /// A PostgreSQL database shared by every replica: records, change notifications, settings and
    /// the `local:` keys (sealed under the root key every replica is given).
    public static func postgres(url: PostgresURL, logger: Logger) throws -> GatewayStorage {
        let store = try PostgresRecordStore(url: url, logger: logger)
        return GatewayStorage(records: store, changes: PostgresChangeFeed(store: store, logger: logger), settings: store,
                              localKeys: PostgresKeyBackend(store: store), description: "\(url)", services: [store])
    }
}

extension Gateway {
    /// A gateway on the storage its configuration names (see ``GatewayStorage/open(for:logger:)``).
    ///
    /// - Parameter keyStores: the key stores to use instead of those the environment names (tests).
    public convenience init(configuration: GatewayConfiguration, logger: Logger, keyStores: KeyStores? = nil) throws {
        try self.init(configuration: configuration, storage: try .open(for: configuration, logger: logger), logger: logger,
                      keyStores: keyStores)
    }
}
