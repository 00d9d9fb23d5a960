// swift-tools-version: 6.1
import PackageDescription

let strict: [SwiftSetting] = [.enableUpcomingFeature("ExistentialAny")]

let package = Package(
    name: "keyward",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "keyward", targets: ["keyward"]),
        .library(name: "KeywardCrypto", targets: ["KeywardCrypto"]),
        // For the fuzz targets (Fuzz/), which build against the library as users do.
        .library(name: "KeywardJSON", targets: ["KeywardJSON"]),
        .library(name: "KeywardStorage", targets: ["KeywardStorage"]),
        .library(name: "KeywardKeyStores", targets: ["KeywardKeyStores"]),
        .library(name: "KeywardGateway", targets: ["KeywardGateway"]),
        .library(name: "KeywardTesting", targets: ["KeywardTesting"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/x-sheep/swift-property-based.git", from: "2.0.1"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio-http2.git", from: "1.46.0"),
        .package(url: "https://github.com/apple/swift-distributed-tracing.git", from: "1.7.3"),
        // OTLP over HTTP only: the gRPC exporter's dependencies would double the build.
        .package(url: "https://github.com/swift-otel/swift-otel.git", from: "1.6.0", traits: ["OTLPHTTP"]),
    ],
    targets: [
        // The system libcrypto's EVP interface, reached directly for the AES-GCM hot path and RSA
        // paddings swift-crypto lacks (OAEP-SHA384/512). Only our own shim functions are visible to Swift.
        .target(
            name: "CKeywardOpenSSL",
            linkerSettings: [.linkedLibrary("crypto")]
        ),
        // The error shape every module shares; no dependencies, so that any module can use it.
        .target(name: "KeywardErrors", swiftSettings: strict),
        // Blocking calls (file system, PKCS#11) off the caller's thread; no dependencies either.
        .target(name: "KeywardBlockingIO", swiftSettings: strict),
        .target(
            name: "KeywardCrypto",
            dependencies: [
                "KeywardErrors",
                "CKeywardOpenSSL",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict
        ),
        // Process hardening calls Swift cannot make directly (prctl is variadic).
        .target(name: "CKeywardSystem"),
        // Cryptoki types for the PKCS#11 store; modules are loaded at run time with dlopen.
        .target(name: "CPKCS11"),
        .target(
            name: "KeywardKeyStores",
            dependencies: [
                "KeywardErrors",
                "KeywardBlockingIO",
                "KeywardCrypto",
                "CPKCS11",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            swiftSettings: strict
        ),
        // The system SQLite (Debian's libsqlite3-dev), reached directly: one writer connection with
        // cached statements and group commit is what the gateway's write rate needs.
        .systemLibrary(name: "CSQLite", providers: [.apt(["libsqlite3-dev"])]),
        // The SQLite VFS that writes each commit's log frames with one call instead of two per page.
        .target(name: "CKeywardSQLiteLog", linkerSettings: [.linkedLibrary("sqlite3")]),
        // The audit chain: events with typed operations, chain hashing, checkpoint signing and
        // verification, and the protocol of the stores that keep it.
        .target(
            name: "KeywardAudit",
            dependencies: [
                "KeywardCrypto",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        // The one JSON reader (a strict single-pass scanner that finds a few values) and string quoting.
        .target(name: "KeywardJSON", swiftSettings: strict),
        .target(name: "KeywardStorage", dependencies: ["KeywardErrors", "KeywardBlockingIO", "KeywardAudit", "KeywardJSON", "CSQLite",
                                                    "CKeywardSQLiteLog"],
                swiftSettings: strict),
        // PostgreSQL for several replicas: the record store, the local key store's key material,
        // and change notifications (LISTEN/NOTIFY) that keep every replica's caches honest.
        .target(
            name: "KeywardPostgres",
            dependencies: [
                "KeywardCrypto", "KeywardKeyStores", "KeywardStorage", "KeywardAudit",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        // The upstream HTTP/1.1 client of the gateway's hot path: pooled per event loop, no thread hops.
        .target(
            name: "KeywardHTTP",
            dependencies: [
                "KeywardErrors",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: strict
        ),
        // The web console's files (plain HTML, CSS and ES modules), compiled in as byte arrays: a
        // module of its own, so that editing one rebuilds this table and not the gateway.
        .target(name: "KeywardConsole", resources: [.embedInCode("web")], swiftSettings: strict),
        .target(
            name: "KeywardGateway",
            dependencies: [
                "KeywardErrors", "KeywardCrypto", "KeywardKeyStores", "KeywardAudit", "KeywardStorage", "KeywardHTTP", "KeywardJSON",
                "KeywardConsole",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdHTTP2", package: "hummingbird"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ],
            swiftSettings: strict
        ),
        // File blobs in an S3-compatible object store, signed with the key stores' SigV4.
        .target(
            name: "KeywardS3",
            dependencies: [
                "KeywardCrypto", "KeywardKeyStores", "KeywardStorage",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        // The composition root: which engine, change feed and key backends a configuration names.
        // The executables (and tests) build gateways through it; the gateway itself sees protocols only.
        .target(
            name: "KeywardServer",
            dependencies: [
                "KeywardGateway", "KeywardStorage", "KeywardPostgres", "KeywardKeyStores", "KeywardS3",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "KeywardTesting",
            dependencies: ["KeywardErrors", "KeywardBlockingIO", .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")],
            swiftSettings: strict
        ),
        // The record-store conformance suites, written once for any engine: KeywardStorageTests runs
        // them on SQLite, KeywardPostgresTests on PostgreSQL. Cases only; each test target declares the tests.
        .target(
            name: "KeywardStorageTesting",
            dependencies: [
                "KeywardStorage", "KeywardAudit", "KeywardTesting",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "keyward",
            dependencies: [
                "KeywardErrors",
                "KeywardCrypto",
                "KeywardKeyStores",
                "KeywardAudit",
                "KeywardGateway",
                "KeywardServer",
                "KeywardStorage",
                "KeywardPostgres",
                "CKeywardSystem",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "OTel", package: "swift-otel"),
            ],
            swiftSettings: strict
        ),
        // Micro-benchmarks behind scripts/bench-keystores.
        .executableTarget(
            name: "keyward-bench",
            dependencies: [
                "KeywardKeyStores",
                "KeywardCrypto",
                "KeywardGateway",
                "KeywardServer",
                "KeywardAudit",
                "KeywardStorage",
                "KeywardHTTP",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Hummingbird", package: "hummingbird"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "KeywardCryptoTests",
            dependencies: [
                "KeywardCrypto",
                "KeywardTesting",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "PropertyBased", package: "swift-property-based"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "KeywardStorageTests",
            dependencies: ["KeywardStorage", "KeywardBlockingIO", "KeywardAudit", "KeywardStorageTesting", "KeywardTesting", "CSQLite",
                           "CKeywardSQLiteLog"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "KeywardGatewayTests",
            dependencies: [
                "KeywardGateway", "KeywardServer", "KeywardAudit", "KeywardStorage", "KeywardKeyStores", "KeywardCrypto", "KeywardTesting",
                "KeywardJSON", "KeywardConsole",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "PropertyBased", package: "swift-property-based"),
            ],
            swiftSettings: strict
        ),
        // Every test that needs a PostgreSQL server (KEYWARD_TEST_DATABASE_URL): the conformance
        // suites on PostgreSQL, the schema compared with SQLite's, availability, and replicas' caches.
        .testTarget(
            name: "KeywardPostgresTests",
            dependencies: [
                "KeywardPostgres", "KeywardStorage", "KeywardStorageTesting", "KeywardTesting",
                "KeywardGateway", "KeywardServer", "KeywardKeyStores", "KeywardCrypto",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        // The S3 blob store against a moto server.
        .testTarget(
            name: "KeywardS3Tests",
            dependencies: ["KeywardS3", "KeywardStorage", "KeywardKeyStores", "KeywardBlockingIO", "KeywardTesting"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "KeywardAuditTests",
            dependencies: ["KeywardAudit", "KeywardCrypto"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "KeywardHTTPTests",
            dependencies: [
                "KeywardHTTP", "KeywardBlockingIO", "KeywardTesting",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "KeywardKeyStoresTests",
            dependencies: ["KeywardKeyStores", "KeywardCrypto", "KeywardBlockingIO", "KeywardTesting", .product(name: "PropertyBased", package: "swift-property-based")],
            swiftSettings: strict
        ),
    ]
)
